"""The frontier of a sweep as plain data (Pareto set, hypervolume history), and its renderings.

Infeasible trials (violating a space's constraints) enter as NaN rows, which `raycl.analysis.pareto`
keeps off the front and out of every hypervolume. Trials are taken in completion order, so the
hypervolume history shows how the search progressed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from raycl.analysis.pareto import default_reference, hypervolume_history, pareto_mask
from raycl.config.space import SearchSpace


@dataclass(frozen=True)
class FrontierSummary:
    objectives: list[str]
    directions: list[str]
    keys: list[str]
    values: list[list[float]]
    params: list[dict[str, Any]]
    feasible: list[bool]
    pareto: list[bool]
    reference: list[float]
    reference_source: str
    hypervolume_history: list[float]

    @property
    def hypervolume(self) -> float:
        return self.hypervolume_history[-1] if self.hypervolume_history else 0.0

    @property
    def pareto_keys(self) -> list[str]:
        return [key for key, on_front in zip(self.keys, self.pareto) if on_front]


def summarize(
    space: SearchSpace, keys: list[str], metrics: list[dict[str, float]], params: list[dict[str, Any]]
) -> FrontierSummary:
    """The frontier of completed trials given in completion order (`metrics` holds each trial's finals)."""
    objectives = list(space.objectives)
    values = np.array([[m[name] for name in objectives] for m in metrics], dtype=float).reshape(len(metrics), len(objectives))
    feasible = [all(c.satisfied(m) for c in space.constraints) for m in metrics]
    candidates = values.copy()
    candidates[~np.array(feasible, dtype=bool)] = np.nan
    if space.reference_point is not None:
        reference, source = np.array([space.reference_point[name] for name in objectives]), "search space"
    elif np.isfinite(candidates).all(axis=1).any():
        reference, source = default_reference(candidates, space.directions), "default: 10% of the range past the worst feasible trial"
    else:
        reference, source = np.full(len(objectives), np.nan), "none: no feasible trial"
    if np.isfinite(reference).all():
        history = hypervolume_history(candidates, space.directions, reference)
    else:
        history = np.zeros(len(keys))
    return FrontierSummary(
        objectives=objectives,
        directions=space.directions,
        keys=keys,
        values=values.tolist(),
        params=params,
        feasible=feasible,
        pareto=pareto_mask(candidates, space.directions).tolist() if keys else [],
        reference=reference.tolist(),
        reference_source=source,
        hypervolume_history=history.tolist(),
    )


def frontier_csv(summary: FrontierSummary, *, pareto_only: bool) -> str:
    """The trials (or just the Pareto set) as CSV: key, objectives, flags, then the searched params."""
    param_names = sorted({name for params in summary.params for name in params})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", *summary.objectives, "feasible", "pareto", *param_names])
    for key, values, params, feasible, on_front in zip(summary.keys, summary.values, summary.params, summary.feasible, summary.pareto):
        if on_front or not pareto_only:
            writer.writerow([key, *values, feasible, on_front, *(params.get(name, "") for name in param_names)])
    return buffer.getvalue()


def hypervolume_record(summary: FrontierSummary) -> dict[str, Any]:
    return {
        "objectives": summary.objectives,
        "directions": summary.directions,
        "reference": summary.reference,
        "reference_source": summary.reference_source,
        "trial_order": summary.keys,
        "history": summary.hypervolume_history,
        "pareto_trials": summary.pareto_keys,
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_frontier(summary: FrontierSummary) -> Any:
    """Scatter of all trials in the first two objectives, the Pareto set joined as a step line."""
    plt = _pyplot()

    values = np.array(summary.values)
    x, y = values[:, 0], values[:, 1] if values.shape[1] > 1 else np.zeros(len(values))
    front = np.array(summary.pareto)
    feasible = np.array(summary.feasible)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(x[feasible & ~front], y[feasible & ~front], c="tab:gray", label="trial")
    ax.scatter(x[~feasible], y[~feasible], c="tab:gray", marker="x", label="infeasible")
    order = np.argsort(x[front])
    ax.step(x[front][order], y[front][order], where="post", c="tab:red", alpha=0.5)
    ax.scatter(x[front], y[front], c="tab:red", label="Pareto set")
    for key, xi, yi in zip(summary.keys, x, y):
        ax.annotate(key, (xi, yi), fontsize=7, alpha=0.7)
    ax.set_xlabel(f"{summary.objectives[0]} ({summary.directions[0]})")
    ax.set_ylabel(f"{summary.objectives[1]} ({summary.directions[1]})" if len(summary.objectives) > 1 else "")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_hypervolume(summary: FrontierSummary) -> Any:
    """Hypervolume of the first n complete trials against n, with the reference point in the title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(summary.hypervolume_history) + 1), summary.hypervolume_history, marker="o")
    ax.set_xlabel("complete trials (in completion order)")
    ax.set_ylabel("hypervolume")
    reference = ", ".join(f"{name} {value:.3g}" for name, value in zip(summary.objectives, summary.reference))
    ax.set_title(f"reference: {reference}", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
