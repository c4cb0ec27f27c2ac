"""A live table of a sweep's trials: state, parameters, objectives so far, and the Pareto set so far.

On a terminal the table redraws in place; elsewhere (CI logs, pipes) each trial event is one line
and the table is printed once at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from raycl.analysis.frontier import space_frontier
from raycl.config.records import FINAL_KEY, NODE_KEY, FinalReport, PrunedRecord, TrialAssignment
from raycl.config.result import EvalRecord
from raycl.config.space import SearchSpace


@dataclass
class Row:
    state: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    stage: int | None = None
    node: str = ""
    launched: bool = False  # run by this driver (not only shown from an earlier one)
    trial_s: float | None = None  # the Tune trial's wall time, Train startup included
    engine_s: float | None = None  # the engine's own wall time inside it


class ProgressTable(Callback):
    def __init__(self, space: SearchSpace, console: Console, stopped: dict[str, PrunedRecord] | None = None):
        self.space = space
        self.console = console
        self.rows: dict[str, Row] = {}
        self.stopped = {} if stopped is None else stopped  # the early-stopping scheduler's decisions
        self._live: Live | None = None
        self._noted_cpu_fallback = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl (for Tuner.restore, which raycl does not use);
        # a console holds a lock and cannot be pickled, so that copy goes without one.
        return self.__dict__ | {"console": None, "_live": None}

    def add_earlier(self, key: str, params: dict[str, Any], metrics: dict[str, float], state: str) -> None:
        """A trial an earlier driver got to: shown; run again only if it was interrupted."""
        self.rows[key] = Row(state=state, params=params, metrics=metrics)

    def pareto_keys(self) -> set[str]:
        done = {
            key: row
            for key, row in self.rows.items()
            if row.state == "done" and set(self.space.objectives) <= set(row.metrics)
        }
        return set(space_frontier(self.space, list(done), [row.metrics for row in done.values()]).pareto_keys)

    def launched(self) -> list[str]:
        return sorted(key for key, row in self.rows.items() if row.launched)

    def trial_times(self) -> dict[str, dict[str, float]]:
        """Trial and engine wall time of each trial this driver finished (for the overhead benchmark)."""
        return {
            key: {"trial_s": row.trial_s, "engine_s": row.engine_s}
            for key, row in self.rows.items()
            if row.launched and row.trial_s is not None and row.engine_s is not None
        }

    def render(self) -> Table:
        table = Table(
            title=f"sweep {self.space.name}  (* Pareto set so far)",
            caption="node: the Ray node that ran it; s: its wall time in seconds",
            caption_justify="left",
        )
        param_names = list(self.space.parameters)
        for column in ["trial", "state", *map(_short, param_names), *self.space.objectives, "stage", "node", "s", "*"]:
            table.add_column(column, justify="right" if column not in ("trial", "state") else "left")
        front = self.pareto_keys()
        for key in sorted(self.rows):
            row = self.rows[key]
            params = [_fmt(row.params.get(name, "")) for name in param_names]
            objectives = [_fmt(row.metrics.get(name, "")) for name in self.space.objectives]
            seconds = "" if row.trial_s is None else f"{row.trial_s:.0f}"
            stage = "" if row.stage is None else str(row.stage)
            table.add_row(
                key, row.state, *params, *objectives, stage, row.node[:8], seconds, "*" if key in front else ""
            )
        return table

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        """Redraw the table in place while the sweep runs (a terminal), else print it once at the end."""
        if not self.console.is_terminal:
            try:
                yield
            finally:
                # A log has no width to keep to, and the default 80 columns would truncate every cell.
                Console(file=self.console.file, width=max(self.console.width, 160)).print(self.render())
            return
        with Live(self.render(), console=self.console, auto_refresh=False) as live:
            self._live = live
            try:
                yield
            finally:
                live.update(self.render(), refresh=True)
                self._live = None

    def _changed(self, line: str) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
        else:
            self.console.print(line, highlight=False)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        assignment = TrialAssignment.model_validate(trial.config)
        resumed = assignment.key in self.rows
        self.rows[assignment.key] = Row(state="running", params=assignment.params, launched=True)
        params = " ".join(f"{_short(name)}={_fmt(value)}" for name, value in assignment.params.items())
        self._changed(f"{assignment.key} {'resumed' if resumed else 'started'}: {params}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        key = TrialAssignment.model_validate(trial.config).key
        row = self.rows[key]
        if FINAL_KEY in result:
            report = FinalReport.of(result)
            row.state, row.metrics = "done", report.metrics()
            row.trial_s, row.engine_s = result["time_total_s"], report.wall_time_s
            summary = ", ".join(f"{name}={_fmt(row.metrics.get(name, ''))}" for name in self.space.objectives)
            self._changed(f"{key} done: {summary}")
            if report.gpus and report.device == "cpu" and not self._noted_cpu_fallback:
                self._noted_cpu_fallback = True
                gpus = ", ".join(sorted({slot.gpu for slot in report.gpus}))
                self._changed(
                    f"note: {key} held GPU {gpus} but found no CUDA there, and trained on CPU (a node that "
                    "declares GPUs to Ray without having them; said once per sweep)"
                )
            return
        if (record := EvalRecord.in_report(result)) is not None:
            measured = record.metrics()
            row.metrics |= {name: measured[name] for name in self.space.objectives if name in measured}
            row.stage = record.stage
        row.node = result.get(NODE_KEY, row.node)
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = TrialAssignment.model_validate(trial.config).key
        if key in self.stopped:
            record = self.stopped[key]
            self.rows[key].state = f"stopped@{record.stage}"
            self._changed(
                f"{key} stopped early after stage {record.stage}: ranked "
                f"outside the top of {record.at_rung} trials there"
            )

    def failed(self, key: str, state: str, reason: str) -> None:
        """A trial that ended without a result (`state` failed or diverged), and why (called by the FailureRecorder)."""
        self.rows[key].state = state
        self._changed(f"{key} {state}: {reason}")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _short(dotted: str) -> str:
    """`train.lr` -> `lr`, `method.name` -> `method`: column headers fit an 80-column log."""
    section, leaf = dotted.split(".")
    return section if leaf == "name" else leaf
