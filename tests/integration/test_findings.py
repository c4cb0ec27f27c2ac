"""`bench/findings.py --quick`: every finding in the JSON with its keys, intervals that hold the effect, per-seed
values that recompute it, one figure per finding, and a rerun that takes every trial from the cache."""

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
KEYS = {"finding", "source", "setting", "metric", "effect", "ci_low", "ci_high", "seeds", "reproduced", "note"}


def run_quick(out: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "findings.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quick_findings_write_seven_findings_with_intervals_and_resume_from_the_cache(tmp_path: Path) -> None:
    planned = re.search(r"(\d+) trials, (\d+) to run", run_quick(tmp_path))
    assert planned and planned[1] == planned[2] and int(planned[1]) > 7 * 3
    rows = json.loads((tmp_path / "findings.json").read_text())
    assert len(rows) == 7
    for i, row in enumerate(rows, 1):
        assert set(row) >= KEYS, row["finding"]
        assert row["finding"].startswith(f"{i}.")
        assert row["seeds"] == 3 == len(row["per_seed_effect"])
        assert row["ci_low"] <= row["effect"] <= row["ci_high"]
        assert row["effect"] == pytest.approx(np.mean(row["per_seed_effect"]))
        assert isinstance(row["reproduced"], bool) and row["note"]
        assert (tmp_path / f"findings_{i}.png").stat().st_size > 0
    assert "| 7. " in (tmp_path / "findings.md").read_text()
    # A rerun trains nothing: every trial comes back from the cache, with the same numbers.
    assert f"{planned[1]} trials, 0 to run" in run_quick(tmp_path)
    assert json.loads((tmp_path / "findings.json").read_text()) == rows
