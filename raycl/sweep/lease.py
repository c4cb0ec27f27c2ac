"""Which driver owns a running trial of a shared study: Optuna's heartbeat, held in the study's storage.

Several drivers may work on one study (one database, different out roots). Each records a heartbeat
for every trial it runs, every `HEARTBEAT_INTERVAL_S`, in the storage's own heartbeat table (with the
database's clock). A RUNNING trial belongs to a dead driver, and may be continued, when
- it was started from this driver's folder, whose lock this driver holds; or
- its heartbeat is older than `GRACE_PERIOD_S`; or
- it never got its driver's mark (`OUT_DIR_ATTR`) and started longer ago than that.
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
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60  # six missed beats: a busy driver is not mistaken for a dead one
OUT_DIR_ATTR = "raycl.out_dir"  # the folder (and so the lock) of the driver that started the trial



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


def _heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    """The study's storage if it keeps heartbeats (an RDBStorage opened with `heartbeat_options`)."""
    storage = study._storage
    return storage if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage) else None


def beat(study: optuna.Study, trial_ids: Iterable[int]) -> None:
    """Record that this driver still runs these trials (a no-op on storages without heartbeats)."""
    if storage := _heartbeat_storage(study):
        for trial_id in trial_ids:
            storage.record_heartbeat(trial_id)


def claim(study: optuna.Study, trial: optuna.trial.Trial, out_dir: Path | None) -> None:
    """Mark a trial this driver just asked for (or took over) as its own."""
    beat(study, [trial._trial_id])
    if out_dir is not None:
        trial.set_user_attr(OUT_DIR_ATTR, str(out_dir))


def orphaned(study: optuna.Study, out_dir: Path) -> list[FrozenTrial]:
    """RUNNING trials whose driver is gone (the rules in the module docstring)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale: set[int] = set()
    if storage := _heartbeat_storage(study):
        # Optuna's own staleness test (database clock, grace period), without failing the trials
        # as optuna.storages.fail_stale_trials would: their numbers and checkpoints carry on.
        stale = set(storage._get_stale_trial_ids(study._study_id))
    unmarked_before = datetime.now() - timedelta(seconds=GRACE_PERIOD_S)
    return [
        trial for trial in running
        if trial.user_attrs.get(OUT_DIR_ATTR) == str(out_dir)
        or trial._trial_id in stale
        or (OUT_DIR_ATTR not in trial.user_attrs and trial.datetime_start is not None and trial.datetime_start < unmarked_before)
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
