"""A new user's first commands, as a shell runs them: a two-trial smoke sweep by override, then its report."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def raycl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "60"}  # a narrow terminal's width must not wrap piped lines
    return subprocess.run(
        [sys.executable, "-m", "raycl.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_smoke_with_two_trials_then_its_report_under_runs(tmp_path: Path) -> None:
    before = git_status()
    sweep = raycl("sweep", "smoke", "budget.trials=2", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "sweep smoke: 2 complete" in sweep.stdout
    assert sweep.stdout.strip().splitlines()[-1] == (
        "next: `raycl report smoke` (a report in runs/smoke/report), "
        "`raycl ui smoke` (MLflow and Optuna in the browser)"
    )
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'runs' / 'smoke' / 'optuna.db'}")
    assert study.metric_names == ["learning", "forgetting"] and len(study.trials) == 2

    report = raycl("report", "smoke", "--bootstrap", "0", cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    directory = tmp_path / "runs" / "smoke" / "report"
    assert {"report.html", "report.md", "pareto.csv"} <= {path.name for path in directory.iterdir()}
    with (directory / "pareto.csv").open() as handle:
        assert sorted(row["trial"] for row in csv.DictReader(handle)) == ["t0000", "t0001"]
    markdown = (directory / "report.md").read_text()
    assert "## Trials" in markdown and "## Search space" in markdown and "budget:\n  trials: 2" in markdown
    assert git_status() == before  # nothing written into the repository (reports/ holds only the shipped examples)
