"""Faults end to end, on a real local Ray, real Optuna sqlite studies and real MLflow sqlite stores:
diverging and failing trials, secrets, loopback-only Ray, SIGTERM, a killed driver, two drivers on
one study."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from raycl.config.records import Artifacts, Tags
from raycl.sweep import run_sweep
from raycl.sweep.failures import ERROR_FILE_ATTR
from raycl.sweep.ray_session import RAY_TEMP_RECORD

pytestmark = pytest.mark.slow

TOKEN = "hf_planted0123456789abcdefSECRET"
# One short stage and no lm-eval benchmarks: these tests are about the sweep, not the model.
FIXED = {
    "world": {"num_stages": 1},
    "train": {"steps_per_stage": 10, "warmup_steps": 0},
    "eval": {"benchmarks": {"tasks": []}},
}


def write_space(
    tmp_path: Path, name: str, parameters: dict, trials: int, concurrency: int, seed: int = 0, **fixed
) -> Path:
    space = {
        "objectives": {"learning": "maximize", "forgetting": "minimize"},
        "parameters": parameters,
        "fixed": {section: FIXED.get(section, {}) | fixed.get(section, {}) for section in {*FIXED, *fixed}},
        "budget": {"trials": trials, "concurrency": concurrency, "workers_per_trial": 1, "cpus_per_worker": 1},
        "sampler": {"name": "random"},
        "seed": seed,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


LR = {"train.lr": {"type": "log_uniform", "low": 1.0e-3, "high": 1.0e-2}}


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_raycl_run_stops_a_diverging_trial_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "diverge.yaml"
    config.write_text(
        yaml.safe_dump(
            FIXED
            | {
                "train": {"lr": 0.5, "grad_clip": 1.0e9, "steps_per_stage": 10, "warmup_steps": 0},
                "ewc": {"weight": 1.0e12},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "raycl.cli", "run", str(config), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: diverged at step 2 (stage 1)" in done.stdout and "train.divergence_factor" in done.stdout
    result = strict_json(tmp_path / "out" / "result.json")
    assert result["diverged"] is True and result["step"] == 2 and result["loss"] > 3 * result["first_loss"]
    assert not (tmp_path / "out" / "checkpoints").exists()  # stopped inside the first stage


def test_a_sweep_records_why_trials_failed_or_diverged_and_goes_on(tmp_path: Path) -> None:
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    parameters = {
        "model.name": {"type": "categorical", "choices": ["raycl-tiny-s", str(broken)]},
        "ewc.weight": {"type": "categorical", "choices": [0.0, 1.0e12]},
    }
    # Seed 11 draws a diverging trial, a broken model and a healthy trial, in that order.
    path = write_space(
        tmp_path, "faults", parameters, trials=3, concurrency=2, seed=11, train={"lr": 0.5, "grad_clip": 1.0e9}
    )
    outcome = run_sweep(path, out_root=tmp_path / "runs", num_cpus=2)

    study = optuna.load_study(study_name="faults", storage=outcome.storage)
    kinds = {
        t.number: "broken" if t.params["model.name"] == str(broken) else "diverged" if t.params["ewc.weight"] else "ok"
        for t in study.trials
    }
    assert sorted(kinds.values()) == ["broken", "diverged", "ok"]
    assert (outcome.completed, outcome.failed, outcome.unfinished) == (1, 2, 0)  # the sweep went on past both failures
    client = MlflowClient(tracking_uri=outcome.tracking_uri)
    children = {
        run.data.tags[Tags.TRIAL]: run
        for run in client.search_runs(
            [client.get_experiment_by_name("raycl-faults").experiment_id], "tags.`mlflow.parentRunId` != ''"
        )
    }
    for trial in study.trials:
        key, kind = f"t{trial.number:04d}", kinds[trial.number]
        child = children[key]
        if kind == "ok":
            assert trial.state == TrialState.COMPLETE and child.info.status == "FINISHED"
            assert Tags.FAILURE not in child.data.tags
            continue
        assert trial.state == TrialState.FAIL and child.info.status == "FAILED"
        reason = trial.user_attrs[Tags.FAILURE]
        assert child.data.tags[Tags.FAILURE] == reason == outcome.failures[key] and "\n" not in reason
        error_file = Path(trial.user_attrs[ERROR_FILE_ATTR])
        assert error_file == outcome.out_dir / "trials" / key / Artifacts.ERROR
        assert 'File "' in error_file.read_text()  # the full traceback
        assert Artifacts.ERROR in {item.path for item in client.list_artifacts(child.info.run_id)}
        if kind == "broken":
            assert reason.startswith(f"ModelFileError: {broken / 'config.json'}: not valid JSON (Expecting value")
        else:
            assert reason.startswith("diverged at step 2 (stage 1): the loss") and trial.user_attrs[Tags.DIVERGED] == 2
            assert child.data.tags[Tags.DIVERGED] == "2"
            assert strict_json(outcome.out_dir / "trials" / key / "result.json")["diverged"] is True


def ray_processes(temp_dir: str) -> list[psutil.Process]:
    """The processes of the local Ray whose private temp dir is `temp_dir` (found by their command lines)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def listening_addresses(root: psutil.Process) -> set[str]:
    addresses = set()
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            addresses |= {c.laddr.ip for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    return addresses


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


class Driver:
    """`run_sweep` in a subprocess with a planted HF_TOKEN, its output in a log file."""

    def __init__(self, tmp_path: Path, space: Path, out_root: Path, name: str, *args: str):
        self.log = tmp_path / f"{name}.log"
        env = os.environ | {"HF_TOKEN": TOKEN}
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "raycl.cli", "sweep", str(space), "--out-root", str(out_root), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text():
                return
            if self.process.poll() is not None:
                pytest.fail(
                    f"driver exited ({self.process.returncode}) before {text!r}:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        pytest.fail(f"no {text!r} within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def finish(self, timeout: float = 600) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"driver still running after {timeout} s:\n{self.log.read_text()[-3000:]}")


# The formats of Ray's and MLflow's log handlers: "2026-01-02 03:04:05,678\tWARNING x.py:1 -- ..." and
# "2026/01/02 03:04:05 INFO mlflow...".
LIBRARY_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ |^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ mlflow"
)


def test_a_sweep_prints_its_own_lines_and_writes_rays_and_mlflows_to_its_log_file(tmp_path: Path) -> None:
    space = write_space(tmp_path, "quiet", LR, trials=2, concurrency=2)
    out_root = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "raycl.cli", "sweep", str(space), "--out-root", str(out_root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    terminal = done.stdout + done.stderr
    assert "sweep quiet: 2 complete" in done.stdout
    assert [line for line in terminal.splitlines() if LIBRARY_LOG_LINE.match(line)] == []
    assert "experiment_state" not in terminal and "Token authentication" not in terminal
    log = (out_root / "quiet" / "sweep.log").read_text()
    assert "Creating initial MLflow database tables" in log  # MLflow's, from the store this sweep created
    if "RAY_AUTH_MODE" not in os.environ:  # set explicitly, Ray says nothing about it
        assert "Token authentication is" in log


def test_sigterm_a_killed_driver_and_a_planted_token_on_a_loopback_only_local_ray(tmp_path: Path) -> None:
    space = write_space(tmp_path, "secrets", LR, trials=2, concurrency=1, train={"steps_per_stage": 60})
    out_root = tmp_path / "runs"
    out_dir = out_root / "secrets"

    # 1. SIGTERM mid-trial: like Ctrl-C, every MLflow run is closed and Ray's temp dir removed.
    first = Driver(tmp_path, space, out_root, "sigterm")
    first.wait_for("t0000 started")
    temp_dir = (out_dir / RAY_TEMP_RECORD).read_text()
    addresses = listening_addresses(psutil.Process(first.process.pid))
    assert addresses and all(ipaddress.ip_address(a.removeprefix("::ffff:")).is_loopback for a in addresses), addresses
    first.process.send_signal(signal.SIGTERM)
    assert first.finish(timeout=180) == 130, first.log.read_text()[-3000:]
    assert not Path(temp_dir).exists() and not (out_dir / RAY_TEMP_RECORD).exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{out_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("raycl-secrets").experiment_id])
    assert runs and {run.info.status for run in runs} <= {"KILLED", "FINISHED"}

    # 2. SIGKILL mid-trial: the temp dir stays behind, and Ray's logs, which hold the runtime env,
    # must not hold the token.
    second = Driver(tmp_path, space, out_root, "sigkill", "--resume")
    second.wait_for("started")
    temp_dir = (out_dir / RAY_TEMP_RECORD).read_text()
    time.sleep(3)
    second.process.kill()
    second.process.wait()
    deadline = time.monotonic() + 60
    while ray_processes(temp_dir) and time.monotonic() < deadline:
        time.sleep(1)
    assert not ray_processes(temp_dir)  # Ray's processes die with their driver, within seconds
    assert "runtime_env_agent.log" in {log.name for log in Path(temp_dir).rglob("*.log")}
    assert files_holding(Path(temp_dir), TOKEN) == []

    # 3. The next driver deletes that temp dir, and finishes the budget.
    third = Driver(tmp_path, space, out_root, "resume", "--resume")
    assert third.finish() == 0, third.log.read_text()[-3000:]
    assert not Path(temp_dir).exists()
    study = optuna.load_study(study_name="secrets", storage=f"sqlite:///{out_dir / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    # The run dir holds the MLflow store and its artifacts, Optuna's study and Ray's storage.
    assert {"mlflow.db", "mlartifacts", "optuna.db", "ray", "trials"} <= {p.name for p in out_dir.iterdir()}
    assert files_holding(out_dir, TOKEN) == []
    assert all(TOKEN not in log.read_text() for log in tmp_path.glob("*.log"))


def test_two_drivers_on_one_study_run_each_trial_once_and_stop_at_the_budget(tmp_path: Path) -> None:
    # Trials long enough that the second driver usually joins while the first still has trials to run.
    space = write_space(tmp_path, "shared", LR, trials=3, concurrency=1, train={"steps_per_stage": 60})
    storage = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
    first = Driver(tmp_path, space, tmp_path / "a", "a", "--storage", storage)
    first.wait_for("t0000 started")
    second = Driver(tmp_path, space, tmp_path / "b", "b", "--storage", storage, "--resume")
    assert first.finish() == 0, first.log.read_text()[-3000:]
    assert second.finish() == 0, second.log.read_text()[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    ran = {root: {p.name for p in (tmp_path / root / "shared" / "trials").glob("t*")} for root in ("a", "b")}
    assert ran["a"] | ran["b"] == {"t0000", "t0001", "t0002"} and not ran["a"] & ran["b"]
    # The second driver took none of the first's trials. (Whether it ran any depends on how fast the
    # first one's trials go: a fast machine may finish them all before the second driver's Ray is up.)
    assert "t0000" in ran["a"]
    for root in ("a", "b"):
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / root / 'shared' / 'mlflow.db'}")
        children = client.search_runs(
            [client.get_experiment_by_name("raycl-shared").experiment_id], "tags.`mlflow.parentRunId` != ''"
        )
        assert sorted(run.data.tags[Tags.TRIAL] for run in children) == sorted(ran[root])
        assert all(run.info.status == "FINISHED" for run in children)  # none where that driver ran no trial
