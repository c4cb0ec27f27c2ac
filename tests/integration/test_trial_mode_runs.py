"""End to end on the offline world: the LR range test, trials at a loss drop, stop rules, online ingestion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raycl.config import TrialConfig
from raycl.training.trial import run_trial

pytestmark = pytest.mark.slow

SMALL = {
    "world": {"num_stages": 2},
    "train": {"steps_per_stage": 20},
    "eval": {"max_examples": 32, "benchmarks": {"tasks": []}},
}


def raycl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raycl.cli", *args], capture_output=True, text=True, timeout=600)


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_lr_range_finds_lrs_that_grow_with_the_drop_and_is_cached(tmp_path: Path) -> None:
    done = raycl("lr-range", "--out", str(tmp_path / "range"))
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "range" / "lr_range.json").read_text())
    assert len(record["lrs"]) == len(record["new_losses"]) == len(record["base_losses"]) >= 10
    assert record["lrs"] == sorted(record["lrs"]) and record["baseline_loss"] > 0
    targets = record["targets"]
    assert set(targets) == {"0.01", "0.05", "0.1"}
    assert (
        isinstance(targets["0.01"], float) and isinstance(targets["0.05"], float) and targets["0.01"] < targets["0.05"]
    )
    assert targets["0.1"] is None or targets["0.05"] < targets["0.1"]
    # Where the new-data loss has fallen 5%, the loss on what was known has not fallen.
    at_drop = next(i for i, lr in enumerate(record["lrs"]) if lr >= targets["0.05"])
    assert record["base_losses"][at_drop] >= record["base_losses"][0] - 0.01
    assert (tmp_path / "range" / "lr_range.png").stat().st_size > 10_000
    again = raycl("lr-range", "--out", str(tmp_path / "again"))
    assert again.returncode == 0 and json.loads((tmp_path / "again" / "lr_range.json").read_text()) == record


def test_a_trial_at_a_loss_drop_trains_at_the_range_tests_lr(tmp_path: Path) -> None:
    config = write_config(tmp_path / "drop.yaml", SMALL | {"train": {"steps_per_stage": 20, "lr_at_loss_drop": 0.05}})
    assert raycl("lr-range", str(config), "--out", str(tmp_path / "range")).returncode == 0
    done = raycl("run", str(config), "--out", str(tmp_path / "trial"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "trial" / "result.json").read_text())
    found = json.loads((tmp_path / "range" / "lr_range.json").read_text())["targets"]["0.05"]
    assert result["config"]["train"]["lr"] == found == result["lr"] == result["lr_range"]["lr"]
    assert result["config"]["train"]["lr_at_loss_drop"] is None and result["lr_range"]["loss_drop"] == 0.05

    # No LR of the range holds a 90% drop: the trial stops before training, in one line.
    unreachable = write_config(
        tmp_path / "far.yaml", SMALL | {"train": {"steps_per_stage": 20, "lr_at_loss_drop": 0.9}}
    )
    done = raycl("run", str(unreachable), "--out", str(tmp_path / "far"))
    line = " ".join(done.stdout.split())
    assert (
        done.returncode == 2
        and "train.lr_at_loss_drop: 0.9: the LR range test of raycl-tiny-s on stage astronomy never held a 90.0% drop"
        in line
    )
    assert not (tmp_path / "far" / "checkpoints").exists()


def test_stop_when_ends_the_stream_and_says_why_also_after_a_resume(tmp_path: Path) -> None:
    config = TrialConfig.model_validate(SMALL | {"world": {"num_stages": 3}}).with_overrides(
        {"train.stop_when": {"metric": "learning", "at_least": 0.01}}
    )
    result = run_trial(config, tmp_path)
    assert result.stopped is not None
    assert result.stopped.startswith("train.stop_when: learning = ")
    assert result.stopped.endswith(">= 0.01 after stage 1 of 3")
    assert len(result.stage_matrix) == 2 and result.stage_names == ["astronomy"] and result.learning > 0.01
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["stage_000"]
    resumed = run_trial(config, tmp_path)
    assert resumed.resumed_after_stage == 1 and resumed.stopped == result.stopped
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["stage_000"]


def test_raycl_run_online_sees_every_example_once_and_reports_adaptation_steps(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "online.yaml",
        {
            "world": {"num_stages": 2},
            "train": {"online": True, "lr": 3e-3, "examples_per_stage": 40},
            "eval": {"every_steps": 10, "max_examples": 32, "benchmarks": {"tasks": []}},
        },
    )
    done = raycl("run", str(config), "--out", str(tmp_path / "online"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "online" / "result.json").read_text())
    assert result["new_tokens"] == 2 * 40 * 128  # two stages, 40 blocks each, once, one a step
    assert len(result["adaptation_steps"]) == 2 and all(0 < steps <= 40 for steps in result["adaptation_steps"])
    assert result["adaptation_steps_mean"] == sum(result["adaptation_steps"]) / 2
    assert [(point["stage_index"], point["stage_step"]) for point in result["curves"]] == [
        (s, k) for s in (0, 1) for k in (10, 20, 30)
    ]


@pytest.mark.parametrize("slope", [0.5, -0.5])
def test_layer_lr_slope_moves_the_later_layers_more_or_less(tmp_path: Path, slope: float) -> None:
    config = TrialConfig.model_validate(SMALL).with_overrides(
        {"train.steps_per_stage": 10, "train.lr": 3e-3, "train.layer_lr_slope": slope}
    )
    drift = run_trial(config, tmp_path).drift
    # Equal LRs move the three layers of raycl-tiny-s alike (0.20, 0.17, 0.17); the slope orders them by depth.
    assert (drift["layer_02"] > 1.5 * drift["layer_00"]) if slope > 0 else (drift["layer_00"] > 1.5 * drift["layer_02"])


def test_more_examples_per_stage_learn_more_and_count_as_new_tokens(tmp_path: Path) -> None:
    results = {}
    for examples in (8, 64):
        config = TrialConfig.model_validate(SMALL).with_overrides(
            {"train": {"lr": 1e-3, "batch_size": 8, "warmup_steps": 0, "examples_per_stage": examples}}
        )
        results[examples] = run_trial(config, tmp_path / str(examples))
    assert [results[n].new_tokens for n in (8, 64)] == [8 * 128 * 2, 64 * 128 * 2]  # each block once, two stages
    assert results[64].learning > results[8].learning + 0.1 and results[64].forgetting > results[8].forgetting
