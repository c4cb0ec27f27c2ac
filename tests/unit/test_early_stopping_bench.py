"""bench/early_stopping.py's replay of the promotion rule on recorded trials (what its design study rests on)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from raycl.config.space import EarlyStopping

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from early_stopping import replay, simulate  # noqa: E402

# (learning, forgetting) of four trials, the same after every stage; each stage takes one second.
VALUES = {"t0000": [0.5, 0.5], "t0001": [0.1, 0.9], "t0002": [0.9, 0.1], "t0003": [0.05, 0.95]}
RECORDS = {
    key: {"stage_values": [values] * 4, "stage_time_s": [1.0] * 4, "final": values} for key, values in VALUES.items()
}


def test_replay_starts_trials_in_order_on_free_slots_and_ranks_them_on_arrival() -> None:
    # t0 arrives alone and goes on; t1, dominated by t0, is stopped and t2 takes its slot; t2 dominates
    # everything; t3 arrives last, when t0 has ended, and is dominated by all three.
    assert simulate(RECORDS, 2, EarlyStopping(rungs=[1], reduction=2)) == {
        "t0000": 4,
        "t0001": 1,
        "t0002": 4,
        "t0003": 1,
    }
    # At rungs 1 and 2 with reduction 4 only one of n < 5 continues: t0 (first) and t2 (best).
    assert simulate(RECORDS, 2, EarlyStopping(rungs=[1, 2], reduction=4))["t0002"] == 4


def test_replayed_ratios_count_stages_run_and_the_front_of_completed_trials() -> None:
    ratios = replay(RECORDS, np.array([0.0, 1.0]), EarlyStopping(rungs=[1], reduction=2))
    assert ratios == {"hypervolume_ratio": 1.0, "compute_ratio": 10 / 16}  # t2, which dominates all, completed
