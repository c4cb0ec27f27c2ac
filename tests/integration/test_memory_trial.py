"""Trials with per-layer updates: stopped between stages, they resume to the same metrics; and every
trial's result carries the memory of its measured step."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils._python_dispatch import _get_current_dispatch_mode

from raycl.config import TrialConfig
from raycl.config.result import EvalRecord, TrialDiverged
from raycl.training.trial import run_trial

pytestmark = pytest.mark.slow

SMALL = {"world": {"num_stages": 2}, "train": {"steps_per_stage": 25}, "eval": {"benchmarks": {"tasks": []}}}


class Stopped(Exception):
    pass


def stop_at_first_checkpoint(record: EvalRecord, checkpoint: Path | None) -> None:
    """Called right after the stage-1 checkpoint is written: stopping here is a kill between stages."""
    if checkpoint is not None:
        raise Stopped


@pytest.mark.parametrize(
    "method",
    [
        {"name": "galore", "galore_update_proj_gap": 10, "per_layer_updates": True},
        {"name": "full", "per_layer_updates": True},
    ],
    ids=["galore", "adamw"],
)
def test_per_layer_trial_stopped_between_stages_resumes_to_identical_metrics(tmp_path: Path, method: dict) -> None:
    config = TrialConfig.model_validate({**SMALL, "method": method})
    with pytest.raises(Stopped):
        run_trial(config, tmp_path / "stopped", report=stop_at_first_checkpoint)
    assert not (tmp_path / "stopped" / "result.json").exists()

    resumed = run_trial(config, tmp_path / "stopped")
    whole = run_trial(config, tmp_path / "whole")
    assert resumed.resumed_after_stage == 1 and whole.resumed_after_stage == 0
    for key in (
        "stage_matrix",
        "retention_losses",
        "learning",
        "forgetting",
        "bwt",
        "fwt",
        "drift",
        "optimizer_state_bytes",
        "train_peak_bytes",
        "train_memory",
    ):
        assert getattr(resumed, key) == getattr(whole, key), key


def test_result_reports_the_measured_steps_memory_by_part(tmp_path: Path) -> None:
    ordinary = run_trial(TrialConfig.model_validate({**SMALL, "method": {"name": "galore"}}), tmp_path / "ordinary")
    per_layer = run_trial(
        TrialConfig.model_validate({**SMALL, "method": {"name": "galore", "per_layer_updates": True}}),
        tmp_path / "per_layer",
    )
    for result in (ordinary, per_layer):
        parts = result.train_memory
        assert result.train_peak_bytes == sum(parts.values()) > 0
        # fp32 weights, plus the rotary embedding's small buffer.
        assert 4 * result.num_params <= parts["weights"] < 4 * result.num_params + 2**12
    assert per_layer.train_memory["optimizer_state"] == ordinary.train_memory["optimizer_state"]
    assert per_layer.train_peak_bytes <= ordinary.train_peak_bytes


def test_a_trial_that_diverges_on_its_measured_step_leaves_no_tracker_behind(tmp_path: Path) -> None:
    # A huge learning rate without warm-up makes the second step, the measured one, diverge.
    config = TrialConfig.model_validate(SMALL).with_overrides(
        {"train.lr": 0.5, "train.warmup_steps": 0, "train.divergence_factor": 1.01}
    )
    with pytest.raises(TrialDiverged) as diverged:
        run_trial(config, tmp_path / "diverged")
    assert diverged.value.divergence.step == 2
    assert _get_current_dispatch_mode() is None  # a reused worker trains its next trial untracked
