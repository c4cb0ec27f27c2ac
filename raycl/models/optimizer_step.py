"""The one optimizer step of every training loop: a trial's, the LR range test's and the ladder's pretraining.

    loss = model(input_ids=batch).loss
    optimizer_step(loss, model, optimizer, lr, grad_clip)

Torch only: the optimizers themselves (AdamW, GaLore, per-layer updates) are built by `raycl.training.methods`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn


class StepsInBackward(ABC):
    """An optimizer that steps each parameter inside `backward()`, from gradient hooks (per-layer updates): by the
    time backward returns, every gradient was clipped, used and freed."""

    @property
    @abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """Every parameter's group: setting `lr` on them reaches every update."""


Optimizer = torch.optim.Optimizer | StepsInBackward


def optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer: Optimizer, lr: float, grad_clip: float) -> None:
    """One update of `model` from `loss`: every param group at `lr` times its `lr_scale` (1 where it has none),
    backward, the gradients' global norm clipped to `grad_clip`, a step, and the gradients freed.

    The LR is set before backward, because a `StepsInBackward` optimizer steps during it, and leaves nothing
    to clip, step or free after it.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    loss.backward()
    if isinstance(optimizer, StepsInBackward):
        return
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
