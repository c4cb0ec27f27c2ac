"""A sweep's frontier as the files its MLflow parent run keeps: CSV tables and the hypervolume record."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from raycl.analysis.frontier import Frontier


def frontier_csv(front: Frontier, params: Sequence[dict[str, Any]], *, pareto_only: bool) -> str:
    """The trials (or just the Pareto set) as CSV: key, objectives, flags, then the searched params."""
    param_names = sorted({name for trial_params in params for name in trial_params})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", *front.objectives, "feasible", "pareto", *param_names])
    for key, values, trial_params, feasible, on_front in zip(
        front.keys, front.values.tolist(), params, front.feasible, front.pareto
    ):
        if on_front or not pareto_only:
            writer.writerow(
                [key, *values, bool(feasible), bool(on_front), *(trial_params.get(name, "") for name in param_names)]
            )
    return buffer.getvalue()


def hypervolume_record(front: Frontier) -> dict[str, Any]:
    return {
        "objectives": front.objectives,
        "directions": front.directions,
        "reference": front.reference,
        "reference_source": front.reference_source,
        "trial_order": front.keys,
        "history": front.history.tolist(),
        "pareto_trials": front.pareto_keys,
    }
