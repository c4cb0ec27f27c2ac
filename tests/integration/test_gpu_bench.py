"""`python bench/gpu.py --cpu`: the prepared GPU check runs end to end at smoke size, into a folder of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_at_smoke_size_on_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert (tmp_path / "gpu.md").read_text().startswith("# The prepared GPU check (CPU smoke size")
    assert set(report["speed"]) == {"SmolLM2-135M shape", "Qwen2-0.5B shape"}
    assert all(row["tokens_per_s"] > 0 and row["mfu"] is None for row in report["speed"].values())
    assert {"AdamW", "GaLore r16, per-layer"} <= set(report["memory"]["methods"])
    swept = report["sweep"]
    assert swept["ok"] and swept["placement_groups_left"] == [] and swept["completed"] + len(swept["stopped"]) == 4
    assert {trial["state"] for trial in swept["trials"]} <= {"COMPLETE", "PRUNED"}
