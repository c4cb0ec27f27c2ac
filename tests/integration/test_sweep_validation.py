"""A malformed search space stops `run_sweep` within seconds, in one line, leaving nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raycl.config import ConfigError
from raycl.config.space import SHIPPED_DIR
from raycl.sweep import run_sweep

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = pytest.mark.slow

MALFORMED = {
    "unknown_key": (lambda s: s["budget"].update(concurrncy=2), "budget.concurrncy: unknown key"),
    "empty_range": (
        lambda s: s["parameters"]["replay.ratio"].update(high=0.0),
        "parameters.replay.ratio.high: empty range",
    ),
    "missing_condition": (
        lambda s: s["parameters"].update(
            {"method.galore_rank": {"type": "int", "low": 4, "high": 8, "when": {"method.nam": "galore"}}}
        ),
        "parameters.method.galore_rank.when.method.nam: condition on a parameter that is not searched",
    ),
}


def malformed_space(tmp_path: Path, case: str) -> Path:
    space = yaml.safe_load((SHIPPED_DIR / "smoke.yaml").read_text())
    MALFORMED[case][0](space)
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_space_creates_no_study_and_no_run(tmp_path: Path, case: str) -> None:
    path = malformed_space(tmp_path, case)
    out_root = tmp_path / "runs"
    with pytest.raises(ConfigError) as caught:
        run_sweep(path, out_root=out_root)
    message = str(caught.value)
    assert message.startswith(f"{path}: {MALFORMED[case][1]}")
    assert "\n" not in message
    assert not out_root.exists()  # no optuna.db, no mlflow.db, no Ray storage
    assert not list(Path.cwd().glob("mlruns")) and not (Path.cwd() / "mlflow.db").exists()


def test_malformed_space_fails_in_a_fresh_process_within_five_seconds(tmp_path: Path) -> None:
    path = malformed_space(tmp_path, "empty_range")
    script = (
        "import sys\n"
        "from raycl.config import ConfigError\n"
        "from raycl.sweep import run_sweep\n"
        "try:\n"
        f"    run_sweep({str(path)!r}, out_root={str(tmp_path / 'runs')!r})\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
        "    print(sorted(m for m in ('ray', 'mlflow', 'optuna', 'torch') if m in sys.modules))\n"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    error_line, heavy_modules = done.stdout.strip().splitlines()
    assert error_line.startswith(f"{path}: parameters.replay.ratio.high: empty range")
    assert heavy_modules == "[]"  # validation ran before Ray, MLflow, Optuna or torch were imported
    assert elapsed < 5.0
    assert not (tmp_path / "runs").exists()


def test_cli_validate_checks_every_shipped_space_and_rejects_a_bad_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from raycl.cli import app

    runner = CliRunner()
    spaces = sorted(SHIPPED_DIR.glob("*.yaml"))
    # Without the real data samples beside the clone, every shipped space that does not read them, by path.
    readable = [] if SHARED.exists() else [str(p) for p in spaces if "../shared" not in p.read_text()]
    shipped = runner.invoke(app, ["validate", *readable])
    assert shipped.exit_code == 0, shipped.output
    assert {line.split("/")[-1] for line in shipped.output.splitlines()} >= {
        "smoke.yaml",
        "methods.yaml",
        "scaling_laws.yaml",
    }
    bad = malformed_space(tmp_path, "unknown_key")
    rejected = runner.invoke(app, ["validate", str(bad)])
    assert rejected.exit_code == 2
    assert "budget.concurrncy: unknown key" in rejected.output


def test_cli_sweep_reports_a_malformed_space_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from raycl.cli import app

    bad = malformed_space(tmp_path, "missing_condition")
    result = CliRunner().invoke(app, ["sweep", str(bad), "--out-root", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and str(bad) in result.output
    assert not (tmp_path / "runs").exists()


STREAM_SPACE = """
objectives: {learning: maximize, forgetting: minimize}
parameters:
  stream.shape.examples_per_stage: {type: int, low: 8, high: 32}
fixed:
  stream: {source: {path: chats.jsonl}, shape: {by: count, stages: 2}}
  eval: {benchmarks: {tasks: []}}
budget: {trials: 2}
sampler: {name: random}
seed: 0
"""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text, None),
        (
            lambda text: text.replace("examples_per_stage: {", "examples_per_stag: {"),
            "parameters.stream.shape.examples_per_stag: not a trial config key",
        ),
        (lambda text: text.replace("stages: 2}", "stages: 2, stagez: 3}"), "fixed.stream.shape.stagez: unknown key"),
        (lambda text: text.replace("chats.jsonl", "missing.jsonl"), "stream.source: "),
    ],
    ids=["searched stream key", "bad searched stream key", "bad fixed stream key", "missing data file"],
)
def test_cli_validate_checks_stream_keys(tmp_path: Path, edit, expected: str | None) -> None:
    from typer.testing import CliRunner

    from raycl.cli import app

    chats = tmp_path / "chats.jsonl"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    chats.write_text("".join(json.dumps({"messages": turns}) + "\n" for _ in range(30)))
    path = tmp_path / "stream.yaml"
    path.write_text(edit(STREAM_SPACE).replace("path: ", f"path: {tmp_path}/"))  # the space names its data file
    result = CliRunner().invoke(app, ["validate", str(path)])
    if expected is None:
        lines = result.output.strip().splitlines()
        assert result.exit_code == 0 and lines[0] == f"ok {path}", result.output
        assert lines[1].startswith(f"  fixed.stream.source: {chats}")
    else:
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1
        assert lines[0].startswith(f"error: {path}: {expected}")


def test_cli_sweep_with_an_unreachable_tracking_server_fails_fast_in_one_line(tmp_path: Path) -> None:
    """No study, no run, no lock left behind; the password never printed; no minutes of retries."""
    out_root = tmp_path / "runs"
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raycl.cli",
            "sweep",
            "smoke",
            "--tracking-uri",
            "http://u:pw@127.0.0.1:9",
            "--out-root",
            str(out_root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert elapsed < 20
    assert len(output.strip().splitlines()) <= 3
    assert "pw" not in output and "http://u:***@127.0.0.1:9" in output
    assert not out_root.exists()
