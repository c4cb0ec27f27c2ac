"""End-to-end sweeps on a real two-node Ray cluster (head + 1 node, one CPU each, on this machine).

Real engine trials on the tiny offline world, a real Optuna sqlite study and a real MLflow sqlite
store; the assertions are on what the sweep leaves behind. The second test kills the driver mid-sweep
and resumes it.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from raycl.analysis.pareto import pareto_mask
from raycl.config.space import SHIPPED_DIR
from raycl.sweep import SweepOutcome, run_sweep
from raycl.sweep.study import storage_for

pytestmark = pytest.mark.slow

DRIVER = (
    "import sys; from raycl.sweep import run_sweep; run_sweep(sys.argv[1], address=sys.argv[2], out_root=sys.argv[3])"
)


@pytest.fixture(scope="module")
def cluster(start_cluster: Callable[..., Any]) -> Any:
    """Head and one worker node with one CPU each: two concurrent 1-worker trials must use both."""
    return start_cluster({"num_cpus": 1}, {"num_cpus": 1})


def node_ids(cluster) -> set[str]:
    return {node.node_id for node in [cluster.head_node, *cluster.worker_nodes]}


def mlflow_runs(outcome: SweepOutcome):
    client = MlflowClient(tracking_uri=outcome.tracking_uri)
    experiment = client.get_experiment_by_name(f"raycl-{outcome.name}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get("raycl.role") == "parent"]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    return client, parents, children


def assert_sweep_complete(
    outcome: SweepOutcome, trials: int, tmp_path: Path, stages: int = 2, steps_per_stage: int = 30
) -> list:
    """One parent, one child per trial, a Pareto set that the children's metrics reproduce, a full study."""
    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * trials
    assert outcome.completed == trials and outcome.failed == 0

    client, parents, children = mlflow_runs(outcome)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == outcome.parent_run_id and parent.info.status == "FINISHED"
    keys = [child.data.tags["raycl.trial_id"] for child in children]
    assert sorted(keys) == [f"t{i:04d}" for i in range(trials)]  # exactly one child per trial
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert {child.info.status for child in children} == {"FINISHED"}

    values = np.array([[child.data.metrics["learning"], child.data.metrics["forgetting"]] for child in children])
    recomputed = {key for key, on_front in zip(keys, pareto_mask(values, ["maximize", "minimize"])) if on_front}
    assert recomputed == set(parent.data.tags["raycl.pareto_trials"].split(","))
    assert recomputed == {key for key, child in zip(keys, children) if child.data.tags["raycl.pareto"] == "true"}
    assert recomputed == set(outcome.pareto_keys) == {f"t{t.number:04d}" for t in study.best_trials}

    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id, "pareto")}
    assert artifacts == {
        "pareto/frontier.csv",
        "pareto/trials.csv",
        "pareto/frontier.png",
        "pareto/hypervolume.json",
        "pareto/hypervolume.png",
    }
    record = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "pareto/hypervolume.json", str(tmp_path))).read_text()
    )
    assert len(record["history"]) == trials and len(record["reference"]) == 2
    assert all(a <= b for a, b in itertools.pairwise(record["history"]))
    assert record["history"][-1] == pytest.approx(parent.data.metrics["hypervolume"])
    assert parent.data.tags["raycl.hv_reference"].count("=") == 2

    for child in children:
        run_id = child.info.run_id
        # One evaluation curve point per stage end, none logged twice (also across a resume).
        expected_steps = [steps_per_stage * (stage + 1) for stage in range(stages)]
        assert [m.step for m in client.get_metric_history(run_id, "eval/new_loss")] == expected_steps
        assert child.data.params["train.lr"] and child.data.params["model.name"] == "raycl-tiny-s"
        matrix = json.loads(
            Path(client.download_artifacts(run_id, "stage_matrix.json", str(tmp_path / run_id))).read_text()
        )
        assert len(matrix["stage_matrix"]) == stages + 1  # before training, then after each stage
    return children


@pytest.fixture(scope="module")
def smoke_sweep(cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepOutcome, Path]:
    """The smoke sweep, run once on the two-node cluster for every test that reads it; and its out-root."""
    out_root = tmp_path_factory.mktemp("smoke") / "runs"
    return run_sweep("smoke", address=cluster.address, out_root=out_root), out_root


def test_smoke_sweep_runs_on_both_nodes_and_records_everything(cluster, smoke_sweep, tmp_path: Path) -> None:
    outcome, out_root = smoke_sweep

    # Single-CPU trials train in their Tune actors, one whole CPU each.
    assert (outcome.plan.executor, outcome.plan.concurrency, outcome.plan.cpus_per_worker) == ("tune", 2, 1.0)
    assert outcome.launched == ["t0000", "t0001", "t0002", "t0003", "t0004"]
    assert set(outcome.trial_times) == set(outcome.launched)
    children = assert_sweep_complete(outcome, trials=5, tmp_path=tmp_path)
    placed = {node for child in children for node in child.data.tags["raycl.node_ids"].split(",")}
    assert placed == node_ids(cluster)
    assert (out_root / "smoke" / "optuna.db").is_file()
    assert sorted(p.name for p in (out_root / "smoke" / "trials").iterdir()) == outcome.launched


def test_report_of_the_smoke_sweep(smoke_sweep, tmp_path: Path) -> None:
    """`raycl report smoke`: self-contained HTML, Markdown with its PNGs, the sweep's Pareto set, all on MLflow too."""
    outcome, out_root = smoke_sweep
    reports = tmp_path / "reports"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raycl.cli",
            "report",
            "smoke",
            "--out-root",
            str(out_root),
            "--reports-dir",
            str(reports),
            "--bootstrap",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    directory = reports / "smoke"
    assert {"report.html", "report.md", "pareto.csv", "fits.json"} <= {p.name for p in directory.iterdir()}

    page = (directory / "report.html").read_text()
    assert not re.search(r"<script|<link|@import|url\(|(src|href)\s*=\s*[\"'](?!data:)", page, re.IGNORECASE)
    sources = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    assert len(sources) == page.count("<img") >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (directory / "report.md").read_text())
    assert len(linked) == len(sources) and all((directory / name).is_file() and "/" not in name for name in linked)

    client, parents, children = mlflow_runs(outcome)
    parent = parents[0]
    with (directory / "pareto.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["trial"] for row in rows) == sorted(child.data.tags["raycl.trial_id"] for child in children)
    on_front = {row["trial"] for row in rows if row["pareto"] == "True"}
    assert on_front == set(parent.data.tags["raycl.pareto_trials"].split(",")) == set(outcome.pareto_keys)

    fits = json.loads((directory / "fits.json").read_text())
    base_size = min(child.data.metrics["num_params_non_embedding"] for child in children)
    for target in ("forgetting", "learning"):  # one model size: the report says why there is no fit
        assert fits["targets"][target]["laws"] == [] and fits["targets"][target]["model_sizes"] == [base_size]
        assert any("at least 2 needed" in note for note in fits["targets"][target]["notes"])
    logged = {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        f"report/{name}" for name in ("report.html", "report.md", "pareto.csv", "fits.json", "pareto.png")
    } <= logged


def wait_for(predicate, driver: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail(f"driver exited early ({driver.returncode}):\n{log.read_text()[-3000:]}")
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out; driver log:\n{log.read_text()[-3000:]}")


def write_space(tmp_path: Path, name: str, **budget: object) -> Path:
    """The smoke space under another name, with budget settings replaced."""
    space = yaml.safe_load((SHIPPED_DIR / "smoke.yaml").read_text())
    space["budget"] |= budget
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def test_a_ddp_trial_runs_ray_train_workers_on_both_nodes(cluster, tmp_path: Path) -> None:
    path = write_space(tmp_path, "ddp", trials=1, concurrency=1, workers_per_trial=2)
    outcome = run_sweep(path, address=cluster.address, out_root=tmp_path / "runs")
    assert outcome.plan.executor == "train" and "several workers" in outcome.plan.executor_reason
    (child,) = assert_sweep_complete(outcome, trials=1, tmp_path=tmp_path)
    assert set(child.data.tags["raycl.node_ids"].split(",")) == node_ids(cluster)


@pytest.mark.parametrize("executor", ["tune", "train"])
def test_resume_after_the_driver_was_killed(cluster, tmp_path: Path, executor: str) -> None:
    space = yaml.safe_load(write_space(tmp_path, "resumable", trials=3, executor=executor).read_text())
    # Three longer stages leave a window in which a running trial has a stage checkpoint in Ray's storage.
    space["fixed"]["world"]["num_stages"] = 3
    space["fixed"]["train"]["steps_per_stage"] = 30
    path = tmp_path / "resumable.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    out_root = tmp_path / "runs"
    sweep_dir = out_root / "resumable"
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    log = tmp_path / "driver.log"

    def trials(state: TrialState) -> list:
        if "sweep resumable:" not in log.read_text():  # printed once the driver has opened the study
            return []
        # As the driver does, wait for the driver's sqlite writes instead of failing on its lock.
        return optuna.load_study(study_name="resumable", storage=storage_for(storage)).get_trials(states=(state,))

    def ray_checkpoint_stage(key: str) -> int:
        """Stages done by the newest stage checkpoint Ray holds for trial `key` (0 if none): registered
        with Ray Train under `train`, persisted by Tune under `tune`."""
        if executor == "tune":
            progress = (sweep_dir / "ray" / "tune" / "resumable" / key).glob("checkpoint_*/progress.json")
            return max((json.loads(p.read_text())["stages_done"] for p in progress), default=0)
        run_dir = sweep_dir / "ray" / "train" / f"resumable-{key}"
        snapshot = run_dir / "checkpoint_manager_snapshot.json"
        registered = snapshot.read_text() if snapshot.exists() else ""
        stages = [int(d.name.removeprefix("stage_")) + 1 for d in run_dir.glob("stage_*") if d.name in registered]
        return max(stages, default=0)

    def one_finished_and_one_checkpointed() -> bool:
        finished = trials(TrialState.COMPLETE)
        return bool(finished) and any(ray_checkpoint_stage(f"t{t.number:04d}") for t in trials(TrialState.RUNNING))

    with log.open("w") as output:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(path), cluster.address, str(out_root)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(one_finished_and_one_checkpointed, driver, log, timeout=300)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finished_before = {t.number: (t.values, t.datetime_complete) for t in trials(TrialState.COMPLETE)}
    interrupted = {f"t{t.number:04d}" for t in trials(TrialState.RUNNING)}
    # As if the interrupted trials resumed on other machines: their engine checkpoints are gone, so
    # the stage checkpoint each registered with Ray Train must come back from Ray's storage.
    expected_stage = {key: ray_checkpoint_stage(key) for key in interrupted}
    assert any(expected_stage.values())
    # A trial can finish its whole Train run after the driver's last look: it is not run again.
    finished_unrecorded = {
        key: (sweep_dir / "trials" / key / "result.json").read_text()
        for key in interrupted
        if (sweep_dir / "trials" / key / "sweep_result.json").exists()
    }
    for key in interrupted:
        shutil.rmtree(sweep_dir / "trials" / key / "checkpoints", ignore_errors=True)

    outcome = run_sweep(path, address=cluster.address, out_root=out_root, resume=True)

    assert_sweep_complete(outcome, trials=3, tmp_path=tmp_path, stages=3, steps_per_stage=30)
    study = optuna.load_study(study_name="resumable", storage=storage)
    for number, (values, completed_at) in finished_before.items():
        assert (study.trials[number].values, study.trials[number].datetime_complete) == (values, completed_at)
    # Finished trials were not run again; interrupted ones continued under their own numbers, from
    # the stage they had reached.
    assert not set(outcome.launched) & {f"t{n:04d}" for n in finished_before}
    assert interrupted <= set(outcome.launched)
    for key, stage in expected_stage.items():
        result = (sweep_dir / "trials" / key / "result.json").read_text()
        if key in finished_unrecorded:
            assert result == finished_unrecorded[key]
        else:
            assert json.loads(result)["resumed_after_stage"] == stage


def test_seeds_run_each_configuration_in_turn_and_report_the_mean(cluster, tmp_path: Path) -> None:
    """budget.seeds: 2 runs every sampled configuration twice (train.seed, train.seed + 1); Optuna and MLflow
    get the mean, the report an interval over the two runs."""
    from raycl.reporting.report import load_sweep, pareto_csv

    path = write_space(tmp_path, "seeds", trials=2, seeds=2)
    outcome = run_sweep(path, address=cluster.address, out_root=tmp_path / "runs")
    study = optuna.load_study(study_name="seeds", storage=outcome.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    client, _, children = mlflow_runs(outcome)
    for trial in study.trials:
        trial_dir = tmp_path / "runs" / "seeds" / "trials" / f"t{trial.number:04d}"
        runs = [json.loads((trial_dir / f"seed_{i}" / "result.json").read_text()) for i in range(2)]
        assert [run["config"]["train"]["seed"] - runs[0]["config"]["train"]["seed"] for run in runs] == [0, 1]
        assert runs[0]["forgetting"] != runs[1]["forgetting"]  # another data order, another outcome
        for name, value in zip(["learning", "forgetting"], trial.values):
            assert value == pytest.approx(np.mean([run[name] for run in runs]))
        assert trial.user_attrs["replicates"] == [{n: run[n] for n in ("learning", "forgetting")} for run in runs]
        child = next(c for c in children if c.data.tags["raycl.trial_id"] == f"t{trial.number:04d}")
        assert child.data.metrics["forgetting"] == pytest.approx(trial.values[1])
        logged = json.loads(
            Path(
                client.download_artifacts(child.info.run_id, "replicates.json", str(tmp_path / child.info.run_id))
            ).read_text()
        )
        assert [run["forgetting"] for run in logged] == [run["forgetting"] for run in runs]

    sweep = load_sweep("seeds", tmp_path / "runs")
    table = list(csv.DictReader(pareto_csv(sweep.rows, ["learning", "forgetting"], {}, set(), []).splitlines()))
    for row in table:
        assert row["seeds"] == "2"
        assert float(row["forgetting_ci_low"]) < float(row["forgetting"]) < float(row["forgetting_ci_high"])


def test_report_compare_passes_on_its_own_table_and_fails_on_a_changed_one(smoke_sweep, tmp_path: Path) -> None:
    """`raycl report smoke --compare DIR`: per-trial differences against DIR/pareto.csv, non-zero exit above 0.5%."""
    _, out_root = smoke_sweep

    def report(compare: Path) -> subprocess.CompletedProcess:
        command = ["report", "smoke", "--out-root", str(out_root), "--out", str(tmp_path / "fresh"), "--bootstrap", "0"]
        return subprocess.run(
            [sys.executable, "-m", "raycl.cli", *command, "--compare", str(compare)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = tmp_path / "first"
    first.mkdir()
    (first / "pareto.csv").write_text("trial\n")  # no trials: the fresh run's trials are "only in" it
    refused = report(first)
    assert refused.returncode != 0 and "the trials differ" in refused.stdout + refused.stderr
    (first / "pareto.csv").write_text((tmp_path / "fresh" / "pareto.csv").read_text())
    same = report(first)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "max relative difference 0.000%" in same.stdout and "0 trial(s) over the tolerance 0.50%" in same.stdout

    with (first / "pareto.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["forgetting"] = str(float(rows[0]["forgetting"]) * 1.02 + 1e-3)
    with (first / "pareto.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    changed = report(first)
    assert changed.returncode != 0
    assert f"does not reproduce {first}" in changed.stdout + changed.stderr and "1 trial(s) over" in changed.stdout
