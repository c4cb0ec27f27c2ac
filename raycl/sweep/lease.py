"""Which driver owns a running trial of a shared study: Optuna's heartbeat, held in the study's storage.

Several drivers may work on one study (one database, different out roots). Each records a heartbeat
for every trial it runs, every `HEARTBEAT_INTERVAL_S`, in the storage's own heartbeat table (with the
database's clock). A RUNNING trial belongs to a dead driver, and may be continued, when
- it was started from this driver's folder, whose lock this driver holds; or
- its heartbeat is older than `GRACE_PERIOD_S`; or
- it never got its driver's mark (`Tags.OUT_DIR`) and started longer ago than that.
Two drivers that start within a moment of each other can still both pick up the same dead trial.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from raycl.adapters import optuna_internals
from raycl.config.records import Tags

HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60  # six missed beats: a busy driver is not mistaken for a dead one


def rdb_storage(url: str, **kwargs: Any) -> RDBStorage:
    """An `RDBStorage` with its heartbeat table on (an option Optuna still calls experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S, **kwargs)


def ask(study: optuna.Study, out_dir: Path | None) -> optuna.trial.Trial:
    """A new trial, claimed at once by this driver (`claim`)."""
    with warnings.catch_warnings():
        # Optuna expects heartbeats from Study.optimize; raycl records them itself, around ask/tell.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()
    claim(study, trial, out_dir)
    return trial


def beat(study: optuna.Study, trial_ids: Iterable[int]) -> None:
    """Record that this driver still runs these trials (a no-op on storages without heartbeats)."""
    optuna_internals.record_heartbeats(study, trial_ids)


def claim(study: optuna.Study, trial: optuna.trial.Trial, out_dir: Path | None) -> None:
    """Mark a trial this driver just asked for (or took over) as its own."""
    beat(study, [optuna_internals.trial_id(trial)])
    if out_dir is not None:
        trial.set_user_attr(Tags.OUT_DIR, str(out_dir))


def orphaned(study: optuna.Study, out_dir: Path) -> list[FrozenTrial]:
    """RUNNING trials whose driver is gone (the rules in the module docstring)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = optuna_internals.stale_trial_ids(study)
    unmarked_before = datetime.now() - timedelta(seconds=GRACE_PERIOD_S)
    return [
        trial
        for trial in running
        if trial.user_attrs.get(Tags.OUT_DIR) == str(out_dir)
        or optuna_internals.trial_id(trial) in stale
        or (
            Tags.OUT_DIR not in trial.user_attrs
            and trial.datetime_start is not None
            and trial.datetime_start < unmarked_before
        )
    ]


@contextmanager
def heartbeats(study: optuna.Study, trial_ids: Callable[[], Iterable[int]]) -> Iterator[None]:
    """While the block runs, beat for `trial_ids()` every HEARTBEAT_INTERVAL_S in a background thread."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                beat(study, list(trial_ids()))
            except Exception as error:  # a database hiccup must not end the heartbeats for good
                logging.getLogger(__name__).warning("heartbeat not recorded: %s", str(error).splitlines()[0])

    thread = threading.Thread(target=loop, name="raycl-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
