"""The LR range test's reading of a ramp: baseline, consecutive points, log-LR interpolation, fallback."""

from __future__ import annotations

import math

import pytest

from raycl.training.lr_range import RangeSettings, lr_at_drop, lr_grid, ramp_diverged

LRS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def test_a_drop_is_interpolated_on_log_lr_between_the_points_around_its_threshold() -> None:
    # Baseline 10: a 10% drop is 9.0, crossed halfway (in loss) between 1e-3 (9.5) and 1e-2 (8.5).
    lr = lr_at_drop(LRS, [10.0, 9.5, 9.5, 8.5, 8.0], baseline=10.0, drop=0.1, burn_in=1, consecutive=2)
    assert lr == pytest.approx(10**-2.5)


def test_a_single_dip_below_the_threshold_does_not_count() -> None:
    losses = [10.0, 8.0, 9.8, 8.9, 8.9]
    assert lr_at_drop(LRS, losses, baseline=10.0, drop=0.1, burn_in=1, consecutive=2) == pytest.approx(
        10 ** (-3 + 0.8 / 0.9)
    )
    assert lr_at_drop(LRS, losses, baseline=10.0, drop=0.1, burn_in=1, consecutive=3) is None


def test_burn_in_points_are_never_a_drop_and_a_drop_never_held_has_no_lr() -> None:
    assert lr_at_drop(LRS, [8.0, 8.0, 8.0, 8.0, 8.0], baseline=10.0, drop=0.1, burn_in=2, consecutive=2) == LRS[2]
    # A diverged point (None) breaks a run; a ramp that ends before `consecutive` points held has no LR.
    assert lr_at_drop(LRS, [10.0, 9.9, 8.0, None], baseline=10.0, drop=0.1, burn_in=1, consecutive=2) is None
    assert lr_at_drop(LRS, [10.0, 9.9, 9.8, 9.7, 9.6], baseline=10.0, drop=0.05, burn_in=1, consecutive=2) is None


def test_larger_drops_need_larger_lrs_on_a_falling_ramp() -> None:
    losses = [10.0, 9.95, 9.7, 9.2, 8.5]
    found = [lr_at_drop(LRS, losses, 10.0, drop, burn_in=1, consecutive=1) for drop in (0.01, 0.05, 0.1)]
    assert all(isinstance(lr, float) for lr in found) and found == sorted(found) and len(set(found)) == 3


def test_the_ramp_diverges_on_a_non_finite_loss_or_past_the_factor_of_its_baseline() -> None:
    assert ramp_diverged(math.nan, None, 3.0) and ramp_diverged(math.inf, 5.0, 3.0)
    assert ramp_diverged(15.1, 5.0, 3.0) and not ramp_diverged(14.9, 5.0, 3.0)
    assert not ramp_diverged(100.0, None, 3.0)  # no baseline yet, within the burn-in


def test_the_grid_is_exponential_from_min_to_max_lr() -> None:
    grid = lr_grid(RangeSettings(min_lr=1e-4, max_lr=1e-1, points=4))
    assert grid == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
