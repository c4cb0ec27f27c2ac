"""Trials on a CUDA device: bf16 autocast and the accelerator's memory accounting (skipped without one)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raycl.config import TrialConfig
from raycl.training.trial import run_trial

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.parametrize("method", ["full", "lora", "galore"])
def test_trial_trains_under_bf16_autocast_on_cuda(tmp_path: Path, method: str) -> None:
    config = TrialConfig.model_validate(
        {
            "world": {"num_stages": 2},
            "method": {"name": method},
            "train": {"steps_per_stage": 20, "device": "cuda", "lr": 1e-3},
            "replay": {"ratio": 0.25, "source": "self_generated", "loss": "kl"},
        }
    )
    result = run_trial(config, tmp_path / method)
    assert math.isfinite(result.learning) and result.learning > 0.1
    assert 0 < result.peak_memory_bytes < 2**30  # CUDA's own peak, not the process's RSS
    assert all(math.isfinite(loss) for row in result.stage_matrix for loss in row)


def test_per_layer_galore_reports_its_steps_memory_from_the_cuda_allocator(tmp_path: Path) -> None:
    config = TrialConfig.model_validate(
        {
            "world": {"num_stages": 1},
            "method": {"name": "galore", "per_layer_updates": True},
            "train": {"steps_per_stage": 10, "device": "cuda"},
            "eval": {"benchmarks": {"tasks": []}},
        }
    )
    result = run_trial(config, tmp_path)
    # The step's peak (this model's weights, state and allocations) within the process's peak since it was measured.
    assert 0 < result.train_peak_bytes <= result.peak_memory_bytes
    assert result.train_memory["weights"] >= 4 * result.num_params
