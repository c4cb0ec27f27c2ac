"""Stage checkpoints: model weights (safetensors), optimizer state, and the trial's progress.

A checkpoint is written to a temporary directory and renamed into place, so a crash mid-write
leaves the previous checkpoint as the latest one. Everything loads safely: safetensors for
weights, `weights_only=True` for the optimizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

if TYPE_CHECKING:
    from raycl.training.methods import Optimizer

WEIGHTS, OPTIMIZER, PROGRESS = "model.safetensors", "optimizer.pt", "progress.json"


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
