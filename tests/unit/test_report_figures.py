"""Report figure data on small hand-made tables, and the report's assembly into self-contained HTML and Markdown."""

import re
from pathlib import Path

import numpy as np
import pytest

from raycl.analysis import figures, render
from raycl.analysis.fits import law_from_expression
from raycl.analysis.frontier import frontier
from raycl.analysis.pareto import hypervolume
from raycl.analysis.scaling import LawSpec, fit_sweep, fit_target
from raycl.config.space import load_space
from raycl.reporting.report import SweepData, build_blocks, pareto_csv

OBJECTIVES = {"learning": "maximize", "forgetting": "minimize"}
# learning, forgetting: t0..t2 non-dominated; t3 dominated by t1; t4 would dominate all but is infeasible.
TABLE = [
    {"trial": "t0", "learning": 0.9, "forgetting": 3.0, "num_params": 100.0, "model.name": "s"},
    {"trial": "t1", "learning": 0.8, "forgetting": 1.0, "num_params": 120.0, "model.name": "s"},  # LoRA: +20
    {"trial": "t2", "learning": 0.5, "forgetting": 0.5, "num_params": 1000.0, "model.name": "l"},
    {"trial": "t3", "learning": 0.7, "forgetting": 2.0, "num_params": 1000.0, "model.name": "l"},
    {"trial": "t4", "learning": 1.0, "forgetting": 0.1, "num_params": 100.0, "model.name": "s"},
]
FEASIBLE = [True, True, True, True, False]
RECORD = {
    "stage_names": ["a", "b"],
    "stage_matrix": [[5.0, 6.0], [3.0, 5.5], [3.4, 2.0]],
    "retention_losses": [2.0, 2.5, 2.9],
}


def test_pareto_figure_marks_exactly_the_non_dominated_feasible_trials() -> None:
    keys = [row["trial"] for row in TABLE]
    data = figures.pareto_figure(TABLE, frontier(keys, TABLE, OBJECTIVES, FEASIBLE))
    assert data.pareto.tolist() == [True, True, True, False, False]
    assert [data.keys[i] for i in data.front_order] == ["t2", "t1", "t0"]  # by increasing learning
    assert (data.x_name, data.y_name, data.directions) == ("learning", "forgetting", ("maximize", "minimize"))
    assert data.sizes.tolist() == [100.0, 100.0, 1000.0, 1000.0, 100.0]  # coloured by base-model size
    assert figures.pareto_figure(TABLE, frontier(keys, TABLE, OBJECTIVES)).pareto.tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="two objectives"):
        figures.pareto_figure(TABLE, frontier(keys, TABLE, {"learning": "maximize"}))


def test_hypervolume_history_grows_to_the_front_volume_and_keeps_its_reference() -> None:
    keys = [row["trial"] for row in TABLE]
    data = frontier(keys, TABLE, OBJECTIVES, FEASIBLE, reference_point={"learning": 0.0, "forgetting": 4.0})
    assert data.reference == [0.0, 4.0] and data.reference_source == "search space"
    assert np.all(np.diff(data.history) >= 0) and data.keys == [row["trial"] for row in TABLE]
    values = np.array([[row["learning"], row["forgetting"]] for row in TABLE[:4]])
    assert data.history[-1] == pytest.approx(hypervolume(values, ["maximize", "minimize"], [0.0, 4.0]))
    assert data.history[0] == pytest.approx(0.9 * 1.0)

    default = frontier(keys, TABLE, OBJECTIVES, FEASIBLE)
    # 10% of the feasible range past the worst feasible trial, as the sweep does.
    assert default.reference == pytest.approx([0.5 - 0.04, 3.0 + 0.25]) and default.reference_source.startswith(
        "default"
    )


def test_heatmap_data_is_the_stage_matrix() -> None:
    data = figures.stage_heatmap("t7", RECORD)
    assert data.values.tolist() == RECORD["stage_matrix"] and data.retention == RECORD["retention_losses"]
    assert data.row_labels == ["before", "after a", "after b"] and data.column_labels == ["a", "b"]
    with pytest.raises(ValueError, match="t7: stage matrix has shape"):
        figures.stage_heatmap("t7", {"stage_names": ["a", "b"], "stage_matrix": [[1.0, 2.0]]})


def test_learning_curves_sort_steps_and_flag_pareto_trials() -> None:
    curves = {
        "t0": {"eval/new_loss": [(20, 4.0), (10, 5.0)], "eval/base_loss": [(10, 2.0)]},
        "t1": {"eval/new_loss": [(10, 4.5)]},
    }
    new, base = figures.learning_curves(curves, {"t0": 100.0}, pareto=["t1"])
    assert new.metric == "eval/new_loss" and [line.key for line in new.lines] == ["t0", "t1"]
    assert new.lines[0].steps.tolist() == [10, 20] and new.lines[0].values.tolist() == [5.0, 4.0]
    assert [line.pareto for line in new.lines] == [False, True]
    assert new.lines[0].size == 100.0 and np.isnan(new.lines[1].size)
    assert [line.key for line in base.lines] == ["t0"]  # t1 logged no base loss


def test_sensitivity_signs_categories_and_conditional_parameters() -> None:
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    rows = [
        {
            "trial": f"t{i}",
            "train.lr": lr,
            "method.name": "lora" if i % 2 else "full",
            "forgetting": 10 * lr**0.5,
            "learning": 1 - lr,
            **({"method.lora_rank": 2**i} if i % 2 else {}),
        }
        for i, lr in enumerate(lrs)
    ]
    panels = {
        (p.objective, p.parameter): p
        for p in figures.sensitivity(
            rows,
            ["learning", "forgetting"],
            ["train.lr", "method.name", "method.lora_rank"],
            log_parameters=["train.lr"],
        )
    }
    assert panels["forgetting", "train.lr"].rank_correlation == pytest.approx(1.0)
    assert panels["learning", "train.lr"].rank_correlation == pytest.approx(-1.0)
    assert panels["forgetting", "train.lr"].log_x and not panels["forgetting", "method.lora_rank"].log_x
    method = panels["forgetting", "method.name"]
    assert method.categories == ["full", "lora"] and method.x.tolist() == [0, 1, 0, 1, 0]
    assert np.isnan(method.rank_correlation)
    order = {"method.name": ["lora", "galore", "full"]}
    ordered = figures.sensitivity(rows, ["forgetting"], ["method.name"], category_order=order)
    assert ordered[0].categories == ["lora", "full"] and ordered[0].x.tolist() == [1, 0, 1, 0, 1]
    rank = panels["forgetting", "method.lora_rank"]
    assert rank.keys == ["t1", "t3"] and np.isnan(rank.rank_correlation)  # two trials set it: too few for a rank test


def power_table() -> list[dict]:
    """Noise-free forgetting = 3 * D**0.2 / N**0.5 over three model sizes and three data sizes; with a base
    loss of 0 the fitted quantity, the base loss after the stream, is the forgetting itself."""
    return [
        {
            "trial": f"t{i}",
            "state": "COMPLETE",
            "num_params": n,
            "new_tokens": d,
            "base_loss_before": 0.0,
            "forgetting": 3 * d**0.2 / n**0.5,
        }
        for i, (n, d) in enumerate((n, d) for n in (1e4, 1e5, 1e6) for d in (1e5, 1e6, 1e7))
    ]


def test_fit_figure_marks_the_largest_size_and_rescales_points_onto_the_curve() -> None:
    law = law_from_expression("power", "A * D**b / N**a", ["A", "a", "b"], size_params=1)
    fits = fit_target(power_table(), "forgetting", [law], bootstrap=10)
    data = figures.fit_figure(fits, fits.laws[0], num=50)
    assert data.held_out.tolist() == [n == 1e6 for n in fits.data["N"]] and data.held_out_size == 1e6
    assert data.held_out_error == pytest.approx(0.0, abs=1e-4)
    assert data.vary == "N" and data.curve.x[0] == pytest.approx(1e4) and data.curve.x[-1] == pytest.approx(1e6)
    assert data.curve.held == {"D": 1e6}
    # Rescaled to D = 1e6, the exact law's points lie on its curve, held-out ones included.
    np.testing.assert_allclose(data.adjusted, 3 * 1e6**0.2 / data.x**0.5, rtol=1e-4)
    assert np.all(data.curve.low <= data.curve.prediction + 1e-9) and np.all(
        data.curve.prediction <= data.curve.high + 1e-9
    )


def test_report_of_a_three_size_sweep_is_self_contained(tmp_path: Path) -> None:
    """A hand-made scaling_laws-like sweep with one failed trial, assembled and written without MLflow."""
    space = load_space("scaling_laws")
    rows = []
    for i, row in enumerate(power_table()):
        sampled = {
            "model.name": f"m{row['num_params']:g}",
            "train.lr": 1e-3 * (1 + i % 3),
            "replay.ratio": 0.0,
            "method.name": "lora" if i % 2 else "full",
            **({"method.lora_rank": 4} if i % 2 else {}),
        }
        rows.append(row | sampled | {"learning": 0.5 + 0.01 * i, "sampled": sampled, "run_id": f"run{i}"})
    rows.append({"trial": "t99", "state": "FAIL", "train.lr": 1e-3, "sampled": {"train.lr": 1e-3}, "run_id": "run99"})
    sweep = SweepData(
        name="synthetic",
        space=space,
        space_text=space.text,
        parent_run_id="",
        recorded_pareto=[],
        rows=rows,
        curves={
            row["trial"]: {"eval/new_loss": [(0, 5.0), (10, 4.0)], "eval/base_loss": [(0, 2.0), (10, 2.5)]}
            for row in rows
        },
        stage_records={row["trial"]: RECORD for row in rows[:-1]},
    )
    specs = [LawSpec(law_from_expression("power", "A * D**b / N**a", ["A", "a", "b"]), "forgetting")]
    fits = fit_sweep(sweep.rows, specs, bootstrap=10)
    blocks, pareto, feasible = build_blocks(sweep, fits, bootstrap=10)
    expected = figures.pareto_figure(
        sweep.complete, frontier([row["trial"] for row in sweep.complete], sweep.complete, space.objectives)
    )
    assert pareto == {key for key, on in zip(expected.keys, expected.pareto) if on} and all(feasible.values())
    images = [block.name for block in blocks if isinstance(block, render.Image)]
    assert images == ["pareto", "hypervolume", "fits_forgetting", "stage_matrices", "learning_curves", "sensitivity"]

    written = render.write_report(tmp_path, "Sweep report: synthetic", blocks)
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"<script|<link|@import|url\(|(src|href)\s*=\s*[\"'](?!data:)", page, re.IGNORECASE)
    assert page.count("<img") == len(images) == page.count('src="data:image/png;base64,')
    markdown = (tmp_path / "report.md").read_text()
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown) == [f"{name}.png" for name in images]
    assert {path.name for path in written} == {f"{name}.png" for name in images} | {"report.html", "report.md"}
    assert all((tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG") for name in images)

    table = pareto_csv(sweep.rows, list(space.objectives), feasible, pareto, list(space.parameters)).splitlines()
    spread = "seeds,learning_ci_low,learning_ci_high,forgetting_ci_low,forgetting_ci_high"
    assert table[0].startswith(f"trial,state,learning,forgetting,{spread},feasible,pareto,model_size")
    # One seed per trial: no interval.
    assert {line.split(",")[0] for line in table[1:] if line.split(",")[10] == "True"} == pareto
    assert table[-1].startswith("t99,FAIL,,,1,,,,,False,False")


def test_report_of_a_one_size_sweep_shows_every_trial_and_leaves_out_what_has_no_data(tmp_path: Path) -> None:
    """The smoke space's shape: one model size, two methods, benchmark deltas; no fit section, no size colours."""
    space = load_space("smoke")
    rows = []
    for i, (method, ratio) in enumerate([("full", 0.0), ("galore", 0.2), ("full", 0.4), ("galore", 0.6)]):
        sampled = {"method.name": method, "replay.ratio": ratio}
        rows.append(
            {
                "trial": f"t{i}",
                "run_id": f"run{i}",
                "state": "COMPLETE",
                "num_params": 3e4,
                "new_tokens": 1e5,
                "learning": 0.95 - 0.1 * ratio,
                "forgetting": 2.0 - 2.5 * ratio,
                "bench_raycl_retention_delta": -5.0 - 10.0 * i,
                **sampled,
                "sampled": sampled,
            }
        )
    sweep = SweepData(
        name="smoke",
        space=space,
        space_text=space.text,
        parent_run_id="parent",
        recorded_pareto=[],
        rows=rows,
        curves={row["trial"]: {"eval/new_loss": [(0, 5.0), (10, 4.0)]} for row in rows},
        stage_records={},
    )
    blocks, pareto, _ = build_blocks(sweep, fit_sweep(rows, [], bootstrap=0), bootstrap=0)
    assert pareto == {"t0", "t1", "t2", "t3"}
    headings = [block.text for block in blocks if isinstance(block, render.Heading)]
    assert "Scaling laws" not in headings
    assert {"Trials", "Methods", "Benchmarks", "Search space"} <= set(headings)
    trials = next(b for b in blocks if isinstance(b, render.Table) and "MLflow run" in b.header)
    assert [row[-1] for row in trials.rows] == ["run0", "run1", "run2", "run3"] and "model size" not in trials.header
    methods = next(b for b in blocks if isinstance(b, render.Table) and b.header[0] == "method")
    assert sorted(row[:3] for row in methods.rows) == [["full", "2", "2"], ["galore", "2", "2"]]
    benchmarks = next(b for b in blocks if isinstance(b, render.Table) and b.header == ["trial", "raycl_retention"])
    assert [row[1] for row in benchmarks.rows] == ["-5", "-15", "-25", "-35"]
    assert any(isinstance(b, render.Code) and "replay.ratio" in b.text for b in blocks)
    assert not any(isinstance(b, render.Text) and "coloured by model size" in b.text for b in blocks)
    render.write_report(tmp_path, "Sweep report: smoke", blocks)
    assert "<pre>" in (tmp_path / "report.html").read_text() and "```yaml" in (tmp_path / "report.md").read_text()


def test_report_of_a_missing_sweep_fails_with_one_line_naming_the_path(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from raycl.cli import app

    arguments = ["report", "nosuch", "--out-root", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert str(tmp_path / "runs" / "nosuch" / "mlflow.db") in result.output
    assert not (tmp_path / "reports").exists()
