"""A saved stage checkpoint as a plain Hugging Face directory, and `raycl eval`: its benchmark scores.

Rebuilding the model needs the base model and the trial's update method (a LoRA checkpoint holds the
adapter-wrapped model), so this sits above training, beside the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from raycl.config import TrialConfig
from raycl.config.base import validate
from raycl.config.benchmarks import BenchmarkConfig
from raycl.data.benchmark_files import check_include_path, check_task_file
from raycl.evaluation.harness import prepare_task_dir, run_benchmarks

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


def load_checkpoint_config(checkpoint_dir: Path) -> TrialConfig:
    """The trial config a stage checkpoint was trained under (kept in its `progress.json`)."""
    progress = json.loads((Path(checkpoint_dir) / "progress.json").read_text())
    return TrialConfig.model_validate(progress["config"])


def export_checkpoint(checkpoint_dir: Path, config: TrialConfig, out: Path | None = None) -> Path:
    """Write the checkpoint's model as a plain Hugging Face directory (weights, config, tokenizer)
    that `from_pretrained` and `lm_eval --model hf` read; LoRA adapters are merged. Default `out`:
    `checkpoint_dir/eval/hf`."""
    from safetensors.torch import load_model

    from raycl.models.loading import load_base_model
    from raycl.training.checkpoint import WEIGHTS
    from raycl.training.methods import prepare_method
    from raycl.world.offline import load_world

    checkpoint_dir = Path(checkpoint_dir)
    out = Path(out) if out is not None else checkpoint_dir / "eval" / "hf"
    model, tokenizer = load_base_model(config.model, load_world(config.world))
    if config.method.name == "lora":
        # The checkpoint holds the adapter-wrapped model: rebuild the wrapping to load it, then merge.
        wrapped = cast("PeftModel", prepare_method(model, config.method, config.train).model)
        load_model(wrapped, str(checkpoint_dir / WEIGHTS))
        # peft types the merged base model it returns as a plain `nn.Module`.
        model = cast("PreTrainedModel", wrapped.merge_and_unload())
    else:
        load_model(model, str(checkpoint_dir / WEIGHTS))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def evaluate_checkpoint(
    checkpoint_dir: Path,
    tasks: list[str],
    limit: int | None = None,
    *,
    batch_size: int = 64,
    task_paths: Mapping[str, str | Mapping[str, str]] | None = None,
    include_path: str | None = None,
    include_defaults: bool = False,
    out: Path | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """`raycl eval CHECKPOINT_DIR --tasks ...`: scores of a saved stage checkpoint, as `run_benchmarks`.

    Writes the exported model to `out/hf` and the task directory to `out/tasks` (default `out`:
    `checkpoint_dir/eval`); both can be handed to the `lm_eval` command line as they are.
    A checkpoint is data, so its `progress.json` never turns on running model code: only the
    caller's `trust_remote_code` (the `--trust-remote-code` flag) does.
    """
    from raycl.artifacts import hub
    from raycl.world.offline import load_world

    # Settings first, so that a wrong task name or data file fails before any model loads.
    benchmarks = validate(
        BenchmarkConfig,
        {
            "tasks": tuple(tasks),
            "task_paths": dict(task_paths or {}),
            "include_path": include_path,
            "batch_size": batch_size,
            "include_defaults": include_defaults,
        },
        source="raycl eval",
    )
    for task, spec in benchmarks.task_paths.items():
        check_task_file(task, spec)
    if benchmarks.include_path is not None:
        check_include_path(benchmarks.include_path)
    checkpoint_dir = Path(checkpoint_dir)
    out = Path(out) if out is not None else checkpoint_dir / "eval"
    config = load_checkpoint_config(checkpoint_dir)
    if config.model.trust_remote_code and not trust_remote_code:
        raise ValueError(
            f"{checkpoint_dir / 'progress.json'}: model.trust_remote_code: the checkpoint's model "
            f"{config.model.name!r} runs its own code; pass --trust-remote-code if you trust it"
        )
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"trust_remote_code": trust_remote_code})}
    )
    hf_dir = export_checkpoint(checkpoint_dir, config, out / "hf")
    model = hub.load_model(str(hf_dir), trust_remote_code=trust_remote_code).to(device)
    tokenizer = hub.load_tokenizer(str(hf_dir), trust_remote_code=trust_remote_code)
    task_dir = prepare_task_dir(load_world(config.world), benchmarks, out / "tasks", tokenizer)
    return run_benchmarks(model, tokenizer, benchmarks, task_dir, limit)
