"""What a sweep hands Ray when it connects: no secret in the runtime env (Ray logs it in clear), and
a local Ray confined to the loopback interface. Ray's `init` is replaced by a recorder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import ray
from ray._private import ray_constants

from raycl.sweep import ray_session


@pytest.fixture()
def init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []

    def record(**kwargs) -> None:
        calls.append(kwargs | {
            "env": dict(os.environ),
            "clusters_enabled": ray_constants.ENABLE_RAY_CLUSTER,
        })

    monkeypatch.setattr(ray, "init", record)
    monkeypatch.setenv("HF_TOKEN", "hf_planted0123456789")
    monkeypatch.setenv("HF_HOME", "/data/hf")
    return calls


def test_a_cluster_gets_no_secret_through_the_runtime_env(init_calls: list[dict], tmp_path: Path) -> None:
    assert ray_session.connect("10.0.0.5:6379", None, False, tmp_path) is None
    forwarded = init_calls[0]["runtime_env"]["env_vars"]
    assert forwarded["HF_HOME"] == "/data/hf" and "HF_TOKEN" not in forwarded
    assert set(ray_session.TRAIN_ENV) <= set(forwarded)


def test_a_local_ray_inherits_the_environment_and_binds_to_loopback(init_calls: list[dict], tmp_path: Path) -> None:
    temp_dir = ray_session.connect(None, 2, False, tmp_path)
    try:
        call = init_calls[0]
        assert "runtime_env" not in call  # nothing for Ray to log: its processes inherit the environment
        assert call["env"]["HF_TOKEN"] == "hf_planted0123456789" and set(ray_session.TRAIN_ENV) <= set(call["env"])
        assert call["env"][ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] == "0" and call["clusters_enabled"] is False
        assert ray_constants.ENABLE_RAY_CLUSTER is True and ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR not in os.environ
        assert (tmp_path / ray_session.RAY_TEMP_RECORD).read_text() == temp_dir == call["_temp_dir"]
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
