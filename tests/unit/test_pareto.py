"""Pareto fronts and hypervolumes on hand-made point sets with known answers."""

import numpy as np
import pytest

from raycl.analysis.pareto import (
    default_reference,
    hypervolume,
    hypervolume_history,
    pareto_mask,
)

MIXED = ("maximize", "minimize")  # (learning, forgetting)

# learning, forgetting; front = rows 0, 1, 2
POINTS = np.array(
    [
        [3.0, 3.0],  # best learning
        [2.0, 1.0],
        [1.0, 0.5],  # least forgetting
        [2.0, 2.0],  # dominated by row 1 (ties on learning)
        [1.0, 1.0],  # dominated by row 1
        [0.5, 0.5],  # dominated by row 2 (ties on forgetting)
    ]
)
FRONT = [True, True, True, False, False, False]


def test_mixed_directions_front() -> None:
    assert pareto_mask(POINTS, MIXED).tolist() == FRONT


@pytest.mark.parametrize(
    ("signs", "directions"),
    [((-1, 1), ("minimize", "minimize")), ((1, -1), ("maximize", "maximize"))],
)
def test_front_is_invariant_to_sign_convention(signs: tuple[int, int], directions) -> None:
    assert pareto_mask(POINTS * np.array(signs), directions).tolist() == FRONT


def test_opposite_directions_give_opposite_corner() -> None:
    # Minimizing learning and maximizing forgetting: (2, 1) is dominated by (2, 2) and
    # (1, 0.5) by (1, 1); every other point trades one objective for the other.
    mask = pareto_mask(POINTS, ("minimize", "maximize"))
    assert mask.tolist() == [True, False, False, True, True, True]


def test_duplicates_of_front_point_are_all_kept() -> None:
    values = np.vstack([POINTS, POINTS[1], POINTS[4]])
    assert pareto_mask(values, MIXED).tolist() == FRONT + [True, False]


def test_nan_rows_are_never_on_front_and_dominate_nothing() -> None:
    values = np.vstack([POINTS, [np.nan, 0.0], [10.0, np.nan]])
    assert pareto_mask(values, MIXED).tolist() == FRONT + [False, False]


def test_three_objectives() -> None:
    values = np.array([[1, 1, 1], [0, 2, 2], [1, 1, 2], [2, 0, 0]], dtype=float)
    assert pareto_mask(values, ["minimize"] * 3).tolist() == [True, True, False, True]


def test_invalid_directions_raise() -> None:
    with pytest.raises(ValueError, match="directions"):
        pareto_mask(POINTS, ("maximize",))
    with pytest.raises(ValueError, match="unknown direction"):
        pareto_mask(POINTS, ("maximize", "up"))


def test_hypervolume_staircase_minimization() -> None:
    values = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # Union of boxes up to (4, 4): 3*1 + 2*1 + 1*1.
    assert hypervolume(values, ("minimize", "minimize"), (4.0, 4.0)) == pytest.approx(6.0)


def test_hypervolume_ignores_dominated_nan_and_out_of_reference_points() -> None:
    base = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    extra = np.array([[3.0, 3.0], [np.nan, 0.0], [0.0, 5.0], [5.0, 0.0]])
    value = hypervolume(np.vstack([base, extra]), ("minimize", "minimize"), (4.0, 4.0))
    assert value == pytest.approx(6.0)


def test_hypervolume_mixed_directions() -> None:
    # learning >= reference 0, forgetting <= reference 4: boxes [0,3]x[3,4] and [0,2]x[1,4]
    # overlap in [0,2]x[3,4]: 3 + 6 - 2 = 7.
    values = np.array([[3.0, 3.0], [2.0, 1.0]])
    assert hypervolume(values, MIXED, (0.0, 4.0)) == pytest.approx(7.0)


def test_hypervolume_three_objectives_inclusion_exclusion() -> None:
    # Boxes to (2,2,2): volumes 2 and 2, intersection [1,2]^3 of volume 1.
    values = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    assert hypervolume(values, ["minimize"] * 3, (2.0, 2.0, 2.0)) == pytest.approx(3.0)


def test_hypervolume_of_nothing_is_zero() -> None:
    assert hypervolume(np.array([[5.0, 5.0]]), ("minimize", "minimize"), (4.0, 4.0)) == 0.0


def test_default_reference_is_nadir_plus_ten_percent_of_range() -> None:
    values = np.array([[1.0, 0.5], [3.0, 2.0], [np.nan, 100.0]])
    reference = default_reference(values, MIXED)
    np.testing.assert_allclose(reference, [1.0 - 0.2, 2.0 + 0.15])
    assert hypervolume(values, MIXED, reference) > 0


def test_default_reference_with_zero_range_is_strictly_worse() -> None:
    values = np.array([[5.0, 0.0], [5.0, 0.0]])
    reference = default_reference(values, MIXED)
    assert reference[0] < 5.0 and reference[1] > 0.0
    assert hypervolume(values, MIXED, reference) > 0


def test_hypervolume_history_matches_prefix_hypervolumes() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, size=(40, 2))
    values[[5, 17]] = np.nan
    values[30] = [-1.0, 2.0]  # outside the reference in forgetting
    reference = (0.0, 1.0)
    history = hypervolume_history(values, MIXED, reference)
    expected = [hypervolume(values[: i + 1], MIXED, reference) for i in range(len(values))]
    np.testing.assert_allclose(history, expected, rtol=1e-12, atol=1e-15)
    assert np.all(np.diff(history) >= 0)
    assert history[-1] == pytest.approx(hypervolume(values, MIXED, reference))


def test_hypervolume_history_hand_computed() -> None:
    values = np.array([[1.0, 3.0], [2.0, 2.0], [1.5, 3.5], [3.0, 1.0]])
    history = hypervolume_history(values, ("minimize", "minimize"), (4.0, 4.0))
    np.testing.assert_allclose(history, [3.0, 5.0, 5.0, 6.0])
