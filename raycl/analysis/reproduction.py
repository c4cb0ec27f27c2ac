"""Whether a fresh run reproduces a committed report: per-trial relative differences of two pareto.csv tables.

Trials are matched by key, and each pair must have run the same configuration (model, pretraining budget,
learning rate, replay ratio, steps per stage, as far as the tables have them: pareto.csv holds the searched
parameters): otherwise the numbers are not comparable and `compare_tables` raises. A metric differs by
|fresh - committed| / |committed| (the absolute difference where the committed value is 0); a value present in
one table only counts as an infinite difference.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

CONFIG_COLUMNS = (
    "model.name",
    "model.pretrain_tokens_per_param",
    "train.lr",
    "replay.ratio",
    "train.steps_per_stage",
)
COMPARED_METRICS = ("forgetting", "learning", "base_loss_before")
DEFAULT_TOLERANCE = 0.005


@dataclass(frozen=True)
class TrialDifference:
    """One trial's metrics in both tables and their relative differences."""

    trial: str
    fresh: dict[str, float | None]
    committed: dict[str, float | None]
    relative: dict[str, float]  # metric -> relative difference (NaN where neither table has the value)

    @property
    def worst(self) -> float:
        values = [v for v in self.relative.values() if not math.isnan(v)]
        return max(values, default=0.0)


@dataclass(frozen=True)
class Comparison:
    """Every matched trial's differences, judged against `tolerance` (relative)."""

    trials: list[TrialDifference]
    metrics: tuple[str, ...]
    tolerance: float

    @property
    def differences(self) -> list[float]:
        """Every relative difference, NaN (a value neither table has) left out."""
        return [d.relative[m] for d in self.trials for m in self.metrics if not math.isnan(d.relative[m])]

    @property
    def over(self) -> list[TrialDifference]:
        """Trials with a metric further than the tolerance from the committed value."""
        return [d for d in self.trials if d.worst > self.tolerance]

    @property
    def passed(self) -> bool:
        return not self.over

    def summary(self) -> str:
        values = self.differences
        worst = max(values, default=0.0)
        median = statistics.median(values) if values else 0.0
        return (
            f"{len(self.trials)} trials, {len(values)} values of {', '.join(self.metrics)}: max relative difference "
            f"{worst:.3%}, median {median:.3%}; {len(self.over)} trial(s) over the tolerance {self.tolerance:.2%}"
        )


def read_table(text: str, source: str) -> dict[str, dict[str, str]]:
    """A pareto.csv's rows by trial key; a one-line ValueError naming `source` without a trial column."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and "trial" not in rows[0]:
        raise ValueError(f"{source}: no 'trial' column")
    return {row["trial"]: row for row in rows}


def _number(cell: str | None) -> float | None:
    if cell is None or cell.strip() == "":
        return None
    return float(cell)


def _same_setting(a: str, b: str) -> bool:
    """Equal as numbers where both are numbers (0.1 == 1e-1), else as text."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return a == b


def _relative(fresh: float | None, committed: float | None) -> float:
    if fresh is None and committed is None:
        return float("nan")
    if fresh is None or committed is None:
        return float("inf")
    difference = abs(fresh - committed)
    return difference / abs(committed) if committed != 0 else difference


def compare_tables(
    fresh: dict[str, dict[str, str]],
    committed: dict[str, dict[str, str]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    metrics: tuple[str, ...] = COMPARED_METRICS,
    fresh_source: str = "fresh",
    committed_source: str = "committed",
) -> Comparison:
    """Per-trial relative differences of `metrics`; a one-line ValueError where the trials or their configurations
    differ, or a table lacks a column."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    only_fresh, only_committed = sorted(set(fresh) - set(committed)), sorted(set(committed) - set(fresh))
    if only_fresh or only_committed:
        raise ValueError(
            f"the trials differ: only in {fresh_source}: {', '.join(only_fresh) or '-'}; "
            f"only in {committed_source}: {', '.join(only_committed) or '-'}"
        )
    # pareto.csv holds the searched parameters only: a setting neither table has was fixed by the space.
    present = {c for table in (fresh, committed) for c in next(iter(table.values()), {})}
    settings = [c for c in CONFIG_COLUMNS if c in present]
    for source, table in ((fresh_source, fresh), (committed_source, committed)):
        columns = set(next(iter(table.values()), {}))
        missing = [c for c in (*settings, *metrics) if table and c not in columns]
        if missing:
            raise ValueError(f"{source}: no column(s) {', '.join(missing)}")
    trials = []
    for key in sorted(committed):
        new, old = fresh[key], committed[key]
        changed = [c for c in settings if not _same_setting(new[c], old[c])]
        if changed:
            settings = "; ".join(f"{c} {new[c]} in {fresh_source}, {old[c]} in {committed_source}" for c in changed)
            raise ValueError(f"trial {key} ran another configuration: {settings}")
        new_values = {m: _number(new[m]) for m in metrics}
        old_values = {m: _number(old[m]) for m in metrics}
        relative = {m: _relative(new_values[m], old_values[m]) for m in metrics}
        trials.append(TrialDifference(key, new_values, old_values, relative))
    return Comparison(trials, metrics, tolerance)
