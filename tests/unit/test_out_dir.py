"""An out folder belongs to one trial config: what `check_out_dir` lets resume and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raycl.config import TrialConfig
from raycl.training.checkpoint import (
    CONFIG_RECORD,
    PROGRESS,
    ForeignOutDir,
    check_out_dir,
    claim_out_dir,
    config_hash,
    stage_checkpoint_dir,
)

BASE = TrialConfig()


def finished_folder(path: Path, config: TrialConfig) -> Path:
    claim_out_dir(path, config)
    (path / "result.json").write_text("{}")
    return path


def test_a_fresh_or_empty_folder_passes(tmp_path: Path) -> None:
    check_out_dir(tmp_path / "absent", BASE)
    claim_out_dir(tmp_path / "started", BASE)  # a trial stopped before its first checkpoint or result
    check_out_dir(tmp_path / "started", BASE.with_overrides({"train.lr": 1e-3}))


def test_the_same_config_resumes_and_where_it_runs_does_not_matter(tmp_path: Path) -> None:
    folder = finished_folder(tmp_path / "trial", BASE)
    check_out_dir(folder, BASE)
    check_out_dir(folder, BASE.with_overrides({"train.cpu_threads": 2, "train.device": "cpu"}))
    assert config_hash(BASE) == config_hash(BASE.with_overrides({"train.cpu_threads": 4}))


def test_another_config_is_refused_naming_the_first_differing_key(tmp_path: Path) -> None:
    folder = finished_folder(tmp_path / "trial", BASE)
    with pytest.raises(ForeignOutDir) as refused:
        check_out_dir(folder, BASE.with_overrides({"train.lr": 1e-3}))
    message = str(refused.value)
    assert "\n" not in message and str(folder) in message
    assert "train.lr: 0.0003 there, 0.001 now" in message and "delete this one" in message
    with pytest.raises(ForeignOutDir, match=r"world\.seed: 0 there, 7 now"):
        check_out_dir(folder, BASE.with_overrides({"world.seed": 7}))
    with pytest.raises(ForeignOutDir, match=r"method\.name: full there, lora now"):
        check_out_dir(folder, BASE.with_overrides({"method.name": "lora"}))


def test_a_checkpoint_without_the_folder_record_is_checked_by_its_own_hash(tmp_path: Path) -> None:
    """A stage checkpoint restored from a sweep's storage into an empty folder carries the config and its hash."""
    checkpoint = stage_checkpoint_dir(tmp_path, 0)
    checkpoint.mkdir(parents=True)
    progress = {"config": BASE.model_dump(mode="json"), "config_hash": config_hash(BASE), "stages_done": 1}
    (checkpoint / PROGRESS).write_text(json.dumps(progress))
    assert not (tmp_path / CONFIG_RECORD).exists()
    check_out_dir(tmp_path, BASE)
    with pytest.raises(ForeignOutDir, match=r"train\.steps_per_stage: 100 there, 7 now"):
        check_out_dir(tmp_path, BASE.with_overrides({"train.steps_per_stage": 7}))


def test_a_sweep_trial_folder_of_another_config_is_refused_before_its_result_is_used(tmp_path: Path) -> None:
    """A sweep of the same name rerun after its study was deleted finds the old trial folders: t0000 must not
    hand back the old trial's sweep_result.json as its own."""
    from raycl.config.records import TrialAssignment
    from raycl.config.space import SHIPPED_DIR, load_space
    from raycl.sweep.plan import NodeCapacity, plan_resources
    from raycl.sweep.trainable import Replicate, TrialContext, run_replicate

    folder = finished_folder(tmp_path / "trials" / "t0000", BASE)
    (folder / "sweep_result.json").write_text("{}")
    plan = plan_resources(load_space(SHIPPED_DIR / "smoke.yaml").budget, [NodeCapacity("local", 2.0)])
    context = TrialContext(
        sweep="smoke",
        trials_dir=str(tmp_path / "trials"),
        train_storage=str(tmp_path / "train"),
        tune_storage=str(tmp_path / "tune"),
        plan=plan,
        max_failures=0,
    )
    assignment = TrialAssignment.create(0, {"train.lr": 1e-3}, BASE.with_overrides({"train.lr": 1e-3}))
    with pytest.raises(ForeignOutDir, match=r"t0000: holds a trial of another config \(train\.lr: 0\.0003 there"):
        run_replicate(Replicate(assignment, folder, 0, "t0000"), context)
