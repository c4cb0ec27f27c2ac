"""Predictions for a rung not yet built, then scored against its measurements (synthetic sweep)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from raycl.analysis import scaling
from raycl.reporting import out_of_sample

PARAMETERS = ["model.name", "model.pretrain_tokens_per_param", "train.lr", "replay.ratio"]
PROTOCOL = """\
scoring: {folds: leave_one_size_out, bootstrap: 200, level: 0.95, seed: 0, uninformative_ratio: 10}
laws:
  - {name: lr_law, target: forgetting, expression: "L0 + A * (lr/1e-4)**c * exp(-B*r)", params: [A, c, B]}
baselines:
  - {name: constant, kind: constant, description: mean of the sizes}
  - {name: next_smaller_same_replay, kind: next_smaller, match: [r], description: the largest size at r}
"""


def base_loss(n: float, budget: float) -> float:
    return 0.5 + 0.3 / (n / 1e5) ** 0.4 + 0.2 / (budget * n / 1e6) ** 0.3


def forgetting(lr: float, ratio: float) -> float:
    """No size term: a law in lr and r alone predicts a new rung exactly."""
    return 0.1 * (lr / 1e-4) ** 0.5 * np.exp(-2 * ratio)


def trial(name: str, n: float, budget: float, lr: float, ratio: float, index: int) -> dict:
    return {
        "trial": f"t{index:03d}",
        "state": "COMPLETE",
        "model.name": name,
        "num_params_non_embedding": n,
        "model.pretrain_tokens_per_param": budget,
        "train.lr": lr,
        "replay.ratio": ratio,
        "new_tokens": 1e5,
        "train_tokens": 1e5,
        "base_loss_before": base_loss(n, budget),
        "forgetting": forgetting(lr, ratio),
        "learning": 0.5 + 0.1 * ratio,
    }


SIZES = {"m1": 2e4, "m2": 5e4, "m3": 1e5}
GRID = list(itertools.product((10.0, 40.0), (1e-4, 3e-4), (0.0, 0.25)))


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = Path(tmp_path_factory.mktemp("protocol")) / "protocol.yaml"
    path.write_text(PROTOCOL)
    rows = [trial(name, n, *config, i) for i, (name, n) in enumerate(SIZES.items()) for config in GRID]
    return out_of_sample.predict_rung(rows, PARAMETERS, "m4", 2.5e5, protocol=scaling.load_protocol(path))


def test_predictions_cover_the_largest_rungs_configurations_with_an_extrapolated_base_loss(predicted: dict) -> None:
    assert predicted["fitted_sizes"] == sorted(SIZES.values()) and predicted["largest_fitted_rung"] == 1e5
    forgetting_entry = predicted["targets"]["forgetting"]
    configurations = forgetting_entry["configurations"]
    assert len(configurations) == len(GRID)
    values = [f["forgetting"] for f in [trial("m", 1, *config, 0) for config in GRID]]
    for entry in configurations:
        config = entry["configuration"]
        assert set(config) == set(PARAMETERS) - {"model.name"}
        assert entry["inputs"]["N"] == 2.5e5
        # The base loss follows its law exactly, so its extrapolation is exact.
        assert entry["inputs"]["L0"] == pytest.approx(base_loss(2.5e5, config["model.pretrain_tokens_per_param"]))
        expected = forgetting(config["train.lr"], config["replay.ratio"])
        assert entry["predicted"]["lr_law"] == pytest.approx(expected, rel=1e-4)
        assert entry["predicted"]["constant"] == pytest.approx(np.mean(values))
        same_replay = [v for v, c in zip(values, GRID) if c[2] == config["replay.ratio"]]
        assert entry["predicted"]["next_smaller_same_replay"] == pytest.approx(np.mean(same_replay))
    assert {p["name"] for p in predicted["targets"]["learning"]["predictors"]} == {
        "constant",
        "next_smaller_same_replay",
    }


def test_measurements_score_each_frozen_predictor(predicted: dict) -> None:
    measured = [trial("m4", 2.5e5, *config, 100 + i) for i, config in enumerate(GRID)]
    for row in measured:
        row["forgetting"] *= 1.2  # the new rung forgets 20% more than every law and baseline expects
    extra = trial("m4", 2.5e5, 20.0, 2e-4, 0.125, 200)  # a configuration not predicted in advance
    scored = out_of_sample.score_rung(predicted, [*measured, extra, trial("m3", 1e5, *GRID[0], 300)])
    assert scored["measured_trials"] == len(GRID) + 1
    errors = {e["name"]: e for e in scored["measurements"]["forgetting"]["errors"]}
    # Frozen law at the measured inputs: predicted = measured / 1.2 on the grid, exact on the extra trial.
    assert errors["lr_law"]["error"] == pytest.approx((len(GRID) * (1 - 1 / 1.2)) / (len(GRID) + 1), rel=1e-3)
    assert errors["lr_law"]["preregistered_error"] == pytest.approx(1 - 1 / 1.2, rel=1e-3)
    assert errors["lr_law"]["preregistered_trials"] == len(GRID)
    constant = predicted["targets"]["forgetting"]["predictors"][1]["value"]
    observed = np.array([row["forgetting"] for row in [*measured, extra]])
    assert errors["constant"]["error"] == pytest.approx(np.mean(np.abs(constant - observed) / observed))
    assert errors["constant"]["abs_error"] == pytest.approx(np.mean(np.abs(constant - observed)))


def test_no_measurement_of_the_rung_is_an_error(predicted: dict) -> None:
    with pytest.raises(ValueError, match="no complete trial of m4"):
        out_of_sample.score_rung(predicted, [trial("m3", 1e5, *GRID[0], 0)])


def test_the_rung_must_be_larger_than_the_ladder() -> None:
    rows = [trial(name, n, *config, i) for i, (name, n) in enumerate(SIZES.items()) for config in GRID]
    with pytest.raises(ValueError, match="not larger than the largest rung"):
        out_of_sample.predict_rung(rows, PARAMETERS, "m0", 1e4)
