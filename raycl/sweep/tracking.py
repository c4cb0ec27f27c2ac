"""MLflow records of a sweep: one parent run, one child run per trial, the frontier on the parent.

Run identity is ours, not MLflow's: the parent is found by its `raycl.sweep` tag and a child by its
`raycl.trial_id` tag before anything is created, so a resumed sweep reopens its runs instead of
opening duplicates (Ray's MLflowLoggerCallback opens a new run for a restored trial and leaves the
old one RUNNING). All writes
happen in the driver, through `MlflowClient`, so workers need no access to the tracking store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from raycl.analysis import figures, render
from raycl.analysis.frontier import Frontier
from raycl.config.records import EVAL_PREFIX, FINAL_KEY, Artifacts, FinalReport, PrunedRecord, Tags, TrialAssignment
from raycl.config.result import EvalRecord
from raycl.config.space import SearchSpace
from raycl.sweep.redaction import loggable_params
from raycl.sweep.summary import frontier_csv, hypervolume_record


class SweepTracker:
    """Get-or-create runs by tag and log to them; every method is safe to repeat after a restart."""

    def __init__(self, tracking_uri: str, space: SearchSpace, artifact_root: Path | None):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.space = space
        experiment_name = f"raycl-{space.name}"
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id
        self.parent_id = ""
        self._children: dict[str, str] = {}
        self._last_step: dict[str, int] = {}

    def _find(self, filter_string: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=2)
        if len(runs) > 1:
            raise RuntimeError(f"MLflow holds two runs matching {filter_string}")
        return runs[0].info.run_id if runs else None

    def open_parent(self, tags: dict[str, str]) -> str:
        """The sweep's parent run (created once), set RUNNING."""
        found = self._find(f"tags.`{Tags.SWEEP}` = '{self.space.name}' and tags.`{Tags.ROLE}` = 'parent'")
        if found is None:
            found = self.client.create_run(
                self.experiment_id,
                run_name=self.space.name,
                tags={Tags.SWEEP: self.space.name, Tags.ROLE: "parent"} | tags,
            ).info.run_id
            self.client.log_text(found, self.space.text, Artifacts.SEARCH_SPACE)
        else:
            self.client.update_run(found, status="RUNNING")
            self.client.log_batch(found, tags=[RunTag(key, value) for key, value in tags.items()])
        self.parent_id = found
        return found

    def child(self, key: str) -> str | None:
        if key not in self._children:
            found = self._find(f"tags.`{Tags.TRIAL}` = '{key}' and tags.`mlflow.parentRunId` = '{self.parent_id}'")
            if found is None:
                return None
            self._children[key] = found
        return self._children[key]

    def open_child(self, assignment: TrialAssignment) -> str:
        """The trial's child run: created on first start, reopened on a resume; its params logged either way."""
        key = assignment.key
        run_id = self.child(key)
        if run_id is None:
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=key,
                tags={
                    "mlflow.parentRunId": self.parent_id,
                    Tags.TRIAL: key,
                    Tags.SWEEP: self.space.name,
                    Tags.NUMBER: str(assignment.number),
                    Tags.SEARCHED: ",".join(assignment.params),
                },
            ).info.run_id
            self._children[key] = run_id
            self._last_step[key] = -1
        else:
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, f"{EVAL_PREFIX}new_loss")
            self._last_step[key] = max((metric.step for metric in history), default=-1)
        # On every open, not only the first: a driver killed between creating the run and logging
        # these left a run without them. MLflow accepts a param logged again with the same value.
        trial_config = assignment.trial_config.model_dump(mode="json")
        params = loggable_params(trial_config)
        self.client.log_batch(run_id, params=[Param(name, value) for name, value in params.items()])
        self.client.log_dict(run_id, trial_config, Artifacts.TRIAL_CONFIG)
        return run_id

    def log_eval(self, key: str, record: EvalRecord) -> None:
        """One evaluation as points of curves at its step; steps already logged (before a resume) are skipped."""
        if record.step <= self._last_step.get(key, -1):
            return
        now = int(time.time() * 1000)
        values = record.to_report()
        del values["step"]  # the curves' x axis, not a curve
        metrics = [Metric(f"{EVAL_PREFIX}{name}", value, now, record.step) for name, value in values.items()]
        run_id = self.child(key)
        assert run_id is not None, f"{key}: evaluated before its child run was opened"
        self.client.log_batch(run_id, metrics=metrics)
        self._last_step[key] = record.step

    def log_final(self, key: str, report: FinalReport) -> None:
        """Final objectives and metrics, the stage record, and where the workers ran (once per trial)."""
        run_id = self.child(key)
        assert run_id is not None, f"{key}: finished before its child run was opened"
        if self.client.get_run(run_id).data.tags.get(Tags.FINAL_LOGGED) != "true":
            now = int(time.time() * 1000)
            metrics = [Metric(name, value, now, 0) for name, value in report.metrics().items()]
            tags = [RunTag(Tags.NODE_IDS, ",".join(report.node_ids))]
            if report.gpus:
                tags.append(RunTag(Tags.GPUS, ",".join(sorted({str(slot) for slot in report.gpus}))))
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
            self.client.log_dict(run_id, report.stage_record().model_dump(), Artifacts.STAGE_RECORD)
            if report.replicates:
                # MLflow annotates `dictionary` as a dict but serialises any JSON value; the artifact is a list.
                self.client.log_dict(run_id, report.replicates, Artifacts.REPLICATES)  # pyright: ignore[reportArgumentType]
            self.client.set_tag(run_id, Tags.FINAL_LOGGED, "true")
        self.client.set_terminated(run_id, status="FINISHED")

    def log_failure(self, key: str, reason: str, error_file: Path, diverged_step: int | None) -> None:
        """A failed trial's child run: FAILED, with its reason as a tag and its traceback as an artifact."""
        run_id = self.child(key)
        if run_id is None:
            return
        # MLflow caps tag values at 8000 characters.
        tags = [RunTag(Tags.FAILURE, reason[:4000])] + (
            [RunTag(Tags.DIVERGED, str(diverged_step))] if diverged_step else []
        )
        self.client.log_batch(run_id, tags=tags)
        self.client.log_artifact(run_id, str(error_file))
        self.client.set_terminated(run_id, status="FAILED")

    def log_pruned(self, key: str, record: PrunedRecord) -> None:
        """A trial stopped early: tagged with its stage, its objectives there as an artifact, FINISHED."""
        run_id = self.child(key)
        if run_id is None:
            return
        self.client.set_tag(run_id, Tags.PRUNED, str(record.stage))
        self.client.log_dict(run_id, record.model_dump(), Artifacts.PRUNED)
        self.client.set_terminated(run_id, status="FINISHED")

    def end_child(self, key: str, status: str) -> None:
        run_id = self.child(key)
        if run_id is not None:
            self.client.set_terminated(run_id, status=status)

    def end_open_children(self, status: str) -> None:
        for key, run_id in self._children.items():
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.end_child(key, status)

    def log_frontier(self, front: Frontier, rows: list[dict[str, Any]], params: list[dict[str, Any]]) -> None:
        """Pareto tags on every child; on the parent the frontier (tables, figures) and the hypervolume history.

        `rows` holds each complete trial's final metrics under its key (`trial`), `params` its sampled parameters.
        """
        for key, on_front, feasible in zip(front.keys, front.pareto, front.feasible):
            run_id = self.child(key)
            if run_id is not None:
                tags = [
                    RunTag(Tags.PARETO, str(bool(on_front)).lower()),
                    RunTag(Tags.FEASIBLE, str(bool(feasible)).lower()),
                ]
                self.client.log_batch(run_id, tags=tags)
        parent = self.parent_id
        self.client.log_text(parent, frontier_csv(front, params, pareto_only=True), "pareto/frontier.csv")
        self.client.log_text(parent, frontier_csv(front, params, pareto_only=False), "pareto/trials.csv")
        self.client.log_dict(parent, hypervolume_record(front), "pareto/hypervolume.json")
        if front.keys:
            if len(front.objectives) >= 2:
                pareto = figures.pareto_figure(rows, front)
                self.client.log_figure(parent, render.draw_pareto(pareto), "pareto/frontier.png")
            self.client.log_figure(parent, render.draw_hypervolume(front), "pareto/hypervolume.png")
        tags = [
            RunTag(Tags.PARETO_TRIALS, ",".join(front.pareto_keys)),
            RunTag(Tags.HV_REFERENCE, ",".join(f"{n}={v:.6g}" for n, v in zip(front.objectives, front.reference))),
        ]
        # One point per summary, at the number of complete trials: the whole history lives in the
        # artifact, because a resumed sweep's default reference moves and old points cannot be redrawn.
        steps = {metric.step for metric in self.client.get_metric_history(parent, "hypervolume")}
        point = (
            []
            if len(front.keys) in steps
            else [Metric("hypervolume", front.hypervolume, int(time.time() * 1000), len(front.keys))]
        )
        self.client.log_batch(parent, metrics=point, tags=tags)

    def end_parent(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status=status)


class TrackingCallback(Callback):
    """Forwards Tune's trial events to the tracker (driver side); `stopped`: the early-stopping scheduler's
    decisions."""

    def __init__(self, tracker: SweepTracker, stopped: dict[str, PrunedRecord] | None = None):
        self.tracker = tracker
        self.stopped = {} if stopped is None else stopped

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = TrialAssignment.model_validate(trial.config).key
        if key in self.stopped:
            self.tracker.log_pruned(key, self.stopped[key])

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.open_child(TrialAssignment.model_validate(trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        key = TrialAssignment.model_validate(trial.config).key
        if FINAL_KEY in result:
            # Logged here, before Tune tells Optuna in on_trial_complete: a COMPLETE study trial
            # always has its finished child run.
            self.tracker.log_final(key, FinalReport.of(result))
        elif (record := EvalRecord.in_report(result)) is not None:
            self.tracker.log_eval(key, record)
