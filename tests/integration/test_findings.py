"""`bench/findings.py --quick`: the pilot's bands, then every finding in the JSON with its keys, intervals that hold
the effect, per-cell values that recompute it, one figure per finding, and a rerun that takes every trial from the
cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"finding", "metric", "band", "effect", "ci_low", "ci_high", "seeds", "world_seeds", "direction", "reproduced"}


def run_quick(out: Path, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "findings.py"), "--quick", "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=1200,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quick_findings_write_seven_findings_with_intervals_and_resume_from_the_cache(tmp_path: Path) -> None:
    run_quick(tmp_path, "--pilot")
    bands = json.loads((tmp_path / "findings_bands.json").read_text())
    assert len(bands) == 7 and all(b["levels"] == sorted(b["levels"]) and b["final_drop"] > 0 for b in bands.values())
    planned = re.search(r"(\d+) trials, (\d+) to run", run_quick(tmp_path))
    assert planned and planned[1] == planned[2] and int(planned[1]) > 7 * 4
    rows = json.loads((tmp_path / "findings.json").read_text())
    assert len(rows) == 7
    for i, row in enumerate(rows, 1):
        assert set(row) >= KEYS, row["finding"]
        assert row["finding"].startswith(f"{i}.")
        assert row["seeds"] == 2 == row["world_seeds"] and len(row["per_cell_effect"]) == 4
        assert row["ci_low"] <= row["effect"] <= row["ci_high"]
        assert row["effect"] == pytest.approx(np.mean([v for _, _, v in row["per_cell_effect"]]))
        assert row["reproduced"] in (True, False, "depends on the level") and 0 < row["epochs_per_stage"] <= 1
        assert (tmp_path / f"findings_{i}.png").stat().st_size > 0
    assert "| 7. " in (tmp_path / "findings.md").read_text()
    # A rerun trains nothing: every trial comes back from the cache, with the same numbers.
    assert f"{planned[1]} trials, 0 to run" in run_quick(tmp_path)
    assert json.loads((tmp_path / "findings.json").read_text()) == rows
