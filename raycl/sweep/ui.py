"""`raycl ui NAME`: the MLflow UI and the Optuna dashboard of a local sweep, served side by side.

Each runs as a child process of its own (`mlflow server` on `OUT_ROOT/NAME/mlflow.db`,
`optuna-dashboard` on `OUT_ROOT/NAME/optuna.db`), on 127.0.0.1 unless told otherwise. Both start in
a new process group, so that stopping them also stops the workers they spawn (MLflow's uvicorn and
job runner).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from raycl.config import ConfigError

LOOPBACK = ("127.0.0.1", "localhost")
START_TIMEOUT_S = 180.0  # MLflow's server took 45 s to answer on a busy 2-core machine
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Server:
    name: str  # "MLflow UI", "Optuna dashboard"
    command: list[str]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


def servers(sweep_dir: Path, host: str, mlflow_port: int, optuna_port: int) -> list[Server]:
    """The UIs of the sweep in `sweep_dir`, one per store it holds; a `ConfigError` when it holds neither."""
    found = []
    mlflow_db, optuna_db = sweep_dir / "mlflow.db", sweep_dir / "optuna.db"
    if mlflow_db.is_file():
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{mlflow_db.resolve()}",
                   "--host", host, "--port", str(mlflow_port), "--workers", "1"]
        if host not in LOOPBACK:
            # MLflow answers only requests addressed to localhost unless told which other names to accept.
            command += ["--allowed-hosts", f"{host},{host}:{mlflow_port}"]
        found.append(Server("MLflow UI", command, host, mlflow_port))
    if optuna_db.is_file():
        dashboard = shutil.which("optuna-dashboard", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if dashboard is None:
            raise ConfigError("optuna-dashboard is not installed: pip install 'raycl[ui]'")
        command = [dashboard, f"sqlite:///{optuna_db.resolve()}", "--host", host, "--port", str(optuna_port), "--quiet"]
        found.append(Server("Optuna dashboard", command, host, optuna_port))
    if not found:
        raise ConfigError(f"{sweep_dir}: no mlflow.db or optuna.db here: not a local sweep's folder")
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after `STOP_TIMEOUT_S`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def serve(found: list[Server], log_dir: Path, ready: Callable[[Server], None]) -> None:
    """Start every server, call `ready` as each one answers, and keep them up until one exits or the
    caller is interrupted (Ctrl-C, or SIGTERM, turned into the same); then stop them all."""
    log_dir.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous)
        running = []
        for server in found:
            log = stack.enter_context((log_dir / f"{server.name.split()[0].lower()}.log").open("w"))
            process = subprocess.Popen(server.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            stack.callback(_stop, process)
            running.append((server, process))
        waiting = list(running)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for server, process in running:
                if process.poll() is not None:
                    raise RuntimeError(f"{server.name} exited with status {process.returncode}; its output: {log_dir}")
            for server, process in list(waiting):
                if _answers(server.url):
                    waiting.remove((server, process))
                    ready(server)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{waiting[0][0].name} did not answer at {waiting[0][0].url} " f"within {START_TIMEOUT_S:.0f} s; its output: {log_dir}")
            time.sleep(0.5)
