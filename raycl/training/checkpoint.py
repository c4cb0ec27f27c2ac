"""Stage checkpoints: model weights (safetensors), optimizer state, and the trial's progress.

A checkpoint is written to a temporary directory and renamed into place, so a crash mid-write
leaves the previous checkpoint as the latest one. Everything loads safely: safetensors for
weights, `weights_only=True` for the optimizer.

An out folder belongs to one trial config: `trial_config.json` records the config (everything that
changes results) and its hash when the trial first writes there, every checkpoint carries the hash
too, and `check_out_dir` refuses to resume a folder for another config.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from raycl.config import TrialConfig
from raycl.config.base import dotted

if TYPE_CHECKING:
    from raycl.training.methods import Optimizer

WEIGHTS, OPTIMIZER, PROGRESS = "model.safetensors", "optimizer.pt", "progress.json"
CONFIG_RECORD = "trial_config.json"
# Where a trial runs, not what it computes: a sweep resumed on other hardware may change them.
NOT_RESULTS = ("train.device", "train.cpu_threads")


class ForeignOutDir(ValueError):
    """An out folder holding another trial config's checkpoints or result."""


def results_config(config: TrialConfig) -> dict[str, Any]:
    """The trial config as dotted keys, without the keys that do not change results (`NOT_RESULTS`)."""
    return {key: value for key, value in dotted(config.model_dump(mode="json")).items() if key not in NOT_RESULTS}


def config_hash(config: TrialConfig) -> str:
    return hashlib.sha256(json.dumps(results_config(config), sort_keys=True).encode()).hexdigest()[:16]


def first_difference(stored: dict[str, Any], new: dict[str, Any]) -> str | None:
    """`key: stored value there, new value now` for the first dotted key whose values differ (new keys' order first)."""
    for key in [*new, *(key for key in stored if key not in new)]:
        if stored.get(key, "unset") != new.get(key, "unset"):
            return f"{key}: {stored.get(key, 'unset')} there, {new.get(key, 'unset')} now"
    return None


def check_out_dir(out_dir: Path, config: TrialConfig) -> None:
    """Raise `ForeignOutDir` (one line naming the first differing key) when `out_dir` holds the checkpoints or the
    result of another trial config; a folder without either, or of this config, passes."""
    out_dir = Path(out_dir)
    checkpoint, result = latest_checkpoint(out_dir), out_dir / "result.json"
    if checkpoint is None and not result.exists():
        return
    record = out_dir / CONFIG_RECORD
    if record.exists():
        stored = json.loads(record.read_text())
    else:
        # A checkpoint restored from a sweep's storage into an empty folder, or a folder written before the record.
        source = json.loads((checkpoint / PROGRESS if checkpoint else result).read_text())
        config_dict = {k: v for k, v in dotted(source.get("config", {})).items() if k not in NOT_RESULTS}
        stored = {"hash": source.get("config_hash"), "config": config_dict}
    new = results_config(config)
    if stored["hash"] == config_hash(config) or (stored["hash"] is None and stored["config"] == new):
        return
    difference = first_difference(stored["config"], new) or "the same keys, another hash"
    raise ForeignOutDir(
        f"{out_dir}: holds a trial of another config ({difference}); to start fresh, give another output folder "
        "or delete this one"
    )


def claim_out_dir(out_dir: Path, config: TrialConfig) -> None:
    """Record that `out_dir` belongs to `config`, as a trial starts there afresh."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    record = {"hash": config_hash(config), "config": results_config(config)}
    (Path(out_dir) / CONFIG_RECORD).write_text(json.dumps(record, indent=1))


def stage_checkpoint_dir(out_dir: Path, stage: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"stage_{stage:03d}"


def save_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer, progress: dict[str, Any]) -> Path:
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(model, str(partial / WEIGHTS))
    torch.save(optimizer.state_dict(), partial / OPTIMIZER)
    (partial / PROGRESS).write_text(json.dumps(progress))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    return path


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete stage checkpoint under `out_dir`, if any."""
    complete = sorted(p for p in (Path(out_dir) / "checkpoints").glob("stage_*") if not p.name.endswith(".partial"))
    return complete[-1] if complete else None


def _safe_optimizer_globals() -> tuple[type, ...]:
    # GaLore keeps pickled projector objects in its state; allow exactly those classes.
    from galore_torch.galore_projector import GaLoreProjector

    from raycl.training.galore import CompactProjector

    return GaLoreProjector, CompactProjector


def load_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    """Restore `model` and `optimizer` in place; return the saved progress."""
    load_model(model, str(path / WEIGHTS), device=str(next(model.parameters()).device))
    with torch.serialization.safe_globals([*_safe_optimizer_globals()]):
        optimizer.load_state_dict(torch.load(path / OPTIMIZER, weights_only=True))
    return json.loads((path / PROGRESS).read_text())
