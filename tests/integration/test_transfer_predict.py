"""Scaling-law-guided transfer: a prediction from the shipped report's table, with bootstrap refits."""

from __future__ import annotations

from pathlib import Path

import pytest

from raycl.reporting import transfer

pytestmark = pytest.mark.slow

REPORTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.fixture(scope="module")
def source() -> transfer.Source:
    # No store under this out-root: the table `raycl report scaling_laws` wrote is read instead.
    return transfer.load_source("scaling_laws", out_root=REPORTS / "no-such-runs", reports_dir=REPORTS)


def test_prediction_fits_only_smaller_sizes_and_picks_least_forgetting_at_the_required_learning(
    source: transfer.Source,
) -> None:
    record = transfer.predict(source, "raycl-tiny-xl", min_learning=0.8, bootstrap=4)
    assert record["fitted_sizes"] and max(record["fitted_sizes"]) < record["model_size"]
    assert record["source"].endswith("(the sweep's store is absent)")
    front = record["predicted_front"]
    meeting = [point for point in front if point["learning"] >= 0.8]
    assert record["meets_requirement"] and meeting
    assert record["predicted"]["forgetting"]["predicted"] == pytest.approx(
        min(point["forgetting"] for point in meeting)
    )
    for entry in record["predicted"].values():
        assert entry["low"] <= entry["high"]
    assert "raycl-tiny-xl" in transfer.describe(record)
