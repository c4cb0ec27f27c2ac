"""Penalties that pull the model back towards its base: KL to the base model's predictions, and EWC."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raycl.data.tokens import IGNORE_INDEX, batch_at


def kl_to_base(logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-level forward KL(p_base || p_current), summed over the vocabulary and averaged over the
    positions whose token is real (labels != IGNORE_INDEX). Exactly 0 while the model equals its base."""
    per_token = F.kl_div(
        F.log_softmax(logits.float(), dim=-1),
        F.log_softmax(base_logits.float(), dim=-1),
        log_target=True,
        reduction="none",
    ).sum(dim=-1)
    valid = (labels != IGNORE_INDEX).float()
    return (per_token * valid).sum() / valid.sum()


class EWC:
    """Elastic weight consolidation (Kirkpatrick et al. 2017) with a diagonal empirical Fisher.

    The Fisher is estimated on the original distribution before the stream, one block at a time so
    that each term is a per-example squared gradient rather than the square of a batch mean.
    """

    def __init__(self, model: nn.Module, blocks: torch.Tensor, samples: int, seed: int):
        device = next(model.parameters()).device
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.anchor = {name: p.detach().clone() for name, p in self.params.items()}
        self.fisher = {name: torch.zeros_like(p) for name, p in self.params.items()}
        for index in range(samples):
            block = batch_at(blocks, 1, index, seed).to(device)
            loss = model(input_ids=block, labels=block).loss
            for (name, _), grad in zip(self.params.items(), torch.autograd.grad(loss, list(self.params.values()))):
                self.fisher[name] += grad.detach().pow(2) / samples

    def penalty(self) -> torch.Tensor:
        """`1/2 sum_i F_i (theta_i - theta*_i)^2`."""
        total = sum((self.fisher[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.params.items())
        assert isinstance(total, torch.Tensor)  # at least one weight is anchored
        return 0.5 * total
