"""The registered scaling-law protocol: its hash, leave-one-size-out scoring, the paired interval, the
uninformative flag (hand-made data; the fits themselves: test_report_fits.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from raycl.analysis import scaling
from raycl.reporting import transfer

REPORTS = Path(__file__).resolve().parents[2] / "reports"
PROTOCOL = """\
scoring: {folds: leave_one_size_out, bootstrap: 1000, level: 0.95, seed: 0, uninformative_ratio: 10}
laws:
  - {name: no_n, target: forgetting, expression: "L0 + A * D**b", params: [A, b]}
baselines:
  - {name: constant, kind: constant, description: mean of the other sizes}
  - {name: next_smaller, kind: next_smaller, description: the next-smaller size's mean}
  - {name: next_smaller_same_replay, kind: next_smaller, match: [r], description: the same at the trial's r}
"""


@pytest.fixture
def protocol(tmp_path: Path) -> scaling.Protocol:
    path = tmp_path / "protocol.yaml"
    path.write_text(PROTOCOL)
    return scaling.load_protocol(path)


def hand_made() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three sizes, two trials each (replay 0 and 0.5), base loss 1: forgetting 0.1 0.3 | 0.2 0.4 | 0.4 0.6."""
    forgetting = np.array([0.1, 0.3, 0.2, 0.4, 0.4, 0.6])
    data = {
        "N": np.array([1.0, 1, 2, 2, 3, 3]),
        "r": np.array([0.0, 0.5] * 3),
        "L0": np.ones(6),
        "D": np.ones(6),
    }
    return data, 1.0 + forgetting


def test_loso_scores_of_the_baselines_match_a_hand_computation(protocol: scaling.Protocol) -> None:
    data, values = hand_made()
    board = scaling.score_target("forgetting", data, values, [], protocol)
    scores = {score.name: score for score in board.baselines}
    # Held out size 1: the other sizes' mean 0.4; size 2: 0.35; size 3: 0.25.
    assert scores["constant"].predicted.tolist() == pytest.approx([0.4, 0.4, 0.35, 0.35, 0.25, 0.25])
    assert scores["constant"].loso_error == pytest.approx((3 + 1 / 3 + 0.75 + 0.125 + 0.375 + 7 / 12) / 6)
    assert scores["constant"].loso_abs_error == pytest.approx((0.3 + 0.1 + 0.15 + 0.05 + 0.15 + 0.35) / 6)
    # Size 1 has no smaller size: its next larger (mean 0.3); sizes 2 and 3: sizes 1 (0.2) and 2 (0.3).
    assert scores["next_smaller"].predicted.tolist() == pytest.approx([0.3, 0.3, 0.2, 0.2, 0.3, 0.3])
    # At the same replay ratio: the neighbour size's trial with the trial's r.
    same = scores["next_smaller_same_replay"]
    assert same.predicted.tolist() == pytest.approx([0.2, 0.4, 0.1, 0.3, 0.2, 0.4])
    assert same.loso_error == pytest.approx((1 + 1 / 3 + 0.5 + 0.25 + 0.5 + 1 / 3) / 6)
    assert [s.name for s in board.ranking] == ["next_smaller_same_replay", "next_smaller", "constant"]


def test_a_law_is_fitted_without_the_held_out_size(protocol: scaling.Protocol) -> None:
    # Forgetting 0.2 * D**0.5 at sizes 1 and 2; size 3 forgets twice as much. Held out, size 3 is predicted
    # by the law fitted on sizes 1 and 2 alone: exactly half its measurement, a relative error of 0.5.
    data = {"N": np.repeat([1.0, 2, 3], 4), "L0": np.ones(12), "D": np.tile([1.0, 2, 4, 8], 3), "r": np.zeros(12)}
    forgetting = 0.2 * data["D"] ** 0.5 * np.where(data["N"] == 3, 2.0, 1.0)
    law = protocol.specs()[0].law
    board = scaling.score_target("forgetting", data, 1 + forgetting, [law], protocol)
    score = board.of("no_n")
    assert score is not None and score.complete
    assert score.relative_errors[8:] == pytest.approx(np.full(4, 0.5), abs=1e-4)
    assert score.loso_error == pytest.approx(score.relative_errors.mean())


def test_paired_interval_resamples_the_same_trials_for_both_predictors() -> None:
    # The law is 0.05 better on every trial, under a per-trial spread far larger than that: only a paired
    # resample sees the difference (an unpaired one would give an interval around zero, about +-0.3 wide).
    spread = np.random.default_rng(1).uniform(0.1, 2.0, 40)
    observed = np.ones(40)
    baseline = scaling.LosoScore("b", "baseline", 1 + spread, observed, [])
    law = scaling.LosoScore("l", "law", 1 + spread - 0.05, observed, [])
    difference = scaling.paired_difference(law, baseline, resamples=2000, level=0.95, seed=0)
    assert difference.mean == pytest.approx(-0.05)
    assert difference.ci_low == pytest.approx(-0.05) and difference.ci_high == pytest.approx(-0.05)
    assert difference.excludes_zero


def test_protocol_hash_is_the_hash_of_the_file_bytes(protocol: scaling.Protocol, tmp_path: Path) -> None:
    assert protocol.sha256 == hashlib.sha256((tmp_path / "protocol.yaml").read_bytes()).hexdigest()
    registered = scaling.load_protocol()
    assert registered.sha256 == hashlib.sha256(scaling.PROTOCOL_PATH.read_bytes()).hexdigest()
    assert scaling.fits_record({}, registered)["protocol_sha256"] == registered.sha256
    (tmp_path / "protocol.yaml").write_text(PROTOCOL + "# a comment changes the protocol\n")
    assert scaling.load_protocol(tmp_path / "protocol.yaml").sha256 != protocol.sha256


def test_shipped_fits_were_scored_by_the_registered_protocol() -> None:
    fits = json.loads((REPORTS / "scaling_laws" / "fits.json").read_text())
    if "protocol_sha256" not in fits:
        pytest.skip("reports/scaling_laws/fits.json predates the protocol: run bench/scaling_laws_report.py")
    assert fits["protocol_sha256"] == hashlib.sha256(scaling.PROTOCOL_PATH.read_bytes()).hexdigest()
    for target in fits["targets"].values():
        assert all("loso_error" in law and "loso_abs_error" in law for law in target["laws"])
        assert target["best_law_vs_best_baseline"] is not None
    assert all("loso_error" in baseline for baseline in fits["baselines"])


def test_every_registered_law_and_baseline_parses() -> None:
    registered = scaling.load_protocol()
    names = {(spec.target, spec.law.name) for spec in registered.specs()}
    assert {("forgetting", n) for n in ("bethune", "saturating", "kalajdzievski", "dcpt")} <= names
    assert {b.name for b in registered.baselines_of("forgetting")} >= {"constant", "next_smaller", "no_size"}
    assert "N" not in next(b for b in registered.baselines_of("forgetting") if b.name == "no_size").symbols()


def test_bad_protocol_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "protocol.yaml"
    path.write_text(PROTOCOL.replace("kind: constant", "kind: median"))
    with pytest.raises(ValueError, match=f"{path}.*baselines"):
        scaling.load_protocol(path)


@pytest.mark.parametrize(
    ("low", "high", "flag"),
    [(0.0047, 0.146, True), (0.73, 0.87, False), (0.1, 0.99, False), (0.1, 1.01, True), (0.0, 0.2, True)],
)
def test_uninformative_flag(low: float, high: float, flag: bool) -> None:
    assert scaling.interval_uninformative(low, high, 10) is flag
    entry = transfer.compare({"predicted": low, "low": low, "high": high, "uninformative": flag}, measured=low)
    assert entry["inside"] is (None if flag else True)  # a hit inside an uninformative interval is not counted


def test_no_interval_is_neither_informative_nor_a_hit() -> None:
    assert scaling.interval_uninformative(None, None, 10) is None
    entry = transfer.compare({"predicted": 0.1, "low": None, "high": None, "uninformative": None}, measured=0.1)
    assert entry["inside"] is None
