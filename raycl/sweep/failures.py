"""Why a sweep trial failed, recorded where it lasts: a one-line reason on its Optuna trial (user
attr) and on its MLflow child run (tag), and the full traceback in `trials/KEY/error.txt` (also an
artifact of the child run). Tune's own error file lives in Ray's temp dir, which a sweep deletes.

A diverged trial (`TrialDiverged`) is a failure too: Optuna FAIL, so that no made-up objective values
enter the Pareto front or steer the sampler; its step is kept as `raycl.diverged`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
from ray.tune import Callback

from raycl.config.records import Artifacts, Tags, TrialAssignment
from raycl.config.result import TrialDiverged

ERROR_FILE_ATTR = "raycl.error_file"
# Attributes through which Ray and Ray Train hand on the exception they wrap.
_WRAPPED = ("cause", "worker_failures", "controller_failure", "__cause__")


@dataclass(frozen=True)
class TrialFailure:
    reason: str  # one line
    traceback: str
    diverged_step: int | None = None

    @classmethod
    def of(cls, error: BaseException | None, traceback: str) -> TrialFailure:
        root = root_cause(error) if error is not None else None
        if isinstance(root, TrialDiverged):
            return cls(str(root), traceback, root.divergence.step)
        if root is not None:
            message = _first_line(str(root))
            return cls(f"{type(root).__name__}: {message}" if message else type(root).__name__, traceback)
        lines = [line.strip() for line in traceback.splitlines() if line.strip()]
        return cls(lines[-1] if lines else "no error recorded", traceback)


def root_cause(error: BaseException) -> BaseException:
    """The exception that started it all, unwrapped from Ray's task errors and Ray Train's worker-group errors."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = next((getattr(error, name) for name in _WRAPPED if getattr(error, name, None)), None)
        if isinstance(inner, dict):  # worker_failures: rank -> exception
            inner = next(iter(inner.values()), None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def tune_error(trial: Any) -> tuple[BaseException | None, str]:
    """The exception and the error text Tune wrote for a trial, read from the trial's local folder
    (its copy in the sweep's Ray storage is synced later)."""
    error = None
    if trial.pickled_error_file and Path(trial.pickled_error_file).is_file():
        with contextlib.suppress(Exception):  # an exception class that no longer unpickles: the text still tells
            error = cloudpickle.loads(Path(trial.pickled_error_file).read_bytes())
    text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
    return error, text


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class FailureRecorder(Callback):
    """On a trial's error: write trials/KEY/error.txt, then tell Optuna (FAIL), MLflow and the live table why."""

    def __init__(self, searcher: Any, tracker: Any, progress: Any, trials_dir: Path):
        self.searcher = searcher
        self.tracker = tracker
        self.progress = progress
        self.trials_dir = Path(trials_dir)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = TrialAssignment.model_validate(trial.config).key
        failure = TrialFailure.of(*tune_error(trial))
        error_file = self.trials_dir / key / Artifacts.ERROR
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(failure.traceback or failure.reason)
        attrs: dict[str, str | int] = {Tags.FAILURE: failure.reason, ERROR_FILE_ATTR: str(error_file)}
        if failure.diverged_step is not None:
            attrs[Tags.DIVERGED] = failure.diverged_step
        self.searcher.tell_failed(trial.trial_id, attrs)
        self.tracker.log_failure(key, failure.reason, error_file, failure.diverged_step)
        state = "failed" if failure.diverged_step is None else "diverged"
        self.progress.failed(key, state, f"{failure.reason} ({error_file})")
