"""The statistics of bench/findings.py: reading forgetting at a target new loss, and the t-interval."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from findings import at_target, busy_seconds, common_target, key, load_cache, t_interval  # noqa: E402

# (step, held-out new loss, held-out base loss): learning, then over-fitting past step 20.
CURVE = [[0, 5.0, 1.0], [10, 4.0, 1.5], [20, 3.0, 2.5], [30, 3.5, 3.0]]


def test_forgetting_is_read_where_the_new_loss_first_reaches_the_target() -> None:
    point = at_target(CURVE, 3.5, base_loss_init=math.log(512))
    # Halfway from step 10 to 20, not at step 30 where the loss comes back to 3.5.
    assert point["step"] == pytest.approx(15.0)
    assert point["forgetting"] == pytest.approx(1.0)
    assert point["forgetting_fraction"] == pytest.approx(1.0 / (math.log(512) - 1.0))
    assert at_target(CURVE, 6.0, 6.0)["forgetting"] == 0.0
    with pytest.raises(ValueError, match="never reaches"):
        at_target(CURVE, 2.9, 6.0)


def test_the_common_target_is_the_lowest_loss_every_curve_reaches() -> None:
    assert common_target([{"curve": CURVE}, {"curve": [[0, 5.0, 1.0], [10, 3.2, 1.1]]}]) == 3.2


def test_t_interval_over_seeds() -> None:
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    # sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732.
    assert mean == 2.0 and high - mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4) and mean - low == high - mean


def test_busy_time_counts_overlapping_trials_once_and_skips_gaps() -> None:
    assert busy_seconds([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17


def test_the_cache_finds_a_trial_recorded_under_an_older_config_key(tmp_path: Path) -> None:
    overrides = {"model.name": "raycl-tiny-s", "train.seed": 1}
    stale = json.dumps(
        {"model": {"name": "raycl-tiny-s"}}, sort_keys=True
    )  # a key written when TrialConfig had fewer fields
    cache = tmp_path / "trials.jsonl"
    cache.write_text(json.dumps({"key": stale, "overrides": overrides, "learning": 0.5}) + "\n")
    assert load_cache(cache)[key(overrides)]["learning"] == 0.5
