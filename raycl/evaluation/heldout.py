"""Held-out loss of a model on unpacked examples: the measurement behind every metric."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raycl.data.tokens import pad_batch


@torch.no_grad()
def heldout_loss(
    model: nn.Module,
    examples: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> float:
    """Mean next-token loss in nats over every predicted token of `examples` (token-weighted)."""
    was_training = model.training
    model.eval()
    # Similar lengths in one batch waste less compute on padding.
    ordered = sorted(examples, key=len)
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(ordered), batch_size):
        ids, mask = pad_batch(ordered[start : start + batch_size], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        with autocast or contextlib.nullcontext():
            logits = model(input_ids=ids, attention_mask=mask).logits
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total_loss += float(F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="sum"))
        total_tokens += int((targets != -100).sum())
    model.train(was_training)
    return total_loss / total_tokens
