"""raycl: distributed hyperparameter sweeps for continual learning of language models."""

import os

# huggingface_hub reads these once, at import: set them before anything imports it. raycl runs
# offline unless the user says otherwise (HF_HUB_OFFLINE=0), so a missing model or dataset fails
# in a second with a clear message instead of retrying an unreachable hub for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])

__version__ = "0.1.0"
