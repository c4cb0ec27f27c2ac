"""`raycl ui NAME`: the MLflow UI and the Optuna dashboard of a local sweep, served side by side.

Each runs as a child process of its own (`mlflow server` on `OUT_ROOT/NAME/mlflow.db`,
`optuna-dashboard` on `OUT_ROOT/NAME/optuna.db`), on 127.0.0.1 unless told otherwise. Both start in
a new process group, so that stopping them also stops the workers they spawn (MLflow's uvicorn and
job runner).

MLflow 3 opens an experiment in its GenAI view unless the experiment's kind says otherwise, and its runs
table shows the parent run collapsed with no metric columns; so the sweep's experiment is marked as model
development and given a shared view (an experiment tag the UI reads from the `viewStateShareKey` URL
parameter): the trials flat, learning and forgetting and the searched parameters as columns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from raycl.config import ConfigError

LOOPBACK = ("127.0.0.1", "localhost")
SHARED_VIEW = "raycl-trials"  # the key of the runs-table view `raycl ui` links to
START_TIMEOUT_S = 180.0  # MLflow's server took 45 s to answer on a busy 2-core machine
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Server:
    name: str  # "MLflow UI", "Optuna dashboard"
    command: list[str]
    host: str
    port: int
    links: dict[str, str] = field(default_factory=dict)  # what -> a page of this server (the paths after its url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, port: int | None, default: int, option: str) -> tuple[int, str | None]:
    """The port to serve on and, when the default was busy, a note saying which was taken instead.

    A port the user asked for that is busy is a `ConfigError` naming it and the option; a busy default
    moves to the next free port above it.
    """
    if port is not None:
        if not port_is_free(host, port):
            raise ConfigError(f"port {port} on {host} is in use (another server?); choose another with {option} PORT")
        return port, None
    for candidate in range(default, default + 50):
        if port_is_free(host, candidate):
            if candidate == default:
                return candidate, None
            return candidate, f"port {default} is in use; serving on {candidate} ({option} picks one)"
    raise ConfigError(f"ports {default}-{default + 49} on {host} are all in use; choose one with {option} PORT")


def mlflow_links(db: Path, name: str) -> dict[str, str]:
    """The sweep's experiment set up for the UI (kind, a runs-table view of its trials), and links to its pages."""
    from mlflow.tracking import MlflowClient

    from raycl.config.records import Tags

    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    experiment = client.get_experiment_by_name(f"raycl-{name}")
    if experiment is None:
        return {}
    parent_filter = f"tags.`{Tags.ROLE}` = 'parent'"
    parents = client.search_runs([experiment.experiment_id], filter_string=parent_filter, max_results=1)
    base = f"#/experiments/{experiment.experiment_id}"
    links = {"experiment": f"{base}/runs?viewStateShareKey={SHARED_VIEW}&compareRunsMode=TABLE"}
    client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")
    if not parents:
        return links
    parent = parents[0]
    objectives = parent.data.tags.get("raycl.objectives", "learning:maximize,forgetting:minimize").split(",")
    metrics = [objective.split(":")[0] for objective in objectives]
    trials = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    children = client.search_runs([experiment.experiment_id], filter_string=trials, max_results=1000)
    searched = dict.fromkeys(
        name for child in children for name in child.data.tags.get(Tags.SEARCHED, "").split(",") if name
    )
    view = {
        "searchFilter": trials,
        "orderByKey": f"metrics.`{metrics[0]}`",
        "orderByAsc": objectives[0].endswith(":minimize"),
        "selectedColumns": [f"metrics.`{metric}`" for metric in metrics] + [f"params.`{p}`" for p in searched],
    }
    client.set_experiment_tag(experiment.experiment_id, f"mlflow.sharedViewState.{SHARED_VIEW}", json.dumps(view))
    return links | {"parent run": f"{base}/runs/{parent.info.run_id}"}


def optuna_links(db: Path, name: str) -> dict[str, str]:
    """A link to the sweep's study in the dashboard."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
    try:
        return {"study": f"dashboard/studies/{storage.get_study_id_from_name(name)}"}
    except KeyError:
        return {}


def servers(sweep_dir: Path, host: str, mlflow_port: int, optuna_port: int) -> list[Server]:
    """The UIs of the sweep in `sweep_dir`, one per store it holds; a `ConfigError` when it holds neither."""
    found = []
    mlflow_db, optuna_db = sweep_dir / "mlflow.db", sweep_dir / "optuna.db"
    if mlflow_db.is_file():
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{mlflow_db.resolve()}",
            "--host",
            host,
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ]
        if host not in LOOPBACK:
            # MLflow answers only requests addressed to localhost unless told which other names to accept.
            command += ["--allowed-hosts", f"{host},{host}:{mlflow_port}"]
        found.append(Server("MLflow UI", command, host, mlflow_port, mlflow_links(mlflow_db, sweep_dir.name)))
    if optuna_db.is_file():
        dashboard = shutil.which(
            "optuna-dashboard", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        )
        if dashboard is None:
            raise ConfigError("optuna-dashboard is not installed: pip install 'raycl[ui]'")
        command = [dashboard, f"sqlite:///{optuna_db.resolve()}", "--host", host, "--port", str(optuna_port), "--quiet"]
        found.append(Server("Optuna dashboard", command, host, optuna_port, optuna_links(optuna_db, sweep_dir.name)))
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
            process = subprocess.Popen(
                server.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"},
            )
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
                raise RuntimeError(
                    f"{waiting[0][0].name} did not answer at {waiting[0][0].url} "
                    f"within {START_TIMEOUT_S:.0f} s; its output: {log_dir}"
                )
            time.sleep(0.5)
