"""A real sweep with early stopping at stage ends: local Ray Tune, Optuna sqlite, MLflow sqlite, tiny trials.

One trial at a time, so trials reach the rung in number order and the run is reproducible; the
assertions are on what the sweep leaves behind: PRUNED Optuna trials with their values at the rung,
MLflow children tagged, trial folders that stop at the rung's checkpoint, one Tune actor reused by
every trial, and the report's section.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from raycl.config.records import Tags
from raycl.reporting.report import build_report
from raycl.sweep import run_sweep
from raycl.sweep.promotion import as_losses, promoted

pytestmark = pytest.mark.slow

DIRECTIONS = ("maximize", "minimize")


def test_sweep_with_early_stopping_prunes_and_records_the_stopped_trials(tmp_path: Path) -> None:
    space = {
        "parameters": {"train.lr": {"type": "log_uniform", "low": 1.0e-4, "high": 3.0e-2}},
        "fixed": {
            "model": {"name": "raycl-tiny-xs"},
            "world": {"num_stages": 2},
            "train": {"steps_per_stage": 8, "warmup_steps": 1},
            "eval": {"max_examples": 16, "benchmarks": {"tasks": []}},
        },
        "budget": {"trials": 5, "concurrency": 1},
        "sampler": {"name": "random"},
        "seed": 3,
        "early_stopping": {"rungs": "stages", "reduction": 3},
    }
    path = tmp_path / "es_sweep.yaml"
    path.write_text(yaml.safe_dump(space))
    console = Console(record=True, width=200)
    outcome = run_sweep(path, out_root=tmp_path / "runs", num_cpus=2, console=console)

    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    states = [trial.state for trial in study.trials]
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED} and len(states) == 5
    pruned = [trial for trial in study.trials if trial.state == TrialState.PRUNED]
    assert pruned, "five trials at one rung with reduction 3: at least the third or fourth must rank outside the top"
    assert outcome.completed + len(outcome.stopped) == 5 and outcome.unfinished == 0
    assert study.trials[0].state == TrialState.COMPLETE  # the first at the rung always continues
    # One Tune actor ran every trial, also those after a stopped one: its engine thread ended in the
    # stage-end report, so the actor's reset succeeded (a failed one ends the next trial in ERROR).
    tune_dir = outcome.out_dir / "ray" / "tune" / outcome.name
    pids = {
        json.loads(line)["pid"]
        for trial in study.trials
        for line in (tune_dir / f"t{trial.number:04d}" / "result.json").open()
    }
    assert len(pids) == 1 and pruned[0].number < len(study.trials) - 1

    # Each decision is the promotion rule applied to the rung values recorded on the study, in arrival order.
    arrived = []
    for trial in study.trials:
        values = trial.user_attrs[Tags.RUNG_VALUES]["1"]
        arrived.append(values)
        assert promoted(as_losses(arrived, DIRECTIONS), 3) == (trial.state == TrialState.COMPLETE)
    client = MlflowClient(tracking_uri=outcome.tracking_uri)
    printed = console.export_text()
    for trial in pruned:
        key = f"t{trial.number:04d}"
        record = trial.user_attrs[Tags.PRUNED]
        assert record["stage"] == 1 and record["values"] == dict(
            zip(["learning", "forgetting"], trial.user_attrs[Tags.RUNG_VALUES]["1"])
        )
        assert outcome.stopped[key] == 1
        # Stopped after its first stage: its engine never wrote a second stage checkpoint or a result.
        trial_dir = outcome.out_dir / "trials" / key
        assert not (trial_dir / "result.json").exists() and not (trial_dir / "sweep_result.json").exists()
        child = client.search_runs(
            [client.get_experiment_by_name(f"raycl-{outcome.name}").experiment_id],
            filter_string=f"tags.`{Tags.TRIAL}` = '{key}'",
        )[0]
        assert child.data.tags[Tags.PRUNED] == "1" and child.info.status == "FINISHED"
        assert f"{key} stopped early after stage 1" in printed

    report = build_report(outcome.name, out_root=tmp_path / "runs", reports_dir=tmp_path / "reports", bootstrap=0)
    text = (report.directory / "report.md").read_text()
    assert "Stopped early" in text and all(f"t{trial.number:04d}" in text for trial in pruned)
    assert report.failed == 0 and report.complete == outcome.completed
