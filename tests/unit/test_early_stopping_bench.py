"""bench/early_stopping.py's replay of the promotion rule on recorded trials (what its design study rests on)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from raycl.config.space import EarlyStopping

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from early_stopping import (  # noqa: E402
    CANDIDATES,
    chosen,
    fit_forecast,
    front_continues,
    greedy_hypervolume_continues,
    moasha_continues,
    nsga2_continues,
    random_pruning,
    replay,
    simulate,
    stage1_rule,
)

# (learning, forgetting) of four trials, the same after every stage; each stage takes one second.
VALUES = {"t0000": [0.5, 0.5], "t0001": [0.1, 0.9], "t0002": [0.9, 0.1], "t0003": [0.05, 0.95]}
RECORDS = {
    key: {"stage_values": [values] * 4, "stage_time_s": [1.0] * 4, "final": values} for key, values in VALUES.items()
}


def test_replay_starts_trials_in_order_on_free_slots_and_ranks_them_on_arrival() -> None:
    # t0 arrives alone and goes on; t1, dominated by t0, is stopped and t2 takes its slot; t2 dominates
    # everything; t3 arrives last, when t0 has ended, and is dominated by all three.
    assert simulate(RECORDS, 2, EarlyStopping(rungs=[1], reduction=2)) == {
        "t0000": 4,
        "t0001": 1,
        "t0002": 4,
        "t0003": 1,
    }
    # At rungs 1 and 2 with reduction 4 only one of n < 5 continues: t0 (first) and t2 (best).
    assert simulate(RECORDS, 2, EarlyStopping(rungs=[1, 2], reduction=4))["t0002"] == 4


def test_replayed_ratios_count_stages_run_and_the_front_of_completed_trials() -> None:
    ratios = replay(RECORDS, np.array([0.0, 1.0]), EarlyStopping(rungs=[1], reduction=2))
    # t2, which dominates all, completed; t0 and t2 end at 4 and 5 s (t1 stopped at 1 s, t3 started then and
    # stopped at 2 s), against 8 s for all four on two slots
    assert ratios == {"hypervolume_ratio": 1.0, "compute_ratio": 10 / 16, "wall_ratio": 5 / 8}


def test_random_pruning_is_the_exact_mean_over_every_subset_when_there_are_few() -> None:
    # Three trials, four 1-second stages, reference (0, 1): hypervolumes 0.25 (t0), 0.01 (t1), 0.81 (t2, which
    # dominates both). Pruning one at stage 1 keeps t2 in two of the three subsets; without it t0's 0.25 remains.
    records = {key: RECORDS[key] for key in ("t0000", "t0001", "t0002")}
    chance = random_pruning(records, np.array([0.0, 1.0]), pruned=1, rung=1, concurrency=2, draws=2000)
    assert chance["hypervolume_ratio"] == pytest.approx((1 + 1 + 0.25 / 0.81) / 3)
    assert chance["compute_ratio"] == pytest.approx(9 / 12)
    # Full sweep: t0, t1 run 0-4 s, t2 4-8 s. Whichever trial stops at 1 s, the others end by 5 s.
    assert chance["wall_ratio"] == pytest.approx(5 / 8)


def test_random_pruning_draws_subsets_when_there_are_many() -> None:
    chance = random_pruning(RECORDS, np.array([0.0, 1.0]), pruned=2, rung=1, concurrency=2, draws=3, seed=1)
    assert 0.01 / 0.81 <= chance["hypervolume_ratio"] <= 1.0
    assert chance["compute_ratio"] == pytest.approx(10 / 16)  # the count pruned fixes the trial-steps


def test_the_rule_minus_random_is_paired_on_the_rules_own_pruned_count() -> None:
    # Reduction 2 keeps t0 and t2 (see above) and prunes two; random's six pairs keep t2 in three of them, else
    # t0 (0.25) in two and t1 alone (0.01) in one.
    result = stage1_rule(RECORDS, np.array([0.0, 1.0]), lambda: nsga2_continues(2.0))
    expected_random = (3 + 2 * 0.25 / 0.81 + 0.01 / 0.81) / 6
    assert result["hypervolume_ratio"] == 1.0
    assert result["random"]["hypervolume_ratio"] == pytest.approx(expected_random)
    assert result["minus_random"] == pytest.approx(1 - expected_random)


def test_moasha_ranks_by_front_alone_with_random_ties() -> None:
    rng = np.random.default_rng(0)
    continues = moasha_continues(3.0, rng)
    # Three mutually non-dominated trials, one kept of three: the arriving one, an end of the front (which NSGA-II's
    # infinite crowding distance would put first), continues only when its random place in the front is first.
    front = [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]
    share = np.mean([continues("t", 1, front) for _ in range(3000)])
    assert share == pytest.approx(1 / 3, abs=0.03)
    assert nsga2_continues(3.0)("t", 1, front)
    assert not continues("t", 1, [[0.9, 0.1], [0.5, 0.5]])  # dominated: behind the whole first front


def test_front_rank_places_the_arriving_trial_within_its_front() -> None:
    front = [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9], [0.95, 0.85]]  # t3 dominates t2: fronts {0, 1, 3}, {2}
    assert front_continues(2.0, 0.0)("t", 1, front)  # first of its front: 0 < 2
    assert not front_continues(2.0, 1.0)("t", 1, front)  # last of its front of three: 2, not < 2


def test_forecast_recovers_a_linear_map_from_stage_one_to_final_values() -> None:
    rng = np.random.default_rng(0)
    stage1 = rng.uniform(size=(20, 2))
    finals = np.column_stack([0.1 + 2 * stage1[:, 0] - stage1[:, 1], 0.3 * stage1[:, 1]])
    trials = [{"stage_values": [list(row)], "final": list(final)} for row, final in zip(stage1, finals)]
    forecast = fit_forecast(trials, degree=1)
    assert np.allclose(forecast(np.array([[0.5, 0.2]])), [[0.1 + 1.0 - 0.2, 0.06]])


def test_the_choice_skips_baselines_and_candidates_short_of_the_target() -> None:
    def score(name: str, hypervolume: float, compute: float, minus_random: float) -> dict:
        return {
            "name": name,
            "hypervolume_ratio": {"mean": hypervolume},
            "compute_ratio": {"mean": compute},
            "minus_random": {"mean": minus_random},
        }

    scores = [score(c.name, 0.96, 0.55, 0.001) for c in CANDIDATES]
    moasha_at = next(i for i, c in enumerate(CANDIDATES) if c.moasha)
    scores[moasha_at] = score(CANDIDATES[moasha_at].name, 0.96, 0.5, 0.5)  # a baseline: never chosen
    scores[1] = score(CANDIDATES[1].name, 0.6, 0.3, 0.4)  # far from the target's hypervolume
    scores[3] = score(CANDIDATES[3].name, 0.97, 0.65, 0.3)  # over the target's compute
    scores[4] = score(CANDIDATES[4].name, 0.96, 0.58, 0.01)
    assert chosen(scores) == CANDIDATES[4].name


def test_greedy_hypervolume_keeps_the_trials_that_add_most_volume() -> None:
    # One kept of three: the arriving trial dominates the other two, so it alone adds the most volume.
    assert greedy_hypervolume_continues(3.0)("t", 1, [[0.5, 0.5], [0.1, 0.9], [0.9, 0.1]])
    assert not greedy_hypervolume_continues(3.0)("t", 1, [[0.9, 0.1], [0.5, 0.5]])  # dominated: adds nothing
    # One kept of a front of three: the knee (0.48 x 0.48 against the rung's reference) adds more than either end
    # (0.08 x 0.88), where NSGA-II's crowding distance puts the ends first.
    front = [[0.1, 0.1], [0.9, 0.9], [0.5, 0.5]]
    assert greedy_hypervolume_continues(3.0)("t", 1, front)
    assert not nsga2_continues(3.0)("t", 1, front)
