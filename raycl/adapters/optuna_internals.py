"""Optuna internals used by raycl's study and trial leases."""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, Trial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study was opened on.

    Public API: none; `optuna.delete_study` and the heartbeat calls below want the storage object, and a
    `Study` keeps it only as `_storage`.
    """
    return study._storage


def trial_id(trial: Trial | FrozenTrial) -> int:
    """A trial's id in its storage (unique across studies; `number` counts within one study).

    Public API: none; storage calls (heartbeats, stale trials) take this id and trials keep it as `_trial_id`.
    """
    return trial._trial_id


def reopen(study: optuna.Study, trial: FrozenTrial) -> Trial:
    """A live `Trial` for a RUNNING trial of `study`, to suggest (its stored values come back) and tell.

    Public API: `study.ask()` only creates new trials; continuing one a dead driver left RUNNING under
    its own number and parameters needs the `Trial(study, trial_id)` constructor Optuna documents as internal.
    """
    return Trial(study, trial_id(trial))


def _heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    """The study's storage if it keeps heartbeats (an RDBStorage opened with `heartbeat_interval`)."""
    storage = storage_of(study)
    return storage if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage) else None


def record_heartbeats(study: optuna.Study, trial_ids: Iterable[int]) -> None:
    """Record a heartbeat for each trial (by storage id); a no-op on storages without heartbeats.

    Public API: `Study.optimize` records heartbeats for the trials it runs itself, through the
    private `optuna.storages._heartbeat.BaseHeartbeat`; raycl asks and tells outside `optimize`.
    """
    if storage := _heartbeat_storage(study):
        for identifier in trial_ids:
            storage.record_heartbeat(identifier)


def stale_trial_ids(study: optuna.Study) -> set[int]:
    """Storage ids of the study's RUNNING trials whose heartbeat is older than the grace period
    (the database's clock); empty on storages without heartbeats.

    Public API: `optuna.storages.fail_stale_trials` runs the same test but also fails those trials,
    where raycl continues them under their numbers and checkpoints.
    """
    storage = _heartbeat_storage(study)
    return set(storage._get_stale_trial_ids(study._study_id)) if storage else set()
