"""The metric vocabulary of raycl, as pure functions of held-out losses (nats per token).

The stage matrix `R[i][j]` is the held-out loss on stage j after training stage i; row 0 is the
model before any training, so R has T + 1 rows and T columns. Losses are lower-is-better, and every
derived metric below is signed so that a *positive* value is good for transfer and *negative* backward
transfer means forgetting, matching the accuracy-based conventions of Lopez-Paz & Ranzato (2017).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch

Matrix = Sequence[Sequence[float]]


def learning(new_loss_before: float, new_loss_after: float) -> float:
    """Fractional drop of held-out perplexity on the new data, `1 - ppl_after / ppl_before`."""
    return 1.0 - math.exp(new_loss_after - new_loss_before)


def forgetting(base_loss_before: float, base_loss_after: float) -> float:
    """Rise of held-out loss on the original distribution, in nats (lower is better)."""
    return base_loss_after - base_loss_before


def learning_nats(new_loss_before: float, new_loss_after: float) -> float:
    """Drop of held-out loss on the new data, in nats: unlike `learning`, it does not saturate near 1."""
    return new_loss_before - new_loss_after


def forgetting_fraction(base_loss_init: float, base_loss_before: float, base_loss_after: float) -> float:
    """Share of the pretraining progress on the original distribution that the stream undid
    (Bethune et al. 2025): `(L_after - L_before) / (L_init - L_before)`, with L_init the loss of the
    untrained model. Comparable across model sizes, whose base losses differ."""
    return (base_loss_after - base_loss_before) / (base_loss_init - base_loss_before)


def untrained_loss(vocab_size: int) -> float:
    """L_init: the loss of a uniform prediction over the vocabulary, `ln V`, which is where a freshly
    initialised language model starts (its logits are near zero)."""
    return math.log(vocab_size)


def _check_shape(matrix: Matrix) -> int:
    stages = len(matrix) - 1
    if stages < 1 or any(len(row) != stages for row in matrix):
        raise ValueError(f"stage matrix must have T + 1 rows of T losses, got {[len(r) for r in matrix]}")
    return stages


def mean_new_loss(row: Sequence[float]) -> float:
    """Held-out loss on the new data at one point of the stream: the mean over stages."""
    return sum(row) / len(row)


def average_final_loss(matrix: Matrix) -> float:
    """Mean held-out loss over all stages after the whole stream (last row)."""
    _check_shape(matrix)
    return mean_new_loss(matrix[-1])


def backward_transfer(matrix: Matrix) -> float:
    """Mean over stages j < T of `R[j+1][j] - R[T][j]`: negative when later stages undid stage j.

    Zero for a single stage (nothing comes after it).
    """
    stages = _check_shape(matrix)
    if stages == 1:
        return 0.0
    return sum(matrix[j + 1][j] - matrix[stages][j] for j in range(stages - 1)) / (stages - 1)


def forward_transfer(matrix: Matrix) -> float:
    """Mean over stages j >= 1 of `R[0][j] - R[j][j]`: positive when earlier stages helped stage j
    before it was trained (compared with the untrained model, the step-0 row)."""
    stages = _check_shape(matrix)
    if stages == 1:
        return 0.0
    return sum(matrix[0][j] - matrix[j][j] for j in range(1, stages)) / (stages - 1)


def stage_forgetting(matrix: Matrix) -> list[float]:
    """Per stage j < T: final loss minus the best loss reached after training it and before the last
    stage, `R[T][j] - min_{j < l < T} R[l][j]`, in nats (Chaudhry et al. 2018, for losses). Positive:
    stage j was forgotten; negative: later stages lowered its loss below anything reached before."""
    stages = _check_shape(matrix)
    return [matrix[stages][j] - min(matrix[later][j] for later in range(j + 1, stages)) for j in range(stages - 1)]


_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def weight_drift(initial: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Relative drift `||W - W0|| / ||W0||` per transformer layer, over its 2-D weights.

    Matrices outside numbered layers (embeddings, the head) are grouped under `other`.
    """
    squared_delta: dict[str, float] = {}
    squared_norm: dict[str, float] = {}
    for name, start in initial.items():
        if start.ndim != 2:
            continue
        match = _LAYER_INDEX.search(name)
        group = f"layer_{int(match.group(1)):02d}" if match else "other"
        delta = current[name].detach().float().cpu() - start.float()
        squared_delta[group] = squared_delta.get(group, 0.0) + float(delta.pow(2).sum())
        squared_norm[group] = squared_norm.get(group, 0.0) + float(start.float().pow(2).sum())
    return {group: math.sqrt(squared_delta[group] / squared_norm[group]) for group in sorted(squared_delta)}


def drift_spread(drift: Mapping[str, float]) -> float:
    """Spread of drift across transformer layers: max minus min of the per-layer values."""
    layers = [value for group, value in drift.items() if group.startswith("layer_")]
    return max(layers) - min(layers) if layers else 0.0
