"""The promotion rule of multi-objective early stopping at stage boundaries (pure functions, no Ray).

Trials that reach a rung (the end of a stage) are ordered as NSGA-II orders a population: by
non-dominated front first, then by crowding distance inside a front (largest first; the two ends
of a front on any objective count as infinitely far). The order is a ranking, read by position:
an index's position in `nsga2_order` is its rank, never the value stored at that position.

The rule is asynchronous, as in ASHA: when a trial arrives at a rung it is compared with every trial
that reached the rung before it (stopped or not), and continues when its position among those n
trials is within the first ceil(n / reduction). Earlier decisions are never revisited, so the
first trials to arrive are promoted on little evidence and later ones face a full field. A trial
tied with others on front and crowding distance is placed ahead of them (as ASHA continues a trial
equal to its cutoff), so the first trial at a rung, and any trial that dominates every other one
there, always continues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def as_losses(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Objective values (rows: trials) as losses to minimize: maximized columns negated."""
    signs = np.array([-1.0 if direction == "maximize" else 1.0 for direction in directions])
    return np.asarray(values, dtype=float).reshape(-1, len(signs)) * signs


def nondominated_fronts(losses: np.ndarray) -> list[list[int]]:
    """Row indices grouped into successive non-dominated fronts (minimization), best front first."""
    remaining = list(range(len(losses)))
    fronts = []
    while remaining:
        points = losses[remaining]
        front = [
            index
            for index, point in zip(remaining, points)
            if not np.any(np.all(points <= point, axis=1) & np.any(points < point, axis=1))
        ]
        fronts.append(front)
        remaining = [index for index in remaining if index not in front]
    return fronts


def crowding_distances(losses: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row of one front: the ends of every objective are infinite."""
    count, objectives = losses.shape
    distance = np.zeros(count)
    if count <= 2:
        return np.full(count, np.inf)
    for column in range(objectives):
        order = np.argsort(losses[:, column], kind="stable")
        span = losses[order[-1], column] - losses[order[0], column]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            gaps = (losses[order[2:], column] - losses[order[:-2], column]) / span
            distance[order[1:-1]] += gaps
    return distance


def nsga2_order(losses: np.ndarray, favoured: int | None = None) -> list[int]:
    """Row indices best first: by front, then by crowding distance (largest first); among rows tied on
    both, `favoured` first, then the earlier row."""
    order: list[int] = []
    for front in nondominated_fronts(losses):
        crowding = dict(zip(front, crowding_distances(losses[front])))
        order += sorted(front, key=lambda index: (-crowding[index], index != favoured, index))
    return order


def kept(count: int, reduction: float) -> int:
    """How many of `count` trials at a rung continue: ceil(count / reduction), at least one."""
    return max(1, math.ceil(count / reduction - 1e-9))


def promoted(losses: np.ndarray, reduction: float) -> bool:
    """Whether the last row (the trial arriving at a rung) continues, given the rows that arrived
    before it (losses to minimize, one row per trial at the rung, in arrival order)."""
    arriving = len(losses) - 1
    return nsga2_order(losses, favoured=arriving).index(arriving) < kept(len(losses), reduction)
