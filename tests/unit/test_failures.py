"""Failed and diverged trials: the divergence rule, strict result.json, and the reason recorded on the
Optuna trial, the MLflow child run and in the trial's folder (a real in-memory study and sqlite store)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.exceptions import RayTaskError
from ray.train.v2.api.exceptions import WorkerGroupError
from rich.console import Console

from raycl.artifacts.hub import ModelFileError
from raycl.config.records import Artifacts, Tags, TrialAssignment
from raycl.config.result import Divergence, TrialDiverged
from raycl.config.space import load_space
from raycl.sweep.failures import ERROR_FILE_ATTR, FailureRecorder, TrialFailure
from raycl.sweep.progress import ProgressTable
from raycl.sweep.study import OptunaSearcher
from raycl.sweep.tracking import SweepTracker
from raycl.training.trial import has_diverged, write_json

SPACE = {
    "objectives": {"learning": "maximize", "forgetting": "minimize"},
    "parameters": {"train.lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
    "fixed": {"world": {"num_stages": 2}},
    "budget": {"trials": 2},
    "sampler": {"name": "random"},
    "seed": 0,
}


def divergence(loss: float | None) -> Divergence:
    return Divergence(step=12, stage=2, loss=loss, first_loss=4.0, bound=12.0, config={})


def test_divergence_is_a_non_finite_loss_or_one_far_above_the_first() -> None:
    assert not has_diverged(11.9, first_loss=4.0, factor=3.0)
    assert has_diverged(12.1, first_loss=4.0, factor=3.0)
    assert has_diverged(math.nan, first_loss=4.0, factor=3.0) and has_diverged(math.inf, first_loss=4.0, factor=3.0)
    assert has_diverged(math.nan, first_loss=math.nan, factor=3.0)  # NaN at the very first step
    assert str(TrialDiverged(divergence(None))) == "diverged at step 12 (stage 2): the loss is not finite"
    assert "the loss 50 is above 12" in str(TrialDiverged(divergence(50.0)))


def test_result_json_is_strict_json_with_null_for_non_finite_numbers(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json(path, {"loss": math.nan, "matrix": [[1.0, math.inf]], "nested": {"x": -math.inf}, "ok": 2.5})

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=no_constants) == {
        "loss": None,
        "matrix": [[1.0, None]],
        "nested": {"x": None},
        "ok": 2.5,
    }


def test_the_reason_is_unwrapped_from_ray_and_ray_train_errors() -> None:
    broken = ModelFileError("/models/m/config.json: not valid JSON (Expecting value: line 1 column 40)")
    train_error = WorkerGroupError("Training failed due to worker errors", {0: broken})
    wrapped = RayTaskError("sweep_trial", "Traceback (most recent call last): ...", train_error).as_instanceof_cause()
    failure = TrialFailure.of(wrapped, "Failure # 1\nTraceback ...\nlong text")
    assert failure.reason == "ModelFileError: /models/m/config.json: not valid JSON (Expecting value: line 1 column 40)"
    assert failure.diverged_step is None and failure.traceback.startswith("Failure # 1")

    diverged = RayTaskError("sweep_trial", "Traceback ...", TrialDiverged(divergence(None))).as_instanceof_cause()
    assert TrialFailure.of(diverged, "") == TrialFailure(
        "diverged at step 12 (stage 2): the loss is not finite", "", 12
    )
    # No pickled error (Tune could not pickle it): the last line of Tune's text.
    assert TrialFailure.of(None, "Traceback ...\n  File x\nKeyError: 'lr'\n").reason == "KeyError: 'lr'"


@pytest.mark.parametrize("diverged", [False, True], ids=["error", "diverged"])
def test_a_failed_trial_keeps_its_reason_in_optuna_mlflow_and_its_folder(tmp_path: Path, diverged: bool) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    space = load_space(path)
    study = optuna.create_study(directions=space.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    searcher = OptunaSearcher(study, space, interrupted=[], defaults={})
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", space, tmp_path / "artifacts")
    tracker.open_parent({})
    progress = ProgressTable(space, Console(file=io.StringIO()))
    recorder = FailureRecorder(searcher, tracker, progress, tmp_path / "trials")

    assignment = TrialAssignment.model_validate(searcher.suggest("tune-1"))
    trial = SimpleNamespace(trial_id="tune-1", config=assignment.model_dump(mode="json"))
    tracker.open_child(assignment)
    progress.on_trial_start(0, [], trial)
    cause = TrialDiverged(divergence(None)) if diverged else ValueError("bad batch\nsecond line")
    error = RayTaskError("sweep_trial", "Traceback ...", cause).as_instanceof_cause()
    # What Tune writes in the trial's local folder before it calls the callbacks.
    trial.pickled_error_file, trial.error_file = str(tmp_path / "error.pkl"), str(tmp_path / "error.txt")
    Path(trial.pickled_error_file).write_bytes(cloudpickle.dumps(error))
    Path(trial.error_file).write_text(f"Failure # 1\n{error}")
    # Tune's order: the searcher hears of the error first, then the callbacks.
    searcher.on_trial_complete("tune-1", error=True)
    recorder.on_trial_error(0, [], trial)

    reason = "diverged at step 12 (stage 2): the loss is not finite" if diverged else "ValueError: bad batch"
    error_file = tmp_path / "trials" / assignment.key / Artifacts.ERROR
    assert error_file.read_text().startswith("Failure # 1")
    frozen = study.trials[0]
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert frozen.user_attrs[Tags.FAILURE] == reason and frozen.user_attrs[ERROR_FILE_ATTR] == str(error_file)
    assert frozen.user_attrs.get(Tags.DIVERGED) == (12 if diverged else None)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(tracker.child(assignment.key))
    assert run.info.status == "FAILED" and run.data.tags[Tags.FAILURE] == reason
    assert run.data.tags.get(Tags.DIVERGED) == ("12" if diverged else None)
    assert Artifacts.ERROR in {item.path for item in client.list_artifacts(run.info.run_id)}
    assert progress.rows[assignment.key].state == ("diverged" if diverged else "failed")


def test_raycl_sweep_exits_non_zero_when_no_trial_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import raycl.sweep
    from raycl.cli import app

    outcome = SimpleNamespace(completed=0, failed=2, unfinished=0)
    monkeypatch.setattr(raycl.sweep, "run_sweep", lambda *args, **kwargs: outcome)
    result = CliRunner().invoke(app, ["sweep", "smoke"])
    assert result.exit_code == 1 and "no trial completed (2 failed" in result.output
    outcome.completed = 1
    assert CliRunner().invoke(app, ["sweep", "smoke"]).exit_code == 0
    outcome.unfinished = 1
    assert CliRunner().invoke(app, ["sweep", "smoke"]).exit_code == 130
