"""Forgetting mitigation on the offline world, at a learning rate high enough to forget."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raycl.config import TrialConfig
from raycl.config.result import TrialResult
from raycl.training.trial import run_trial

pytestmark = pytest.mark.slow

FORGETFUL = TrialConfig.model_validate(
    {"world": {"num_stages": 2}, "train": {"steps_per_stage": 40, "lr": 3e-3}, "eval": {"benchmarks": {"tasks": []}}}
)


def forgetting(tmp_path: Path, **overrides) -> TrialResult:
    return run_trial(FORGETFUL.with_overrides(overrides), tmp_path / str(len(list(tmp_path.iterdir()))))


def test_more_replay_forgets_less(tmp_path: Path) -> None:
    none = forgetting(tmp_path)
    quarter = forgetting(tmp_path, **{"replay.ratio": 0.25})
    half = forgetting(tmp_path, **{"replay.ratio": 0.5})
    assert none.forgetting > quarter.forgetting > half.forgetting
    assert none.forgetting > 1.0
    assert half.learning > 0.5  # replay does not stop the learning


def test_self_generated_replay_with_kl_halves_forgetting(tmp_path: Path) -> None:
    none = forgetting(tmp_path)
    kl = forgetting(tmp_path, **{"replay.ratio": 0.25, "replay.source": "self_generated", "replay.loss": "kl"})
    assert kl.forgetting < none.forgetting / 2
    assert 0 < kl.replay_generation_fraction < 0.5


def test_replayed_trial_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    config = FORGETFUL.with_overrides(
        {"replay.ratio": 0.25, "replay.source": "self_generated", "replay.regenerate_every": 15, "ewc.weight": 10.0}
    )
    whole = run_trial(config, tmp_path / "whole")
    # Simulate a crash after the first stage: keep only its checkpoint, then rerun.
    run_trial(config, tmp_path / "crashed")
    (tmp_path / "crashed" / "result.json").unlink()
    shutil.rmtree(tmp_path / "crashed" / "checkpoints" / "stage_001")
    resumed = run_trial(config, tmp_path / "crashed")
    assert resumed.resumed_after_stage == 1
    for row_resumed, row_whole in zip(resumed.stage_matrix, whole.stage_matrix):
        assert row_resumed == pytest.approx(row_whole, abs=1e-6)
    assert resumed.forgetting == pytest.approx(whole.forgetting, abs=1e-6)
