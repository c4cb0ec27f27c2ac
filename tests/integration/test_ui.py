"""`raycl ui NAME` serves a sweep's MLflow UI and Optuna dashboard from stores made by real MLflow and
Optuna calls, answers both over HTTP on 127.0.0.1, and stops both on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raycl.cli import app

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_sweep_stores(sweep_dir: Path) -> str:
    """The two stores of a sweep named `tiny`, written the way a sweep writes them; the parent run's id."""
    import mlflow
    import optuna

    sweep_dir.mkdir(parents=True)
    client = mlflow.MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")
    experiment = client.create_experiment("raycl-tiny", artifact_location=str(sweep_dir / "mlartifacts"))
    objectives = "learning:maximize,forgetting:minimize"
    run = client.create_run(experiment, run_name="tiny", tags={"raycl.role": "parent", "raycl.objectives": objectives})
    client.log_metric(run.info.run_id, "hypervolume", 0.25)
    tags = {"mlflow.parentRunId": run.info.run_id, "raycl.searched": "train.lr"}
    child = client.create_run(experiment, run_name="t0000", tags=tags)
    client.log_metric(child.info.run_id, "learning", 0.5)
    for finished in (child, run):
        client.set_terminated(finished.info.run_id)
    study = optuna.create_study(
        storage=f"sqlite:///{sweep_dir / 'optuna.db'}", study_name="tiny", directions=["maximize", "minimize"]
    )
    study.optimize(lambda trial: (trial.suggest_float("lr", 1e-4, 1e-2, log=True), 0.1), n_trials=2)
    return run.info.run_id


def get(url: str, data: dict | None = None) -> tuple[int, str]:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


def test_a_folder_without_stores_is_refused_in_one_line(tmp_path: Path) -> None:
    ports = ["--mlflow-port", str(free_port()), "--optuna-port", str(free_port())]
    result = CliRunner().invoke(app, ["ui", "nothing", "--out-root", str(tmp_path), *ports])
    assert (
        result.exit_code == 2
        and result.output.strip()
        == f"error: {tmp_path / 'nothing'}: no mlflow.db or optuna.db here: not a local sweep's folder"
    )


def test_raycl_ui_serves_both_pages_and_stops_both_servers(tmp_path: Path) -> None:
    parent = make_sweep_stores(tmp_path / "tiny")
    mlflow_port, optuna_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "raycl.cli",
        "ui",
        "tiny",
        "--out-root",
        str(tmp_path),
        "--mlflow-port",
        str(mlflow_port),
        "--optuna-port",
        str(optuna_port),
    ]
    ui = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    try:
        lines = [ui.stdout.readline().strip()]
        assert (
            lines[0]
            == f"starting MLflow UI on 127.0.0.1 port {mlflow_port}, Optuna dashboard on 127.0.0.1 port {optuna_port}"
        )
        deadline = time.monotonic() + 240
        while len(lines) < 6 and time.monotonic() < deadline:  # as each server answers: its line, then its links
            lines.append(ui.stdout.readline().strip())
        mlflow_url, optuna_url = f"http://127.0.0.1:{mlflow_port}/", f"http://127.0.0.1:{optuna_port}/"
        assert sorted(lines[1:]) == sorted(
            [
                f"MLflow UI: {mlflow_url}  (Ctrl-C stops)",
                f"experiment: {mlflow_url}#/experiments/1/runs?viewStateShareKey=raycl-trials&compareRunsMode=TABLE",
                f"parent run: {mlflow_url}#/experiments/1/runs/{parent}",
                f"Optuna dashboard: {optuna_url}  (Ctrl-C stops)",
                f"study: {optuna_url}dashboard/studies/1",
            ]
        ), lines
        # The experiment opens as model development (not GenAI), on a view of its trials with the objectives as columns.
        _, found = get(f"{mlflow_url}api/2.0/mlflow/experiments/get-by-name?experiment_name=raycl-tiny")
        tags = {tag["key"]: tag["value"] for tag in json.loads(found)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        view = json.loads(tags["mlflow.sharedViewState.raycl-trials"])
        assert view["selectedColumns"] == ["metrics.`learning`", "metrics.`forgetting`", "params.`train.lr`"]
        assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent}'"

        status, page = get(f"http://127.0.0.1:{mlflow_port}/")
        assert status == 200 and "MLflow" in page
        _, experiments = get(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search", {"max_results": 10})
        assert "raycl-tiny" in [experiment["name"] for experiment in json.loads(experiments)["experiments"]]
        status, page = get(f"http://127.0.0.1:{optuna_port}/")  # redirected to the dashboard's page
        assert status == 200 and "Optuna Dashboard" in page
        _, studies = get(f"http://127.0.0.1:{optuna_port}/api/studies")
        assert [study["study_name"] for study in json.loads(studies)["study_summaries"]] == ["tiny"]

        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        assert ui.stdout.read().strip().endswith("stopped")
    finally:
        if ui.poll() is None:  # a failed assertion: stop it as Ctrl-C would, so that its servers stop too
            ui.send_signal(signal.SIGTERM)
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ui.kill()
    # Both servers, and the workers they started, are gone: nothing listens on either port.
    for port in (mlflow_port, optuna_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
