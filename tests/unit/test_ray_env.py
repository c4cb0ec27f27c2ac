"""What a sweep hands Ray when it connects: no secret in the runtime env (Ray logs it in clear), and
a local Ray confined to the loopback interface (Ray's `init` is replaced by a recorder); and where Ray's
and MLflow's own log lines go."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import pytest
import ray
from ray._private import ray_constants

from raycl.sweep import ray_session


@pytest.fixture()
def init_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []

    def record(**kwargs) -> None:
        calls.append(
            kwargs
            | {
                "env": dict(os.environ),
                "clusters_enabled": ray_constants.ENABLE_RAY_CLUSTER,
            }
        )

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


def test_library_log_lines_go_to_the_log_file_and_the_handlers_come_back(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    names = ("ray", "mlflow", "py.warnings")
    before = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate) for name in names}
    log_file = tmp_path / "sweep.log"
    with ray_session.library_logs(log_file, verbose=False):
        logging.getLogger("ray.tune.execution.experiment_state").warning("snapshotting triggered")
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        warnings.warn("a library's deprecation notice", UserWarning, stacklevel=1)
    out, err = capfd.readouterr()
    assert out + err == ""
    assert all(
        line in log_file.read_text() for line in ("snapshotting triggered", "Creating initial", "deprecation notice")
    )
    assert {name: (logging.getLogger(name).handlers, logging.getLogger(name).propagate) for name in names} == before


def test_verbose_leaves_library_log_lines_to_the_libraries_own_handlers(tmp_path: Path) -> None:
    ray_logger = logging.getLogger("ray")
    handlers = ray_logger.handlers[:]
    with ray_session.library_logs(tmp_path / "sweep.log", verbose=True):
        assert handlers and ray_logger.handlers == handlers
        logging.getLogger("ray.tune.execution.experiment_state").warning("snapshotting triggered")
    assert not (tmp_path / "sweep.log").exists()
