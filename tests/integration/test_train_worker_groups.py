"""Train-executor trials that Tune ends early (stopped by the scheduler, or their actor SIGKILLed) release their
worker group's placement group and processes, on the local Ray that raycl starts (no dashboard, so no state API):
real Ray Train worker groups of two, Optuna and MLflow sqlite, a tiny model."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
import ray
import yaml
from optuna.trial import TrialState
from rich.console import Console

from raycl.sweep import run_sweep
from raycl.training.checkpoint import stage_checkpoint_dir

pytestmark = pytest.mark.slow

TRAIN_WORKER = "RayTrainWorker"  # in the process title of a Train worker actor
RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ ")  # Ray's log format


def write_space(tmp_path: Path, name: str, trials: int, early_stopping: dict | None, steps: int = 6) -> Path:
    space: dict[str, Any] = {
        "parameters": {"train.lr": {"type": "log_uniform", "low": 1.0e-4, "high": 3.0e-2}},
        "fixed": {
            "model": {"name": "raycl-tiny-xs"},
            "world": {"num_stages": 2},
            "train": {"steps_per_stage": steps, "warmup_steps": 1},
            "eval": {"max_examples": 16, "benchmarks": {"tasks": []}},
        },
        "budget": {"trials": trials, "concurrency": 1, "workers_per_trial": 2, "executor": "train"},
        "sampler": {"name": "random"},
        "seed": 3,
    }
    if early_stopping is not None:
        # One objective: which trials a rung stops follows from their learning alone (t0002, the lowest lr, here).
        space["objectives"] = {"learning": "maximize"}
        space["early_stopping"] = early_stopping
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def train_workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(TRAIN_WORKER in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.fixture()
def placement_groups_at_shutdown(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The placement group table and live Train workers of the sweep's local Ray, read just before it shuts down."""
    seen: list[dict] = []
    shutdown = ray.shutdown

    def recording_shutdown(*args: Any, **kwargs: Any) -> None:
        if ray.is_initialized():
            seen.append({"table": ray.util.placement_group_table(), "workers": len(train_workers())})
        shutdown(*args, **kwargs)

    monkeypatch.setattr(ray, "shutdown", recording_shutdown)
    return seen


def test_stopped_train_trials_release_their_placement_groups(
    tmp_path: Path, placement_groups_at_shutdown: list[dict], capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_space(tmp_path, "train_es", trials=4, early_stopping={"rungs": [1], "reduction": 2})
    console = Console(record=True, width=200)
    outcome = run_sweep(path, out_root=tmp_path / "runs", num_cpus=2, console=console)

    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    states = [trial.state for trial in study.trials]
    assert len(states) == 4 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    stopped = [trial for trial in study.trials if trial.state == TrialState.PRUNED]
    assert stopped and outcome.completed + len(outcome.stopped) == 4 and outcome.unfinished == 0
    for trial in stopped:
        # Its workers waited at the rung for the decision and never trained the second stage.
        trial_dir = outcome.out_dir / "trials" / f"t{trial.number:04d}"
        assert stage_checkpoint_dir(trial_dir, 0).exists() and not stage_checkpoint_dir(trial_dir, 1).exists()
        assert not (trial_dir / "result.json").exists()
    # The trials after a stopped one got their workers: with its placement group left, the next trial's
    # worker group would wait forever for the two CPUs.
    assert stopped[0].number < 3
    assert f"released {len(stopped)} placement group(s) of ended Train trials" in console.export_text()
    [at_shutdown] = placement_groups_at_shutdown
    assert [group for group in at_shutdown["table"].values() if group["state"] == "CREATED"] == []
    assert at_shutdown["workers"] == 0 and outcome.placement_groups_left == []
    # Ray's, Tune's and Train's own lines (snapshot warnings, the token notice, deprecations) went to the log file.
    terminal = capfd.readouterr()
    assert [line for line in (terminal.out + terminal.err).splitlines() if RAY_LOG_LINE.match(line)] == []
    if "RAY_AUTH_MODE" not in os.environ:  # set explicitly, Ray says nothing about it
        assert "Token authentication is" in (outcome.out_dir / "sweep.log").read_text()


def test_a_sigkilled_train_trial_actor_leaves_no_placement_group_or_worker(
    tmp_path: Path, placement_groups_at_shutdown: list[dict]
) -> None:
    path = write_space(tmp_path, "train_kill", trials=2, early_stopping=None, steps=40)
    killed: list[int] = []

    def kill_the_first_trials_actor_mid_stage() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if len(train_workers()) == 2:  # the first trial's worker group is up and training
                time.sleep(2)
                trial_actors = [
                    process
                    for process in psutil.process_iter(["cmdline"])
                    if any("ImplicitFunc" in part for part in process.info["cmdline"] or ())
                ]
                if trial_actors:
                    os.kill(trial_actors[0].pid, signal.SIGKILL)
                    killed.append(trial_actors[0].pid)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_first_trials_actor_mid_stage, daemon=True)
    killer.start()
    console = Console(record=True, width=200)
    outcome = run_sweep(path, out_root=tmp_path / "runs", num_cpus=2, console=console)
    killer.join()
    assert killed, "no Tune trial actor was found to kill"

    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "t0000" in outcome.failures and outcome.completed == 1 and outcome.unfinished == 0
    assert "released 1 placement group(s) of ended Train trials" in console.export_text()
    [at_shutdown] = placement_groups_at_shutdown
    assert [group for group in at_shutdown["table"].values() if group["state"] == "CREATED"] == []
    assert at_shutdown["workers"] == 0
