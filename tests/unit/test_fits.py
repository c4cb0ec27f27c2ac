"""Scaling-law fitting: recovery of known laws from noisy synthetic sweeps."""

import numpy as np
import pytest

from raycl.analysis.fits import (
    DATA_INJECTION,
    POWER_N_D,
    SHIFTED_POWER_N,
    FitResult,
    Law,
    extrapolation_check,
    fit_curve,
    fit_law,
    law_from_expression,
    parallel_fits,
)

TRUE_INJECTION = {"A": 2.0, "a": 0.3, "b": 0.4, "B": 3.0}


def injection_grid(replicates: int = 1) -> dict[str, np.ndarray]:
    """5 model sizes x 4 new-data sizes x 4 replay ratios, each run ``replicates`` times."""
    n, d, r = np.meshgrid(np.geomspace(1e5, 1e8, 5), [1e6, 1e7, 1e8, 1e9], [0.0, 0.1, 0.25, 0.5], indexing="ij")
    return {k: np.tile(v.ravel(), replicates) for k, v in {"N": n, "D": d, "r": r}.items()}


def truth(law: Law, values: dict[str, float], data: dict[str, np.ndarray]) -> np.ndarray:
    return law.predict(np.array([values[p] for p in law.params]), data)


@pytest.fixture(scope="module")
def injection_fit() -> FitResult:
    """Two runs per configuration with 2% log-normal noise; default 200 bootstrap samples."""
    data = injection_grid(replicates=2)
    noise = np.exp(np.random.default_rng(0).normal(0.0, 0.02, len(data["N"])))
    return fit_law(DATA_INJECTION, data, truth(DATA_INJECTION, TRUE_INJECTION, data) * noise)


@pytest.mark.parametrize("name", ["a", "b", "B"])
def test_data_injection_recovers_exponents_and_replay_scale(injection_fit: FitResult, name: str) -> None:
    assert injection_fit.params[name] == pytest.approx(TRUE_INJECTION[name], rel=0.05)


@pytest.mark.parametrize("name", ["A", "a", "b", "B"])
def test_bootstrap_interval_covers_truth(injection_fit: FitResult, name: str) -> None:
    assert injection_fit.samples.shape == (200, 4)
    assert injection_fit.ci_low[name] <= TRUE_INJECTION[name] <= injection_fit.ci_high[name]
    assert injection_fit.ci_low[name] < injection_fit.params[name] < injection_fit.ci_high[name]


def test_fit_result_predicts_with_fitted_params(injection_fit: FitResult) -> None:
    data = injection_grid()
    np.testing.assert_allclose(injection_fit.predict(data), truth(DATA_INJECTION, injection_fit.params, data))
    assert injection_fit.n_points == 160 and injection_fit.loss > 0


def test_shifted_power_law_recovery() -> None:
    true = {"E": 1.7, "A": 400.0, "a": 0.34}
    data = {"N": np.tile(np.geomspace(1e5, 1e10, 10), 2)}
    noise = np.exp(np.random.default_rng(1).normal(0.0, 0.01, 20))
    fit = fit_law(SHIFTED_POWER_N, data, truth(SHIFTED_POWER_N, true, data) * noise, bootstrap=50)
    assert fit.params["E"] == pytest.approx(1.7, rel=0.05)
    assert fit.params["a"] == pytest.approx(0.34, rel=0.05)
    assert fit.params["A"] == pytest.approx(400.0, rel=0.25)  # strongly correlated with a
    for name, value in true.items():
        assert fit.ci_low[name] <= value <= fit.ci_high[name]


def test_huber_loss_is_summed_and_robust_to_an_outlier() -> None:
    data = {"N": np.geomspace(1e5, 1e10, 12)}
    clean = truth(SHIFTED_POWER_N, {"E": 1.7, "A": 400.0, "a": 0.34}, data)
    corrupted = clean.copy()
    corrupted[3] *= 2.0
    fit = fit_law(SHIFTED_POWER_N, data, corrupted, bootstrap=0)
    assert fit.params["a"] == pytest.approx(0.34, rel=1e-3)
    # Only the outlier contributes: delta * (|log 2| - delta / 2), summed not averaged.
    assert fit.loss == pytest.approx(1e-3 * (np.log(2.0) - 5e-4), rel=1e-3)


@pytest.fixture(scope="module")
def noise_free_comparison():
    data = injection_grid()
    target = truth(DATA_INJECTION, TRUE_INJECTION, data)
    checks = [extrapolation_check(law, data, target, bootstrap=0) for law in (SHIFTED_POWER_N, DATA_INJECTION)]
    return sorted(checks, key=lambda check: check.mean_abs_rel_error)


def test_extrapolation_to_largest_size_on_noise_free_data(noise_free_comparison) -> None:
    best = noise_free_comparison[0]
    assert best.law is DATA_INJECTION
    assert best.held_out_size == 1e8
    np.testing.assert_array_equal(best.held_out, injection_grid()["N"] == 1e8)
    assert best.relative_errors.shape == (16,)
    assert best.fit.n_points == 64
    assert best.mean_abs_rel_error < 0.01


def test_held_out_error_ranks_the_true_law_first(noise_free_comparison) -> None:
    errors = [r.mean_abs_rel_error for r in noise_free_comparison]
    assert errors == sorted(errors)
    assert noise_free_comparison[1].law is SHIFTED_POWER_N
    assert errors[1] > 0.1  # ignores D and r


def test_extrapolation_check_direct_and_size_validation() -> None:
    data = {"N": np.geomspace(1e5, 1e10, 8)}
    target = truth(SHIFTED_POWER_N, {"E": 1.7, "A": 400.0, "a": 0.34}, data)
    result = extrapolation_check(SHIFTED_POWER_N, data, target, bootstrap=0)
    assert result.held_out_size == 1e10 and result.mean_abs_rel_error < 1e-4
    assert result.held_out.tolist() == [False] * 7 + [True]
    with pytest.raises(ValueError, match="2 distinct"):
        extrapolation_check(SHIFTED_POWER_N, {"N": np.full(4, 1e6)}, np.ones(4))


def test_fit_curve_band_from_bootstrap_samples(injection_fit: FitResult) -> None:
    data = injection_grid()
    curve = fit_curve(injection_fit, data, "N", num=25)
    assert curve.x[0] == pytest.approx(1e5) and curve.x[-1] == pytest.approx(1e8)
    np.testing.assert_allclose(np.diff(np.log(curve.x)), np.log(1e3) / 24)
    assert curve.held == {"D": pytest.approx(5.5e7), "r": pytest.approx(0.175)}  # medians
    assert np.all(curve.low <= curve.prediction) and np.all(curve.prediction <= curve.high)
    assert np.all(curve.high > curve.low)
    with pytest.raises(ValueError, match="not a variable"):
        fit_curve(injection_fit, data, "E")


def test_no_bootstrap_gives_nan_intervals() -> None:
    data = {"N": np.geomspace(1e5, 1e10, 6)}
    target = truth(SHIFTED_POWER_N, {"E": 1.7, "A": 400.0, "a": 0.34}, data)
    fit = fit_law(SHIFTED_POWER_N, data, target, bootstrap=0)
    assert fit.samples.shape == (0, 3) and np.isnan(fit.ci_low["a"])
    assert np.all(np.isnan(fit_curve(fit, data, "N", num=5).low))


def test_non_positive_predictions_are_penalized_not_fatal() -> None:
    # Starts with A = 100 or 1e4 predict negative losses; the fit must skip them.
    law = law_from_expression("linear", "E - A * N", ["E", "A"])
    data = {"N": np.linspace(1.0, 1e3, 10)}
    target = 10.0 - 1e-3 * data["N"]
    fit = fit_law(law, data, target, bootstrap=0)
    assert fit.params["E"] == pytest.approx(10.0, rel=1e-6)
    assert fit.params["A"] == pytest.approx(1e-3, rel=1e-4)
    never_positive = law_from_expression("negative", "-A * N", ["A"])
    with pytest.raises(ValueError, match="no initial value"):
        fit_law(never_positive, data, target, bootstrap=0)


def test_user_grid_is_used_and_validated() -> None:
    data = {"N": np.geomspace(1e5, 1e10, 6)}
    target = truth(SHIFTED_POWER_N, {"E": 1.7, "A": 400.0, "a": 0.34}, data)
    fit = fit_law(SHIFTED_POWER_N, data, target, bootstrap=0, grid={"E": [1.0], "A": [100.0]})
    assert fit.params["a"] == pytest.approx(0.34, rel=1e-4)
    with pytest.raises(ValueError, match="unknown params"):
        fit_law(SHIFTED_POWER_N, data, target, grid={"Z": [1.0]})
    with pytest.raises(ValueError, match="positive"):
        fit_law(SHIFTED_POWER_N, data, target, grid={"A": [-1.0]})


def test_law_from_expression_infers_variables() -> None:
    law = law_from_expression("custom", "E + A * exp(-k * sqrt(T)) / log(N)", ["E", "A", "k"])
    assert law.variables == ("T", "N")
    assert POWER_N_D.variables == ("N", "D")
    theta = np.array([1.0, 2.0, 0.5])
    out = law.predict(theta, {"T": np.array([4.0]), "N": np.array([np.e])})
    np.testing.assert_allclose(out, 1.0 + 2.0 * np.exp(-1.0))


def test_forward_mode_gradient_matches_finite_differences() -> None:
    expression = "E + A * exp(-k * sqrt(T)) / log(N)**a - B / (1 + N)**-c"
    law = law_from_expression("all_ops", expression, ["E", "A", "k", "a", "B", "c"])
    data = {"T": np.array([1.0, 4.0, 9.0]), "N": np.array([10.0, 100.0, 1e4])}
    theta = np.array([1.5, 2.0, 0.3, 0.7, 0.01, -0.2])
    _, grad = law._evaluate(theta, data, 3, gradient=True)
    step = 1e-6
    numeric = np.array(
        [
            (law.predict(theta + step * e, data) - law.predict(theta - step * e, data)) / (2 * step)
            for e in np.eye(len(theta))
        ]
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("expression", "token"),
    [
        ("__import__('os')", "__import__"),
        ("os.system('ls')", "os.system"),
        ("N.__class__", "N.__class__"),
        ("A * N % 2", "%"),
        ("(lambda: 1)()", "lambda"),
        ("A * N if N else A", "if"),
        ("A * 'N'", "'N'"),
        ("exp(N, A)", "exp(N, A)"),
        ("A * exp", "exp"),
        ("A * N; 1", "invalid syntax|cannot parse"),
    ],
)
def test_unsafe_or_unsupported_expressions_raise(expression: str, token: str) -> None:
    with pytest.raises(ValueError, match=token if "|" in token else None) as info:
        law_from_expression("bad", expression, ["A"])
    if "|" not in token:
        assert token in str(info.value)


def test_law_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        Law("bad", "A * N**a", ("A",), ("N",))
    with pytest.raises(ValueError, match="unused"):
        Law("bad", "A * N", ("A", "a"), ("N",))
    with pytest.raises(ValueError, match="lacks"):
        DATA_INJECTION.predict(np.ones(4), {"N": np.ones(2), "D": np.ones(2)})


def test_parallel_fit_equals_serial_fit_bit_for_bit() -> None:
    """Starts and bootstrap refits on two worker processes give exactly the in-process fit."""
    data = {"N": np.tile(np.geomspace(1e5, 1e8, 4), 2)}
    target = truth(SHIFTED_POWER_N, {"E": 1.7, "A": 400.0, "a": 0.34}, data)
    target = target * np.exp(np.random.default_rng(3).normal(0.0, 0.01, 8))
    serial = fit_law(SHIFTED_POWER_N, data, target, bootstrap=12, seed=5)
    with parallel_fits(2):
        parallel = fit_law(SHIFTED_POWER_N, data, target, bootstrap=12, seed=5)
    assert parallel.params == serial.params and parallel.loss == serial.loss
    np.testing.assert_array_equal(parallel.samples, serial.samples)


@pytest.mark.parametrize(
    "law", [DATA_INJECTION, POWER_N_D, law_from_expression("x", "L * exp(-c * sqrt(N)) - log(D)/3", ["L", "c"])]
)
def test_straight_line_gradient_equals_the_tree_rules_bit_for_bit(law: Law) -> None:
    """The objective's generated code computes the same floats as the per-node rules, overflow included."""
    from raycl.analysis.fits import _program, _straight_line, _unit_columns

    rng = np.random.default_rng(2)
    columns = {v: rng.uniform(1.0, 3e5, 16) for v in law.variables}
    units = _unit_columns(len(law.params))
    for _ in range(50):
        theta = rng.normal(0.0, 3.0, len(law.params)) * rng.choice([1.0, 100.0], len(law.params))
        env = {v: (columns[v], None) for v in law.variables} | {
            p: (theta[j], units[j]) for j, p in enumerate(law.params)
        }
        with np.errstate(all="ignore"):
            expected = _program(law.expression)(env)
            got = _straight_line(law.expression, law.params)(theta, columns, units)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
