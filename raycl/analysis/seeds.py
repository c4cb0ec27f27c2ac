"""Intervals over the seeds of one configuration (`budget.seeds`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (independent seed runs); NaN for fewer than two runs."""
    runs = np.asarray(values, dtype=float)
    if len(runs) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(runs) - 1) * runs.std(ddof=1) / np.sqrt(len(runs))
    return float(runs.mean() - half), float(runs.mean() + half)


def seed_intervals(replicates: Sequence[dict[str, float]] | None, names: Sequence[str]) -> dict[str, float]:
    """`seeds` and, for each metric of `names` every run reports, `<name>_ci_low` and `<name>_ci_high`."""
    runs = list(replicates or [])
    columns: dict[str, float] = {"seeds": max(len(runs), 1)}
    for name in names:
        if len(runs) >= 2 and all(name in run for run in runs):
            columns[f"{name}_ci_low"], columns[f"{name}_ci_high"] = mean_interval([run[name] for run in runs])
    return columns
