"""The private Ray and Optuna parts raycl relies on (raycl/adapters/), each checked on a tiny input, so that
an upgrade of the pinned versions that changes one fails here rather than in a sweep."""

from __future__ import annotations

import ast
import inspect
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from raycl.adapters import optuna_internals, ray_internals
from raycl.analysis.pareto import hypervolume


@pytest.fixture()
def heartbeat_study(tmp_path: Path) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1
        )
    return optuna.create_study(study_name="adapters", storage=storage)


def ask(study: optuna.Study) -> optuna.trial.Trial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Heartbeat of storage is supposed to be used with Study.optimize"
        return study.ask()


def test_storage_of_is_the_storage_the_study_was_opened_on(heartbeat_study: optuna.Study) -> None:
    storage = optuna_internals.storage_of(heartbeat_study)
    assert isinstance(storage, optuna.storages.BaseStorage)  # Optuna wraps an RDBStorage in a cache
    assert storage.get_study_id_from_name("adapters") == heartbeat_study._study_id


def test_trial_id_is_the_storage_id_of_live_and_frozen_trials(heartbeat_study: optuna.Study) -> None:
    first, second = ask(heartbeat_study), ask(heartbeat_study)
    storage = optuna_internals.storage_of(heartbeat_study)
    for trial in (first, second):
        assert storage.get_trial(optuna_internals.trial_id(trial)).number == trial.number
    frozen = heartbeat_study.get_trials(deepcopy=False)
    assert [optuna_internals.trial_id(t) for t in frozen] == [
        optuna_internals.trial_id(first),
        optuna_internals.trial_id(second),
    ]


def test_a_reopened_trial_gets_its_stored_values_back_and_can_be_told(heartbeat_study: optuna.Study) -> None:
    trial = ask(heartbeat_study)
    value = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    (frozen,) = heartbeat_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    reopened = optuna_internals.reopen(heartbeat_study, frozen)
    assert reopened.number == trial.number and reopened.suggest_float("lr", 1e-4, 1e-1, log=True) == value
    heartbeat_study.tell(reopened, 0.5)
    assert heartbeat_study.trials[0].state == TrialState.COMPLETE and heartbeat_study.trials[0].value == 0.5


def test_heartbeats_keep_a_trial_fresh_until_the_grace_period_passes(heartbeat_study: optuna.Study) -> None:
    trial = ask(heartbeat_study)
    identifier = optuna_internals.trial_id(trial)
    optuna_internals.record_heartbeats(heartbeat_study, [identifier])
    assert optuna_internals.stale_trial_ids(heartbeat_study) == set()
    time.sleep(2.2)  # grace period 1 s, by the database's clock
    assert optuna_internals.stale_trial_ids(heartbeat_study) == {identifier}
    optuna_internals.record_heartbeats(heartbeat_study, [identifier])
    assert optuna_internals.stale_trial_ids(heartbeat_study) == set()
    assert heartbeat_study.trials[0].state == TrialState.RUNNING  # seen stale, not failed


def test_a_storage_without_heartbeats_has_no_stale_trials() -> None:
    study = optuna.create_study()
    trial = study.ask()
    optuna_internals.record_heartbeats(study, [optuna_internals.trial_id(trial)])
    assert optuna_internals.stale_trial_ids(study) == set()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_analysis_hypervolume_equals_optunas(k: int) -> None:
    """raycl's own exact hypervolume (analysis imports no Optuna) against Optuna's private WFG code."""
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(k)
    points = rng.uniform(0, 1, size=(25, k))
    reference = np.full(k, 1.1)
    expected = compute_hypervolume(points, reference)
    assert hypervolume(points, ["minimize"] * k, reference) == pytest.approx(expected, rel=1e-12)
    # Maximized objectives are negated: the same volume seen from the other side.
    assert hypervolume(-points, ["maximize"] * k, -reference) == pytest.approx(expected, rel=1e-12)


def test_ray_init_takes_a_private_temp_dir() -> None:
    import ray

    # ray.init refuses unknown keyword arguments; `_temp_dir` is taken out of its **kwargs.
    assert 'kwargs.pop("_temp_dir"' in inspect.getsource(inspect.unwrap(ray.init))


def test_loopback_only_makes_ray_pick_the_loopback_address_and_restores_everything() -> None:
    from ray._private import ray_constants, services

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    assert variable == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before = (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(variable))
    with ray_internals.loopback_only():
        assert services.get_node_ip_address() == "127.0.0.1"
        assert os.environ[variable] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(variable)) == before


PACKAGE = Path(__file__).resolve().parents[2] / "raycl"
# Spellings of the private Ray/Optuna parts above; outside raycl/adapters/ none may appear.
PRIVATE = re.compile(
    r"\b(?:ray|optuna)(?:\.\w+)*\._|\._(?:storage|trial_id|study_id|get_stale_trial_ids)\b|\b_temp_dir="
)


def test_private_ray_and_optuna_parts_are_touched_only_in_the_adapters() -> None:
    touches = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if "adapters" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert touches == []


def test_the_adapters_import_nothing_from_raycl() -> None:
    for path in (PACKAGE / "adapters").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("raycl"), path
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("raycl") for alias in node.names), path


def test_tune_no_longer_forwards_aws_credentials_to_its_trial_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.tune.execution import class_cache

    for name in ray_internals.TUNE_FORWARDED_CREDENTIALS:
        monkeypatch.setenv(name, "planted")
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")  # forwarded as before
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE))
    assert set(ray_internals.TUNE_FORWARDED_CREDENTIALS) <= class_cache.ENV_VARS_TO_PROPAGATE  # what Tune does
    assert ray_internals.stop_tune_forwarding_credentials() == sorted(ray_internals.TUNE_FORWARDED_CREDENTIALS)

    class Trainable:
        pass

    remote = class_cache._ActorClassCache().get(Trainable)
    env_vars = remote._default_options["runtime_env"]["env_vars"]
    assert env_vars["RAY_CHDIR_TO_TRIAL_DIR"] == "0"
    assert not set(env_vars) & set(ray_internals.TUNE_FORWARDED_CREDENTIALS)


def test_gcs_placement_group_records_still_name_their_creator() -> None:
    from ray._private.state import GlobalState
    from ray.core.generated import gcs_pb2

    fields = {field.name for field in gcs_pb2.PlacementGroupTableData.DESCRIPTOR.fields}
    assert {"placement_group_id", "creator_actor_id", "creator_actor_dead", "creator_job_id", "is_detached"} <= fields
    assert hasattr(GlobalState, "_connect_and_get_accessor")
    assert "get_placement_group_table" in inspect.getsource(GlobalState.placement_group_table)
