"""The continual stream a trial trains on: stages of new data, plus the retention probe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from raycl.data.sources import LoadSummary


@dataclass(frozen=True)
class Stage:
    name: str
    train_blocks: torch.Tensor  # (n, seq_len) packed token blocks
    train_labels: torch.Tensor  # like train_blocks, IGNORE_INDEX where no loss (e.g. user turns)
    heldout: list[list[int]]  # unpacked examples, one per held-out document or conversation
    heldout_labels: list[list[int]]  # like heldout, IGNORE_INDEX where no loss


@dataclass(frozen=True)
class Stream:
    stages: list[Stage]
    retention: list[list[int]]  # held-out examples of the original (pretraining) distribution
    replay_pool: torch.Tensor  # (n, seq_len) train blocks of the original distribution, disjoint from `retention`
    summary: LoadSummary | None = None  # what loading a real dataset kept and skipped
