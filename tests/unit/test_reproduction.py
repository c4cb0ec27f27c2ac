"""`raycl report --compare`: a fresh pareto.csv against a committed one, trial by trial."""

from pathlib import Path

import pytest

from raycl.analysis.reproduction import compare_tables, read_table
from raycl.reporting.report import compare_reports, read_committed

HEADER = "trial,state,learning,forgetting,base_loss_before,model.name,model.pretrain_tokens_per_param,train.lr,"
HEADER += "replay.ratio,train.steps_per_stage\n"
COMMITTED = HEADER + (
    "t0000,COMPLETE,0.50,0.100,0.8934,raycl-tiny-s,40.0,7.25e-05,0.0,30\n"
    "t0001,COMPLETE,0.78,0.156,0.5537,raycl-tiny-l,10.0,8.2e-05,0.125,30\n"
    "t0002,FAIL,,,,raycl-tiny-xl,5.0,1e-4,0.0,30\n"
)


def table(text: str):
    return read_table(text, "test.csv")


def test_all_trials_within_tolerance_pass() -> None:
    fresh = COMMITTED.replace("0.100,", "0.1003,").replace("0.5537", "0.5540")  # 0.3% and 0.05%
    comparison = compare_tables(table(fresh), table(COMMITTED), tolerance=0.005)
    assert comparison.passed and not comparison.over
    assert max(comparison.differences) == pytest.approx(0.003)
    assert "0 trial(s) over the tolerance 0.50%" in comparison.summary()
    # The failed trial has no metrics in either table: nothing to compare, nothing over.
    assert len(comparison.differences) == 6


def test_a_trial_over_tolerance_fails() -> None:
    fresh = COMMITTED.replace("0.156,", "0.160,")  # t0001's forgetting, 2.6% off
    comparison = compare_tables(table(fresh), table(COMMITTED), tolerance=0.005)
    assert not comparison.passed
    assert [d.trial for d in comparison.over] == ["t0001"]
    assert comparison.over[0].relative["forgetting"] == pytest.approx(0.004 / 0.156)
    assert "max relative difference 2.564%" in comparison.summary()
    assert "1 trial(s) over" in comparison.summary()
    assert compare_tables(table(fresh), table(COMMITTED), tolerance=0.03).passed


def test_a_metric_missing_from_one_table_is_over_any_tolerance() -> None:
    fresh = COMMITTED.replace("0.78,0.156", "0.78,")
    comparison = compare_tables(table(fresh), table(COMMITTED), tolerance=10.0)
    assert [d.trial for d in comparison.over] == ["t0001"]


def test_a_different_configuration_is_an_error() -> None:
    fresh = COMMITTED.replace("raycl-tiny-l,10.0", "raycl-tiny-l,20.0")
    with pytest.raises(ValueError, match=r"trial t0001 ran another configuration: model.pretrain_tokens_per_param"):
        compare_tables(table(fresh), table(COMMITTED))


def test_numbers_compare_as_numbers_and_trial_sets_must_match() -> None:
    assert compare_tables(table(COMMITTED.replace("1e-4", "0.0001")), table(COMMITTED)).passed
    fewer = "".join(COMMITTED.splitlines(keepends=True)[:-1])
    with pytest.raises(ValueError, match=r"the trials differ: only in fresh: -; only in committed: t0002"):
        compare_tables(table(fewer), table(COMMITTED))
    with pytest.raises(ValueError, match=r"fresh: no column\(s\) train.lr"):
        compare_tables(table(COMMITTED.replace("train.lr", "lr")), table(COMMITTED))
    # A setting the space fixed is in neither table (pareto.csv holds the searched parameters): nothing to match.
    unsearched = COMMITTED.replace("train.lr", "lr")
    assert compare_tables(table(unsearched), table(unsearched)).passed


def test_compare_reports_reads_the_committed_table_before_the_report_overwrites_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pareto.csv: no such file"):
        read_committed(tmp_path)
    (tmp_path / "pareto.csv").write_text(COMMITTED)
    committed = read_committed(tmp_path)
    (tmp_path / "pareto.csv").write_text(COMMITTED.replace("0.50,", "0.60,"))  # the fresh report, same folder
    comparison = compare_reports(tmp_path / "pareto.csv", committed, tolerance=0.005)
    assert [d.trial for d in comparison.over] == ["t0000"]
