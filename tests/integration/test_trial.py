"""End-to-end trials on the offline world: the real CLI, real pretraining, real checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from raycl.artifacts.hub import HubUnavailableError
from raycl.config import ModelConfig, TrialConfig
from raycl.models.loading import load_base_model
from raycl.training.trial import run_trial
from raycl.world.offline import load_world

pytestmark = pytest.mark.slow

# Two stages, enough steps to move the model, small enough to run in seconds (benchmarks have their own tests).
SMALL = {"world": {"num_stages": 2}, "train": {"steps_per_stage": 25}, "eval": {"benchmarks": {"tasks": []}}}


def small_config(**overrides) -> TrialConfig:
    return TrialConfig.model_validate(SMALL).with_overrides(overrides)


def raycl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raycl.cli", *args], capture_output=True, text=True, timeout=600)


def test_default_run_learns_and_writes_its_result(tmp_path: Path) -> None:
    done = raycl("run", "--out", str(tmp_path / "trial"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "trial" / "result.json").read_text())
    for key in (
        "learning",
        "forgetting",
        "stage_matrix",
        "bwt",
        "fwt",
        "tokens_per_s",
        "peak_memory_bytes",
        "optimizer_state_bytes",
        "eval_time_fraction",
        "config",
    ):
        assert key in result
    assert result["learning"] >= 0.15
    assert len(result["stage_matrix"]) == 4 and all(len(row) == 3 for row in result["stage_matrix"])
    assert result["config"] == TrialConfig().model_dump(mode="json")
    assert sorted(p.name for p in (tmp_path / "trial" / "checkpoints").iterdir()) == [
        "stage_000",
        "stage_001",
        "stage_002",
    ]
    assert "learning" in done.stdout and "forgetting" in done.stdout
    # Off a terminal (a pipe here): one line per evaluation, step 0's, every quick one and every stage end's.
    lines = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 1 + len(result["curves"]) + 3
    assert "base model evaluated" in lines[0]
    assert sum(" done, " in line and "tokens/s" in line and "ETA" in line for line in lines) == 3
    assert result["dtype"] == "fp32" and result["device"] == "cpu" and result["cpu_threads"] == 1


def test_bad_config_fails_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 3\n")
    done = raycl("run", str(path), "--out", str(tmp_path / "never"))
    assert done.returncode == 2
    assert f"{path}: train.epochs: unknown key" in " ".join(done.stdout.split())
    assert not (tmp_path / "never").exists()


def test_learning_rate_moves_the_trade_off(tmp_path: Path) -> None:
    high = run_trial(small_config(**{"train.lr": 3e-3}), tmp_path / "high")
    tiny = run_trial(small_config(**{"train.lr": 1e-6}), tmp_path / "tiny")
    assert high.forgetting > 1.0
    assert abs(tiny.forgetting) < 0.02
    assert abs(tiny.learning) < 0.05
    assert high.learning > 0.5


def test_killed_trial_resumes_from_its_stage_checkpoint_with_the_same_metrics(tmp_path: Path) -> None:
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "method": {"name": "galore", "galore_update_proj_gap": 10}}))
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "raycl.cli", "run", str(config), "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "stage_000").exists():
        assert process.poll() is None and time.monotonic() < deadline, "trial ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists(), "killed too late: the trial had finished"

    resumed = raycl("run", str(config), "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = raycl("run", str(config), "--out", str(tmp_path / "whole"))
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    after_kill = json.loads((killed / "result.json").read_text())
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert after_kill["resumed_after_stage"] == 1 and whole["resumed_after_stage"] == 0
    for key in ("stage_matrix", "retention_losses", "learning", "forgetting", "bwt", "fwt"):
        np.testing.assert_allclose(after_kill[key], whole[key], atol=1e-6, err_msg=key)
    assert after_kill["drift"] == pytest.approx(whole["drift"], abs=1e-6)


def test_hub_models_fail_fast_offline() -> None:
    world = load_world(TrialConfig().world)
    started = time.monotonic()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_base_model(ModelConfig(name="EleutherAI/pythia-14m"), world)
    assert time.monotonic() - started < 10


def test_a_local_model_directory_loads_by_path(tmp_path: Path) -> None:
    world = load_world(TrialConfig().world)
    model, tokenizer = load_base_model(ModelConfig(), world)
    model.save_pretrained(tmp_path / "mine")
    tokenizer.save_pretrained(tmp_path / "mine")
    result = run_trial(
        small_config(**{"model.name": str(tmp_path / "mine"), "train.steps_per_stage": 2, "train.warmup_steps": 0}),
        tmp_path / "t",
    )
    assert result.num_params == sum(p.numel() for p in model.parameters())
    assert result.stage_matrix[0] == pytest.approx(
        run_trial(small_config(**{"train.steps_per_stage": 2, "train.warmup_steps": 0}), tmp_path / "u").stage_matrix[0]
    )


def test_lora_trial_reports_the_base_models_size_not_its_adapters(tmp_path: Path) -> None:
    model, _ = load_base_model(ModelConfig(), load_world(TrialConfig().world))
    quick = {"train.steps_per_stage": 2, "train.warmup_steps": 0}
    lora = run_trial(small_config(**{"method.name": "lora", **quick}), tmp_path / "lora")
    assert lora.num_params == sum(p.numel() for p in model.parameters())
    assert lora.method_info["trainable_params"] == lora.method_info["lora_adapted_params"] > 0
