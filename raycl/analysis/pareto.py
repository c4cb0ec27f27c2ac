"""Pareto fronts and dominated hypervolume for multi-objective sweep results.

Objectives may be maximized (``learning``) or minimized (``forgetting``); every
function converts to minimization internally by negating maximized columns. Rows
containing NaN (failed or pruned trials) never belong to the front and never count
towards a hypervolume.

The hypervolume is computed exactly here, by slicing along the last objective (a sweep in 2-D):
analysis stays free of the sweep's libraries, and Optuna 5 has no public hypervolume function
(tests/unit/test_adapters.py checks this one against Optuna's private one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Direction = Literal["maximize", "minimize"]

_SIGNS: dict[str, float] = {"minimize": 1.0, "maximize": -1.0}


def _signs(directions: Sequence[Direction], k: int) -> np.ndarray:
    if len(directions) != k:
        raise ValueError(f"{len(directions)} directions given for {k} objectives")
    unknown = [d for d in directions if d not in _SIGNS]
    if unknown:
        raise ValueError(f"unknown direction(s) {unknown}; use 'maximize' or 'minimize'")
    return np.array([_SIGNS[d] for d in directions])


def _as_loss(values: np.ndarray, directions: Sequence[Direction]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(losses, signs)`` where ``losses = values * signs`` is to be minimized."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"values must have shape (n, k), got {array.shape}")
    signs = _signs(directions, array.shape[1])
    return array * signs, signs


def _minimization_reference(reference: Sequence[float], signs: np.ndarray) -> np.ndarray:
    ref = np.asarray(reference, dtype=float)
    if ref.shape != signs.shape:
        raise ValueError(f"reference has shape {ref.shape}, expected {signs.shape}")
    return ref * signs


def pareto_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (shape ``(n, k)``).

    A row is dominated when another row is at least as good in every objective and
    strictly better in one. Exact duplicates of a non-dominated row are all kept.
    """
    loss, _ = _as_loss(values, directions)
    valid = ~np.isnan(loss).any(axis=1)
    candidates = loss[valid]
    mask = np.zeros(len(loss), dtype=bool)
    for i in np.flatnonzero(valid):
        point = loss[i]
        dominated = np.any(np.all(candidates <= point, axis=1) & np.any(candidates < point, axis=1))
        mask[i] = not dominated
    return mask


def _minimization_hypervolume(loss: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimization points w.r.t. ``ref``.

    Rows with NaN or not weakly dominating ``ref`` contribute nothing and are dropped.
    """
    keep = ~np.isnan(loss).any(axis=1) & np.all(loss <= ref, axis=1)
    return _sliced_volume(loss[keep], ref)


def _sliced_volume(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact volume dominated by ``points`` (all weakly dominating ``ref``): sorted by the last
    objective, each point opens a slab up to the next point (or ``ref``) whose cross-section is
    the volume the points so far dominate in the other objectives."""
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    points = points[np.argsort(points[:, -1], kind="stable")]
    depths = np.diff(np.append(points[:, -1], ref[-1]))
    if points.shape[1] == 2:
        return float(np.sum(depths * (ref[0] - np.minimum.accumulate(points[:, 0]))))
    return float(
        sum(depth * _sliced_volume(points[: i + 1, :-1], ref[:-1]) for i, depth in enumerate(depths) if depth > 0)
    )


def hypervolume(values: np.ndarray, directions: Sequence[Direction], reference: Sequence[float]) -> float:
    """Volume of objective space dominated by ``values`` and bounded by ``reference``.

    ``reference`` is given in the original (not sign-flipped) objective units and must be
    worse than the points of interest in every objective; see ``default_reference``.
    """
    loss, signs = _as_loss(values, directions)
    return _minimization_hypervolume(loss, _minimization_reference(reference, signs))


def default_reference(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Reference point strictly worse than every observed (non-NaN) point.

    Per objective: the nadir (worst observed value) moved by 10% of the observed range
    in the worsening direction. When the range is zero the margin is 10% of the nadir's
    magnitude (at least 1e-6), so the reference is still strictly worse.
    """
    loss, signs = _as_loss(values, directions)
    finite = loss[~np.isnan(loss).any(axis=1)]
    if len(finite) == 0:
        raise ValueError("no non-NaN point to derive a reference from")
    nadir = finite.max(axis=0)
    span = nadir - finite.min(axis=0)
    margin = np.where(span > 0, 0.1 * span, np.maximum(0.1 * np.abs(nadir), 1e-6))
    return (nadir + margin) * signs


def hypervolume_history(
    values_in_trial_order: np.ndarray,
    directions: Sequence[Direction],
    reference: Sequence[float],
) -> np.ndarray:
    """Hypervolume of the first ``i`` trials for ``i = 1..n`` (non-decreasing).

    Keeps the running front and recomputes the volume only when a trial enters it.
    """
    loss, signs = _as_loss(values_in_trial_order, directions)
    ref = _minimization_reference(reference, signs)
    history = np.zeros(len(loss))
    front = np.empty((0, loss.shape[1]))
    current = 0.0
    for i, point in enumerate(loss):
        useful = not np.isnan(point).any() and bool(np.all(point <= ref))
        if useful and not np.any(np.all(front <= point, axis=1)):
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            current = _minimization_hypervolume(front, ref)
        history[i] = current
    return history
