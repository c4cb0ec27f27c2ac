"""An impossible resource request fails before the sweep creates anything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from raycl.config import ConfigError
from raycl.config.space import SHIPPED_DIR, load_space
from raycl.sweep import run_sweep
from raycl.sweep.plan import check_fits_locally


def smoke_with_budget(tmp_path: Path, **budget: object) -> Path:
    space = yaml.safe_load((SHIPPED_DIR / "smoke.yaml").read_text())
    space["budget"] |= budget
    path = tmp_path / "greedy.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def test_a_trial_larger_than_the_machine_fails_before_any_study_run_or_folder(tmp_path: Path) -> None:
    space = smoke_with_budget(tmp_path, cpus_per_worker=64)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        run_sweep(space, out_root=tmp_path / "runs", num_cpus=2)
    assert time.perf_counter() - started < 5
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{space}: budget: one trial needs 1 worker(s) x (64 CPU")
    assert "the cluster has 2 CPUs" in message
    assert not (tmp_path / "runs").exists()


def test_without_num_cpus_the_machine_s_cores_are_counted(tmp_path: Path) -> None:
    space = smoke_with_budget(tmp_path, cpus_per_worker=4096)
    with pytest.raises(ConfigError, match=f"the cluster has {os.cpu_count()} CPUs"):
        run_sweep(space, out_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_what_fits_passes_and_gpus_are_counted(tmp_path: Path) -> None:
    budget = load_space(smoke_with_budget(tmp_path)).budget
    check_fits_locally(budget, cpus=2, gpus=0)
    with pytest.raises(ValueError, match="0 GPUs"):
        check_fits_locally(budget.model_copy(update={"gpus_per_worker": 1.0}), cpus=2, gpus=0)
