"""raycl: distributed hyperparameter sweeps for continual learning of language models.

Its packages are layers, listed here from the bottom up. A module imports from its own package and from
packages listed before it, never from one listed after it (imports inside functions count too), and no
modules or packages import each other in a cycle. tests/unit/test_architecture.py reads this list and
enforces it; bench/ and tests/ stand on top.

    config      the contract layer: typed configs and the records that cross boundaries (pydantic only)
    artifacts   the build cache and hub access (models, tokenizers, datasets by name)
    adapters    the private Ray and Optuna APIs raycl relies on, one module per library
    data        datasets and their formats, stream shapes, tokens and packing, benchmark data files
    world       the offline world: corpus, tokenizer, its text as tokens and as a continual stream
    models      base models by name, the offline ladder and its pretraining, held-out loss
    mitigation  replay, self-generated replay, KL to the base model, EWC
    evaluation  the metric vocabulary, lm-eval benchmarks and the world's probes
    training    the trial loop, update methods, checkpoints, the LR range test
    analysis    pure: results in, frontier, fits, figures and tables out (no MLflow, Optuna, Ray or sweep)
    sweep       Ray Tune orchestration, the Optuna study, MLflow records, the live table
    reporting   a finished sweep's report, scaling-law transfer, checkpoint export
    cli         the `raycl` command
"""

import os

# huggingface_hub reads these once, at import: set them before anything imports it. raycl runs
# offline unless the user says otherwise (HF_HUB_OFFLINE=0), so a missing model or dataset fails
# in a second with a clear message instead of retrying an unreachable hub for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])

__version__ = "0.1.0"
