"""From a sweep's trial table to scaling-law fits: exclusions, model sizes, extrapolation records, user laws."""

from pathlib import Path

import numpy as np
import pytest

from raycl.analysis.fits import SHIFTED_POWER_N, law_from_expression
from raycl.analysis.scaling import (
    TARGETS,
    TargetFits,
    default_laws,
    fit_sweep,
    fit_target,
    fits_record,
    load_laws,
    model_sizes,
    registered_law,
)

BETHUNE, BETHUNE_LR = registered_law("bethune"), registered_law("bethune_lr")
RATIO_POWER = registered_law("ratio_power", "learning")

TRUE = {"A": 2.0, "a": 0.3, "b": 0.4, "B": 3.0}
SIZES = (4.3e4, 2.46e5, 8.6e5, 3.0e6)
LORA_EXTRA = 5_120.0  # adapter parameters older results counted in a LoRA trial's num_params
TOKENS, RATIOS = (1e5, 1e6, 1e7), (0.0, 0.125, 0.25, 0.5)


def base_loss(n: float) -> float:
    """The base model's own held-out loss: lower for larger models."""
    return 2.0 + 30.0 / n**0.3


def loss_after(n: float, d: float, r: float) -> float:
    """Bethune et al.'s law: the base loss rises by a factor that grows with D and shrinks with (1 + B r) N."""
    return base_loss(n) * (1 + TRUE["A"] * d ** TRUE["b"] / ((1 + TRUE["B"] * r) * n) ** TRUE["a"])


def sweep_table(sizes=SIZES, noise: float = 0.002, seed: int = 0, tokens=TOKENS) -> list[dict]:
    """Trials drawn from the law with log-normal noise; every third one is LoRA."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in tokens:
            for r in RATIOS:
                lora = len(rows) % 3 == 0
                after = loss_after(n, d, r) * np.exp(rng.normal(0.0, noise))
                rows.append(
                    {
                        "trial": f"t{len(rows):04d}",
                        "state": "COMPLETE",
                        "model.name": f"m{n:g}",
                        "method.name": "lora" if lora else "full",
                        "num_params": n + LORA_EXTRA if lora else n,
                        "new_tokens": d,
                        "replay.ratio": r,
                        "train.lr": 1e-3,
                        "base_loss_before": base_loss(n),
                        "forgetting": after - base_loss(n),
                        "learning": 1 - 3.0 / (n**0.2 * d**0.1) * np.exp(rng.normal(0.0, noise)),
                    }
                )
    return rows


def with_outliers(rows: list[dict]) -> list[dict]:
    """Two trials whose base loss fell or held, which are fitted like every other, and one failed trial."""
    extra = [
        dict(rows[0], trial="t9000", forgetting=-0.02),
        dict(rows[1], trial="t9001", forgetting=0.0),
        {"trial": "t9002", "state": "FAIL", "model.name": rows[0]["model.name"], "train.lr": 1e-3},
    ]
    return rows + extra


@pytest.fixture(scope="module")
def table() -> list[dict]:
    return with_outliers(sweep_table())


@pytest.fixture(scope="module")
def injection(table: list[dict]) -> TargetFits:
    return fit_target(table, "forgetting", [BETHUNE], bootstrap=20)


@pytest.mark.parametrize("name", ["a", "b", "B"])
def test_pipeline_recovers_the_exponents_and_replay_scale(injection: TargetFits, name: str) -> None:
    fit = injection.laws[0].fit
    assert fit.params[name] == pytest.approx(TRUE[name], rel=0.1)
    assert fit.ci_low[name] <= TRUE[name] <= fit.ci_high[name]  # the bootstrap interval covers the truth
    assert fit.at_bound == ()


def test_every_complete_trial_is_fitted_whatever_its_outcome(injection: TargetFits, table: list[dict]) -> None:
    assert injection.trials == len(table) and injection.excluded_incomplete == 1
    assert {"t9000", "t9001"} <= set(injection.keys) and "t9002" not in injection.keys
    # Forgetting is fitted as the base loss after the stream, positive even where forgetting is not.
    assert injection.values[injection.keys.index("t9000")] == pytest.approx(base_loss(SIZES[0]) - 0.02)
    assert "excluded_nonpositive" not in fits_record({"forgetting": injection})["targets"]["forgetting"]


def test_collinear_variables_are_refused_with_a_note() -> None:
    # Every trial trains on the same total, so new tokens D = 1e6 * (1 - r) move with the replay ratio.
    rows = [dict(row, new_tokens=1e6 * (1 - row["replay.ratio"])) for row in sweep_table(tokens=(1e6,))]
    result = fit_target(rows, "forgetting", [BETHUNE], bootstrap=0)
    (law,) = result.laws
    assert law.fit is None and result.best is None
    assert law.notes[0].startswith("no fit: D and r move together over the fitted trials (r = -")


def test_lora_trials_count_as_their_base_model_size(injection: TargetFits) -> None:
    assert injection.sizes == list(SIZES)
    assert model_sizes(
        [
            {"model.name": "s", "num_params": 10.0 + LORA_EXTRA},
            {"model.name": "s", "num_params": 10.0},
            {"num_params": 7.0},
            {"model.name": "s"},
        ]
    ).tolist() == [10.0, 10.0, 7.0, 10.0]
    # Non-embedding counts win where a trial reports them.
    assert model_sizes([{"num_params": 10.0, "num_params_non_embedding": 4.0}]).tolist() == [4.0]


def test_extrapolation_record_names_the_largest_size_and_its_error(injection: TargetFits) -> None:
    record = fits_record({"forgetting": injection})["targets"]["forgetting"]
    assert record["best"] == "bethune" and record["model_sizes"] == list(SIZES)
    law = record["laws"][0]
    assert law["params"]["a"] == pytest.approx(TRUE["a"], rel=0.1)
    assert law["ci_low"]["a"] <= law["params"]["a"] <= law["ci_high"]["a"]
    extrapolation = law["extrapolation"]
    largest = [key for key, n in zip(injection.keys, injection.data["N"]) if n == max(SIZES)]
    assert extrapolation["held_out_size"] == max(SIZES)
    assert extrapolation["held_out_trials"] == largest and len(largest) == 12
    assert extrapolation["fit_points"] == len(injection.keys) - 12
    errors = np.array(extrapolation["relative_errors"])
    assert extrapolation["mean_abs_rel_error"] == pytest.approx(np.mean(np.abs(errors)))
    assert extrapolation["mean_abs_rel_error"] < 0.02  # the true law extrapolates to within the noise
    assert extrapolation["mean_abs_error"] == pytest.approx(
        np.mean(np.abs(np.array(extrapolation["predicted"]) - extrapolation["observed"]))
    )


def test_extrapolation_needs_more_fit_sizes_than_size_parameters() -> None:
    one = fit_target(sweep_table(sizes=SIZES[:1]), "forgetting", [SHIFTED_POWER_N], bootstrap=0)
    assert one.laws == [] and one.best is None
    assert any("1 distinct model size(s)" in note for note in one.notes)
    # E + A / N**a has three parameters in N: three fit sizes below the largest are not enough.
    shifted = fit_target(sweep_table(), "forgetting", [SHIFTED_POWER_N], bootstrap=0)
    assert shifted.laws[0].extrapolation is None
    assert (
        "no extrapolation check: 3 distinct size(s) below the largest for 3 size parameter(s)" in shifted.laws[0].notes
    )
    # The injection law has one parameter in N alone: two sizes below the largest suffice.
    three = fit_target(sweep_table(sizes=SIZES[:3]), "forgetting", [BETHUNE], bootstrap=0)
    assert three.laws[0].extrapolation is not None


def test_a_parameter_on_its_bound_is_noted() -> None:
    # The loss falls as N**-8 over these sizes: steeper than the exponents' bound of 5 allows.
    rows = [
        dict(row, base_loss_before=2.0, forgetting=2.0 * 0.5 / n**8)
        for row, n in zip(
            sweep_table(sizes=(1.5, 2.0, 3.0, 4.0)), np.repeat((1.5, 2.0, 3.0, 4.0), len(TOKENS) * len(RATIOS))
        )
    ]
    law = law_from_expression("size_only", "L0 * (1 + A / N**a)", ["A", "a"])
    result = fit_target(rows, "forgetting", [law], bootstrap=0)
    fit = result.laws[0].fit
    assert fit.at_bound == ("a",) and fit.params["a"] == pytest.approx(5.0)
    assert "a = 5 sits on its bound: the data do not pin it down" in result.laws[0].notes


def test_constant_variables_and_too_few_points_are_reported_not_raised() -> None:
    rows = [row for row in sweep_table(sizes=SIZES[:3]) if row["new_tokens"] == 1e6 and row["replay.ratio"] == 0.0]
    result = fit_target(rows, "forgetting", [BETHUNE], bootstrap=0)
    notes = result.laws[0].notes
    assert result.laws[0].fit is None and "no fit: 3 points for 4 parameters" in notes
    assert any(note.startswith("D is the same in every fitted trial") for note in notes)


def test_default_laws_cover_both_targets_with_positive_quantities() -> None:
    specs = default_laws()
    assert {spec.target for spec in specs} == set(TARGETS)
    forgetting = {spec.law for spec in specs if spec.target == "forgetting"}
    assert BETHUNE in forgetting and BETHUNE_LR in forgetting
    # Every form but D-CPT's (which models the loss itself) scales the measured base loss.
    assert all("L0" in law.variables for law in forgetting if law.name != "dcpt")
    assert RATIO_POWER in {spec.law for spec in specs if spec.target == "learning"}
    learning = fit_target(sweep_table(), "learning", [RATIO_POWER], bootstrap=0)
    assert learning.laws[0].fit.params["a"] == pytest.approx(0.2, rel=0.05)
    assert learning.laws[0].extrapolation.mean_abs_rel_error < 0.02


def test_user_laws_are_loaded_and_fitted(tmp_path: Path) -> None:
    path = tmp_path / "laws.yaml"
    path.write_text(
        "- name: no_replay\n  target: forgetting\n  expression: 'L0 * (1 + A * D**b / N**a)'\n  params: [A, a, b]\n"
        "  size_params: 1\n"
        "- name: learning_power\n  target: learning\n  expression: 'E + A / N**a'\n  params: [E, A, a]\n"
    )
    specs = load_laws(path)
    assert [(s.law.name, s.target, s.law.variables) for s in specs] == [
        ("no_replay", "forgetting", ("L0", "D", "N")),
        ("learning_power", "learning", ("N",)),
    ]
    fits = fit_sweep(sweep_table(sizes=SIZES[:3]), specs[:1], bootstrap=0)
    assert list(fits) == ["forgetting"] and fits["forgetting"].laws[0].extrapolation is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x", "expected a YAML list"),
        ("- {name: x, target: forgetting, expression: 'A*N', params: [A], extra: 1}", "law 0: extra: unknown key"),
        ("- {name: x, target: loss, expression: 'A*N', params: [A]}", "target 'loss' is not one of"),
        ("- {name: x, target: forgetting, expression: 'A*Q', params: [A]}", "unknown variable(s) ['Q']"),
        ("- {name: x, target: forgetting, expression: 'A*N**', params: [A]}", "cannot parse expression"),
        ("- {name: 'a b', target: forgetting, expression: 'A*N', params: [A]}", "name 'a b'"),
        ("- {name: bethune, target: forgetting, expression: 'A*N', params: [A]}", "law of that name exists already"),
    ],
)
def test_malformed_laws_fail_with_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "laws.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_laws(path)
    assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)


def test_saturating_law_rises_from_the_base_loss_to_a_ceiling_that_replay_and_size_lower() -> None:
    SATURATING = registered_law("saturating")

    theta = np.array([1.0, 0.3, 1.0, 4.0, 1.0, 1.0, 0.5])  # A, a, b, B, c, C, e
    assert SATURATING.params == ("A", "a", "b", "B", "c", "C", "e")

    def after(**variables: float) -> float:
        data = {"L0": 0.5, "lr": 1e-4, "D": 1e5, "r": 0.0, "N": 1e5} | variables
        return float(SATURATING.predict(theta, {k: np.array([v]) for k, v in data.items()})[0])

    assert after(D=1e-6) == pytest.approx(0.5, abs=1e-6)  # no new tokens: no forgetting
    assert after(D=1e9) == pytest.approx(0.5 + 1.0)  # the ceiling A at the reference size, without replay
    assert after(D=1e9, r=0.25) == pytest.approx(0.5 + np.exp(-1.0))
    assert after(D=1e9, N=1e6) == pytest.approx(0.5 + 10**-0.3)
    assert after(D=1e5) == pytest.approx(0.5 + (1 - np.exp(-1.0)))
