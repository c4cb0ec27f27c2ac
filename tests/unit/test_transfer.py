"""Scaling-law-guided transfer: the law inputs of a config, the context, and describing a prediction (the
prediction from the shipped report's table: tests/integration/test_transfer_predict.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from raycl.reporting import transfer

REPORTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.fixture(scope="module")
def source() -> transfer.Source:
    # No store under this out-root: the table `raycl report scaling_laws` wrote is read instead.
    return transfer.load_source("scaling_laws", out_root=REPORTS / "no-such-runs", reports_dir=REPORTS)


def test_law_inputs_match_what_the_trials_recorded(source: transfer.Source) -> None:
    for row in source.rows:
        config = source.space.trial_config({name: row[name] for name in source.space.parameters})
        inputs = transfer.law_inputs(config, row["model_size"], row["base_loss_before"])
        assert (inputs["T"], inputs["D"]) == (row["train_tokens"], row["new_tokens"]), row["trial"]
        assert (inputs["lr"], inputs["r"]) == (row["train.lr"], row["replay.ratio"])


def test_context_takes_the_most_common_setting_of_the_model_unless_set(source: transfer.Source) -> None:
    context = transfer.context_config(source, "raycl-tiny-xl", {})
    xl = [row for row in source.rows if row["model.name"] == "raycl-tiny-xl"]
    budgets = [row["model.pretrain_tokens_per_param"] for row in xl]
    assert budgets.count(context.model.pretrain_tokens_per_param) == max(map(budgets.count, budgets))
    assert transfer.context_config(source, "raycl-tiny-xl", {"train.steps_per_stage": 90}).train.steps_per_stage == 90
    with pytest.raises(ValueError, match="--set"):
        transfer.context_config(source, "raycl-tiny-xl", {"train.steps_per_stage": -1})


def test_facts_of_a_model_the_sweep_never_ran_are_unknown(source: transfer.Source) -> None:
    context = transfer.context_config(source, "raycl-tiny-xl", {"model.name": "raycl-tiny-xl"})
    assert transfer.model_facts(source.rows, context) is not None
    without_xl = dataclasses.replace(source, rows=[row for row in source.rows if row["model.name"] != "raycl-tiny-xl"])
    with pytest.raises(
        ValueError, match="ran no complete trial of raycl-tiny-xl at pretraining budget 40: .* pass --verify"
    ):
        transfer.predict(without_xl, "raycl-tiny-xl", overrides={"model.pretrain_tokens_per_param": 40}, bootstrap=0)


def test_describe_says_inside_or_outside_and_when_there_is_no_interval() -> None:
    record = {
        "sweep": "s",
        "model": "m",
        "model_size": 2e5,
        "fitted_sizes": [1e4, 5e4],
        "pick": {transfer.LR: 1e-4, transfer.REPLAY: 0.25},
        "required_learning": 0.8,
        "meets_requirement": True,
        "laws": {"learning": {"name": "ratio_power_lr"}, "forgetting": {"name": "bethune"}},
        "comparison": {
            "learning": {"predicted": 0.83, "low": 0.8, "high": 0.85, "measured": 0.9, "inside": False},
            "forgetting": {"predicted": 0.1, "low": None, "high": None, "measured": 0.05, "inside": None},
        },
    }
    text = transfer.describe(record)
    assert "learning: predicted 0.83 [0.8, 0.85] (ratio_power_lr), measured 0.9: outside the interval" in text
    assert "forgetting: predicted 0.1 no interval (no bootstrap) (bethune), measured 0.05\n" in text + "\n"
