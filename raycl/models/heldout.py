"""Held-out loss of a model on unpacked examples: the measurement behind every metric."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raycl.data.tokens import IGNORE_INDEX, pad_batch


@torch.no_grad()
def heldout_loss(
    model: nn.Module,
    examples: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]] | None = None,
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> float:
    """Mean next-token loss in nats over the predicted tokens of `examples` (token-weighted): every
    token, or those whose `labels` are not IGNORE_INDEX."""
    was_training = model.training
    model.eval()
    pairs = list(zip(examples, labels if labels is not None else examples))
    # Similar lengths in one batch waste less compute on padding.
    pairs.sort(key=lambda pair: len(pair[0]))
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        ids, mask = pad_batch([example for example, _ in chunk], pad_id)
        targets, _ = pad_batch([target for _, target in chunk], IGNORE_INDEX)
        ids, mask, targets = ids.to(device), mask.to(device), targets[:, 1:].to(device)
        with autocast or contextlib.nullcontext():
            logits = model(input_ids=ids, attention_mask=mask).logits
        total_loss += float(F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="sum"))
        total_tokens += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return total_loss / total_tokens
