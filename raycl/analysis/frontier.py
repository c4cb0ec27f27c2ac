"""The frontier of a sweep as plain data: feasibility, the Pareto set, the hypervolume and its history.

The one computation behind the live table, the MLflow parent run and the report. Trials come in
completion order, so the history shows how the search progressed. An infeasible trial (violating a
constraint) or one lacking an objective never joins the front nor adds volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raycl.analysis.pareto import Direction, default_reference, hypervolume_history, pareto_mask
from raycl.config.space import Constraint, SearchSpace


@dataclass(frozen=True, eq=False)
class Frontier:
    objectives: list[str]
    directions: list[Direction]
    keys: list[str]
    values: np.ndarray  # (n, k) objective values as measured, NaN where a trial lacks one
    feasible: np.ndarray  # meets every constraint
    pareto: np.ndarray  # non-dominated among the feasible trials
    reference: list[float]  # hypervolume reference point, NaN without a feasible trial
    reference_source: str
    history: np.ndarray  # hypervolume of the first i trials

    @property
    def hypervolume(self) -> float:
        return float(self.history[-1]) if len(self.history) else 0.0

    @property
    def pareto_keys(self) -> list[str]:
        return [key for key, on_front in zip(self.keys, self.pareto) if on_front]


def _value(metrics: Mapping[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else np.nan


def feasibility(metrics: Sequence[Mapping[str, float]], constraints: Sequence[Constraint]) -> list[bool]:
    return [all(constraint.satisfied(m) for constraint in constraints) for m in metrics]


def frontier(
    keys: Sequence[str],
    metrics: Sequence[Mapping[str, Any]],
    objectives: Mapping[str, Direction],
    feasible: Sequence[bool] | None = None,
    reference_point: Mapping[str, float] | None = None,
) -> Frontier:
    """The frontier of trials `keys` (in completion order) with final `metrics`; every trial is feasible
    unless `feasible` says otherwise; the reference point defaults to 10% of the range past the worst
    feasible trial."""
    names, directions = list(objectives), list(objectives.values())
    values = np.array([[_value(m, name) for name in names] for m in metrics], dtype=float).reshape(
        len(metrics), len(names)
    )
    feasible_mask = np.ones(len(metrics), bool) if feasible is None else np.asarray(feasible, dtype=bool)
    candidates = values.copy()
    candidates[~feasible_mask] = np.nan
    usable = np.isfinite(candidates).all(axis=1)
    if reference_point is not None:
        reference, source = np.array([reference_point[name] for name in names], dtype=float), "search space"
    elif usable.any():
        reference, source = (
            default_reference(candidates, directions),
            "default: 10% of the range past the worst feasible trial",
        )
    else:
        reference, source = np.full(len(names), np.nan), "none: no feasible trial"
    history = (
        hypervolume_history(candidates, directions, reference.tolist()) if usable.any() else np.zeros(len(metrics))
    )
    return Frontier(
        objectives=names,
        directions=directions,
        keys=list(keys),
        values=values,
        feasible=feasible_mask,
        pareto=pareto_mask(candidates, directions) if len(metrics) else np.zeros(0, bool),
        reference=reference.tolist(),
        reference_source=source,
        history=history,
    )


def space_frontier(space: SearchSpace, keys: Sequence[str], metrics: Sequence[Mapping[str, Any]]) -> Frontier:
    """The frontier of a sweep's complete trials under its space's objectives, constraints and reference."""
    return frontier(keys, metrics, space.objectives, feasibility(metrics, space.constraints), space.reference_point)
