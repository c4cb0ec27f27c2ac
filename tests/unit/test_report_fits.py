"""From a sweep's trial table to scaling-law fits: exclusions, model sizes, extrapolation records, user laws."""

from pathlib import Path

import numpy as np
import pytest

from raycl.analysis.fits import DATA_INJECTION, SHIFTED_POWER_N
from raycl.analysis.scaling import (
    INJECTION_LR,
    RATIO_POWER_N,
    TARGETS,
    TargetFits,
    default_laws,
    fit_sweep,
    fit_target,
    fits_record,
    load_laws,
    model_sizes,
    runaway_notes,
)

TRUE = {"A": 2.0, "a": 0.3, "b": 0.4, "B": 3.0}
SIZES = (4.3e4, 2.46e5, 8.6e5, 3.0e6)
LORA_EXTRA = 5_120.0  # adapter parameters a LoRA trial adds to its num_params


def forgetting(n: float, d: float, r: float) -> float:
    return TRUE["A"] * d ** TRUE["b"] / ((1 + TRUE["B"] * r) * n) ** TRUE["a"]


def sweep_table(sizes=SIZES, noise: float = 0.01, seed: int = 0) -> list[dict]:
    """Trials drawn from DATA_INJECTION with log-normal noise; every third one is LoRA, one is a failure."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in (1e5, 1e6, 1e7):
            for r in (0.0, 0.125, 0.25, 0.5):
                lora = len(rows) % 3 == 0
                rows.append({
                    "trial": f"t{len(rows):04d}",
                    "state": "COMPLETE",
                    "model.name": f"m{n:g}",
                    "method.name": "lora" if lora else "full",
                    "num_params": n + LORA_EXTRA if lora else n,
                    "new_tokens": d,
                    "replay.ratio": r,
                    "train.lr": 1e-3,
                    "forgetting": forgetting(n, d, r) * np.exp(rng.normal(0.0, noise)),
                    "learning": 0.5,
                })
    return rows


def with_outliers(rows: list[dict]) -> list[dict]:
    """Two trials whose base loss fell or held (log-space fits cannot take them) and one failed trial."""
    extra = [dict(rows[0], trial="t9000", forgetting=-0.02), dict(rows[1], trial="t9001", forgetting=0.0),
             {"trial": "t9002", "state": "FAIL", "model.name": rows[0]["model.name"], "train.lr": 1e-3}]
    return rows + extra


@pytest.fixture(scope="module")
def table() -> list[dict]:
    return with_outliers(sweep_table())


@pytest.fixture(scope="module")
def injection(table: list[dict]) -> TargetFits:
    return fit_target(table, "forgetting", [DATA_INJECTION], bootstrap=20)


@pytest.mark.parametrize("name", ["a", "b", "B"])
def test_pipeline_recovers_the_exponents_and_replay_scale(injection: TargetFits, name: str) -> None:
    assert injection.laws[0].fit.params[name] == pytest.approx(TRUE[name], rel=0.05)


def test_nonpositive_and_failed_trials_are_excluded_and_counted(injection: TargetFits, table: list[dict]) -> None:
    assert injection.trials == len(table)
    assert injection.excluded_nonpositive == 2 and injection.excluded_incomplete == 1
    assert len(injection.keys) == len(table) - 3 and not {"t9000", "t9001", "t9002"} & set(injection.keys)
    assert any("2 trial(s) with forgetting <= 0 excluded" in note for note in injection.notes)


def test_lora_trials_count_as_their_base_model_size(injection: TargetFits) -> None:
    assert injection.sizes == list(SIZES)
    assert model_sizes([{"model.name": "s", "num_params": 10.0 + LORA_EXTRA}, {"model.name": "s", "num_params": 10.0},
                        {"num_params": 7.0}, {"model.name": "s"}]).tolist() == [10.0, 10.0, 7.0, 10.0]


def test_extrapolation_record_names_the_largest_size_and_its_error(injection: TargetFits) -> None:
    record = fits_record({"forgetting": injection})["targets"]["forgetting"]
    assert record["best"] == "data_injection"
    assert record["excluded_nonpositive"] == 2 and record["model_sizes"] == list(SIZES)
    law = record["laws"][0]
    assert law["params"]["a"] == pytest.approx(TRUE["a"], rel=0.05)
    assert law["ci_low"]["a"] <= law["params"]["a"] <= law["ci_high"]["a"]
    extrapolation = law["extrapolation"]
    largest = [key for key, n in zip(injection.keys, injection.data["N"]) if n == max(SIZES)]
    assert extrapolation["held_out_size"] == max(SIZES)
    assert extrapolation["held_out_trials"] == largest and len(largest) == 12
    assert extrapolation["fit_points"] == len(injection.keys) - 12
    errors = np.array(extrapolation["relative_errors"])
    assert extrapolation["mean_abs_rel_error"] == pytest.approx(np.mean(np.abs(errors)))
    assert extrapolation["mean_abs_rel_error"] < 0.05  # the true law extrapolates to within the noise


def test_one_size_gives_no_fit_and_two_sizes_no_extrapolation() -> None:
    one = fit_target(sweep_table(sizes=SIZES[:1]), "forgetting", [SHIFTED_POWER_N], bootstrap=0)
    assert one.laws == [] and one.best is None
    assert any("1 distinct model size(s)" in note for note in one.notes)

    two = fit_target(sweep_table(sizes=SIZES[:2]), "forgetting", [SHIFTED_POWER_N], bootstrap=0)
    assert two.laws[0].fit is not None and two.laws[0].extrapolation is None and two.best is None
    assert any("needs at least 3 sizes" in note for note in two.notes)


def test_constant_variables_and_too_few_points_are_reported_not_raised() -> None:
    rows = [row for row in sweep_table(sizes=SIZES[:3]) if row["new_tokens"] == 1e6 and row["replay.ratio"] == 0.0]
    result = fit_target(rows, "forgetting", [DATA_INJECTION], bootstrap=0)
    notes = result.laws[0].notes
    assert result.laws[0].fit is None and "no fit: 3 points for 4 parameters" in notes
    assert any(note.startswith("D is the same in every fitted trial") for note in notes)


def test_default_laws_cover_both_targets() -> None:
    specs = default_laws()
    assert {spec.target for spec in specs} == set(TARGETS)
    assert {spec.law for spec in specs if spec.target == "forgetting"} == {DATA_INJECTION, INJECTION_LR, SHIFTED_POWER_N}
    learning = {spec.law for spec in specs if spec.target == "learning"}
    assert learning == {DATA_INJECTION, INJECTION_LR, SHIFTED_POWER_N, RATIO_POWER_N}
    assert set(INJECTION_LR.variables) == {"lr", "D", "r", "N"}


def test_parameters_run_off_to_a_limit_are_noted() -> None:
    assert runaway_notes(DATA_INJECTION, {"A": 2.0, "a": 0.3, "b": 4.5, "B": 3.0}) == []
    notes = runaway_notes(DATA_INJECTION, {"A": 1e-60, "a": -16.0, "b": 0.4, "B": 1.3e303})
    assert [note.split(" = ")[0] for note in notes] == ["A", "a", "B"]
    assert "towards 0" in notes[0] and "towards infinity" in notes[1] and "towards infinity" in notes[2]


def test_user_laws_are_loaded_and_fitted(tmp_path: Path) -> None:
    path = tmp_path / "laws.yaml"
    path.write_text(
        "- name: no_replay\n  target: forgetting\n  expression: 'A * D**b / N**a'\n  params: [A, a, b]\n"
        "- name: learning_power\n  target: learning\n  expression: 'E + A / N**a'\n  params: [E, A, a]\n"
    )
    specs = load_laws(path)
    assert [(s.law.name, s.target, s.law.variables) for s in specs] == [
        ("no_replay", "forgetting", ("D", "N")), ("learning_power", "learning", ("N",))
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
        ("- {name: data_injection, target: forgetting, expression: 'A*N', params: [A]}", "law of that name exists already"),
    ],
)
def test_malformed_laws_fail_with_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "laws.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_laws(path)
    assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)
