"""`raycl predict --verify` end to end: fits from the shipped scaling_laws table, real sweeps at the target size."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from raycl.cli import app

pytestmark = pytest.mark.slow

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def test_predict_verify_runs_the_pick_and_a_search_and_compares(tmp_path: Path) -> None:
    output = tmp_path / "transfer.json"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "scaling_laws",
            "--model",
            "raycl-tiny-m",
            "--verify",
            "--search-trials",
            "2",
            "--bootstrap",
            "3",
            "--set",
            "train.steps_per_stage=30",
            "--set",
            "model.pretrain_tokens_per_param=40",
            "--out-root",
            str(tmp_path / "runs"),
            "--reports-dir",
            str(REPORTS),
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(output.read_text())
    # Fitted on the two smaller rungs only, from the report's table (no store under this out-root).
    assert record["fitted_sizes"] == [6736.0, 20904.0] and record["model_size"] == 50464.0
    assert record["context"]["train.steps_per_stage"] == 30
    for name in ("learning", "forgetting"):
        entry = record["comparison"][name]
        counted = not entry["uninformative"]  # a hit inside an interval wider than the protocol's ratio says nothing
        assert entry["inside"] == ((entry["low"] <= entry["measured"] <= entry["high"]) if counted else None)
        assert f"{name}: predicted" in result.output
    assert record["random_search"]["trials"] == 2 and record["compute"]["search_at_target_trials"] == 40
    # The pick ran as a one-trial sweep with exactly the predicted settings.
    picked = next((tmp_path / "runs" / "scaling_laws" / "transfer" / "raycl-tiny-m").glob("picked_*/optuna.db"))
    trial = optuna.load_study(study_name=picked.parent.name, storage=f"sqlite:///{picked}").trials[0]
    assert trial.params == record["pick"] and trial.state.name == "COMPLETE"
