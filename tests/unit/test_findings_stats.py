"""The statistics of bench/findings.py: forgetting at a learning level, the band, the interval over world and data
seeds, and the protocol's verdict."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from findings import (  # noqa: E402
    PROTOCOL,
    Finding,
    at_level,
    at_target,
    band_values,
    busy_seconds,
    covered,
    direction_of,
    key,
    load_cache,
    seed_summary,
)

# (step, held-out new loss, held-out base loss): learning, then over-fitting past step 20.
CURVE = [[0, 5.0, 1.0], [10, 4.0, 1.5], [20, 3.0, 2.5], [30, 3.5, 3.0]]


def record(curve: list[list[float]]) -> dict:
    return {"curve": curve, "base_loss_init": math.log(512)}


def test_forgetting_is_read_where_the_new_loss_first_reaches_the_target() -> None:
    point = at_target(CURVE, 3.5, base_loss_init=math.log(512))
    assert point is not None
    # Halfway from step 10 to 20, not at step 30 where the loss comes back to 3.5.
    assert point["step"] == pytest.approx(15.0)
    assert point["forgetting"] == pytest.approx(1.0)
    assert point["forgetting_fraction"] == pytest.approx(1.0 / (math.log(512) - 1.0))
    assert at_target(CURVE, 2.9, 6.0) is None  # never reached: not extrapolated


def test_a_level_is_a_drop_from_the_trials_own_start_and_the_band_keeps_what_every_trial_reaches() -> None:
    assert at_level(record(CURVE), 1.5)["forgetting"] == pytest.approx(1.0)  # new loss 3.5, as above
    shallow = record([[0, 6.0, 2.0], [10, 5.0, 2.2]])  # starts higher, drops 1 nat at most
    runs = {"a": {(0, 0): record(CURVE)}, "b": {(0, 0): shallow}}
    assert covered(runs, [0.5, 1.0, 1.5]) == [0.5, 1.0]
    # At a 1-nat drop: a has forgotten 0.5 (step 10), b 0.2 (step 10).
    assert band_values(runs, [1.0], lambda f: f["a"] - f["b"]) == {(0, 0): [pytest.approx(0.3)]}


def test_the_interval_is_over_world_means_and_both_components_are_reported() -> None:
    per_cell = {(w, d): w + 0.1 * d for w in (0, 1, 2) for d in (0, 1, 2)}
    s = seed_summary(per_cell)
    means = [w + 0.1 for w in (0, 1, 2)]
    half = 4.3027 * np.std(means, ddof=1) / math.sqrt(3)  # t(0.975, 2) over 3 world means
    assert s["effect"] == pytest.approx(1.1)
    assert s["ci_high"] - s["effect"] == pytest.approx(half, rel=1e-4)
    assert s["sd_between_worlds"] == pytest.approx(1.0) and s["sd_within_world"] == pytest.approx(0.1)
    # One world (a real model): over the data seeds.
    one = seed_summary({(0, d): float(d) for d in (0, 1, 2)})
    assert one["ci_high"] - one["effect"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)


def finding(per_level: list[list[float]], name: str = "methods") -> Finding:
    """A finding whose world w, data seed d has value per_level[i] + small noise at level i."""
    pointwise = {(w, d): [v + 0.001 * (w + d) for v in per_level] for w in range(3) for d in range(3)}
    levels = list(range(len(per_level)))
    band = {"metric": "learning_nats", "levels": levels, "covered": levels}
    per_cell = {c: float(np.mean(v)) for c, v in pointwise.items()}
    return Finding(name, "f", "s", {}, "m", per_cell, band, pointwise)


def test_the_verdict_follows_the_protocol() -> None:
    assert PROTOCOL["findings"]["methods"]["direction"] == 1
    assert finding([0.2, 0.3]).as_json()["reproduced"] is True
    assert finding([-0.2, -0.3]).as_json()["reproduced"] is False
    # A sign change inside the band is shown even where the mean over the band is positive.
    assert finding([-0.1, 0.5]).as_json()["reproduced"] == "depends on the level"
    # Finding 3's published direction is negative.
    assert finding([-0.2, -0.3], "size").as_json()["reproduced"] is True
    row = finding([0.2, 0.3]).as_json()
    assert row["seeds"] == 3 and row["world_seeds"] == 3 and len(row["pointwise"]) == 2


def test_busy_time_counts_overlapping_trials_once_and_skips_gaps() -> None:
    assert busy_seconds([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17


def test_the_cache_finds_a_trial_recorded_under_an_older_config_key(tmp_path: Path) -> None:
    overrides = {"model.name": "raycl-tiny-s", "train.seed": 1}
    stale = json.dumps({"model": {"name": "raycl-tiny-s"}}, sort_keys=True)  # written when TrialConfig had fewer fields
    cache = tmp_path / "trials.jsonl"
    cache.write_text(json.dumps({"key": stale, "overrides": overrides, "learning": 0.5}) + "\n")
    assert load_cache(cache)[key(overrides)]["learning"] == 0.5


def test_the_direction_compared_with_a_real_model() -> None:
    # Banded: the sign of the mean pointwise difference, even where the effect (a share) has the other sign.
    assert direction_of({"pointwise": [{"effect": 0.02}, {"effect": 0.04}], "effect": -3.0}) == 1
    assert direction_of({"pointwise": None, "effect": -0.5}) == -1
    # An undefined exponent (forgetting never positive): the sign of forgetting's slope on log step.
    falling = [[0, 2.0, 3.0], [10, 1.9, 2.95], [20, 1.8, 2.9], [30, 1.7, 2.85]]
    power_law = Finding("power_law", "f", "s", {}, "m", {(0, 0): math.nan}, {}, raw={"curves": [falling]})
    assert direction_of({"pointwise": None, "effect": math.nan}, power_law) == -1
