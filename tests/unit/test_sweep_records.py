"""The sweep's records without Ray: the Optuna searcher on a real in-memory study, MLflow runs in a real
sqlite store, and the live table, driven with the records Tune would hand them."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from raycl.analysis.frontier import space_frontier
from raycl.config.records import FINAL_KEY, NODE_KEY, Artifacts, FinalReport, GpuSlot, Tags, TrialAssignment
from raycl.config.result import REPORTED_METRICS, EvalRecord
from raycl.config.space import load_space
from raycl.sweep.progress import ProgressTable
from raycl.sweep.study import OptunaSearcher, completed_metrics
from raycl.sweep.tracking import SweepTracker, TrackingCallback

SPACE = {
    "objectives": {"learning": "maximize", "forgetting": "minimize"},
    "constraints": ["forgetting <= 2.0"],
    "parameters": {
        "train.lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2},
        "method.name": {"type": "categorical", "choices": ["full", "lora"]},
        "method.lora_rank": {"type": "categorical", "choices": [2, 4], "when": {"method.name": "lora"}},
    },
    "fixed": {"world": {"num_stages": 2}, "train": {"steps_per_stage": 5}},
    "budget": {"trials": 3},
    "sampler": {"name": "random"},
    "seed": 3,
}


@pytest.fixture()
def space(tmp_path: Path):
    path = tmp_path / "records.yaml"
    path.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return load_space(path)


def final_result(learning: float, forgetting: float) -> dict[str, Any]:
    """What Tune hands the driver for a finished trial: a FinalReport plus Tune's own keys."""
    metrics = dict.fromkeys(REPORTED_METRICS, 1.0) | {"learning": learning, "forgetting": forgetting}
    stages = {
        "stage_names": ["a", "b"],
        "stage_matrix": [[5.0, 5.0], [3.0, 4.5], [3.5, 3.0]],
        "retention_losses": [1.0, 1.5, forgetting + 1.0],
        "stage_forgetting": [0.5, 0.0],
    }
    gpus = [GpuSlot(node_id="node-a", gpu="1", since=10.0, until=20.0)]
    report = FinalReport(**metrics, **stages, bench_max_drop=2.0, node_ids=["node-a"], gpus=gpus, device="cuda")
    return report.to_tune() | {"time_total_s": 9.0, "training_iteration": 3}


def test_the_searcher_hands_out_typed_assignments_and_tells_optuna_the_objectives(space) -> None:
    study = optuna.create_study(directions=space.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    searcher = OptunaSearcher(study, space, interrupted=[], defaults={"train.cpu_threads": 1})
    suggestion = searcher.suggest("tune-1")
    assignment = TrialAssignment.model_validate(suggestion)
    assert (assignment.number, assignment.key) == (0, "t0000")
    assert assignment.trial_config.train.lr == assignment.params["train.lr"]
    assert assignment.trial_config.train.cpu_threads == 1 and assignment.trial_config.world.num_stages == 2
    assert ("method.lora_rank" in assignment.params) == (assignment.params["method.name"] == "lora")

    searcher.on_trial_complete("tune-1", final_result(0.8, 2.5))
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.values == [0.8, 2.5]
    assert completed_metrics(trial)["bench_max_drop"] == 2.0 and completed_metrics(trial)["num_params"] == 1.0
    assert trial.user_attrs["node_ids"] == ["node-a"] and trial.user_attrs["device"] == "cuda"
    assert trial.user_attrs["gpus"] == [{"node_id": "node-a", "gpu": "1", "since": 10.0, "until": 20.0}]
    # Optuna's convention: a constraint value above 0 is a violation (2.5 > 2.0).
    assert trial.system_attrs["constraints:forgetting <= 2"] == pytest.approx(0.5)

    # A trial stopped before its final report stays RUNNING for --resume; an error fails it, with its
    # reason, once the FailureRecorder has read that.
    searcher.suggest("tune-2")
    searcher.on_trial_complete("tune-2", {"step": 3.0})
    searcher.suggest("tune-3")
    searcher.on_trial_complete("tune-3", error=True)
    searcher.tell_failed("tune-3", {Tags.FAILURE: "ValueError: boom"})
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING", "FAIL"]
    assert study.trials[2].user_attrs[Tags.FAILURE] == "ValueError: boom"


def test_tracker_keeps_one_parent_and_one_child_per_trial_across_a_restart(space, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assignment = TrialAssignment.create(
        7, {"train.lr": 0.001, "method.name": "full"}, space.trial_config({"train.lr": 0.001})
    )
    tune_trial = SimpleNamespace(config=assignment.model_dump(mode="json"), error_file=None)

    tracker = SweepTracker(uri, space, tmp_path / "artifacts")
    parent = tracker.open_parent({"raycl.seed": "3"})
    callback = TrackingCallback(tracker)
    callback.on_trial_start(0, [], tune_trial)
    quick = EvalRecord(stage=1, step=5, new_loss=4.0, base_loss=1.2, full_eval=False)
    callback.on_trial_result(0, [], tune_trial, quick.to_report() | {NODE_KEY: "node-1"})
    callback.on_trial_result(0, [], tune_trial, final_result(0.7, 0.4))

    # A driver restarted on the same store finds the same runs instead of creating new ones.
    again = SweepTracker(uri, space, tmp_path / "artifacts")
    assert again.open_parent({}) == parent
    child = again.open_child(assignment)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([again.experiment_id])
    assert len(runs) == 2
    run = client.get_run(child)
    assert run.data.tags[Tags.TRIAL] == "t0007" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags[Tags.SEARCHED] == "train.lr,method.name" and run.data.tags[Tags.FINAL_LOGGED] == "true"
    assert run.data.params["train.lr"] == "0.001" and run.data.metrics["learning"] == 0.7
    assert [m.value for m in client.get_metric_history(child, "eval/new_loss")] == [4.0]
    curves = {name: value for name, value in run.data.metrics.items() if name.startswith("eval/")}
    assert curves == {"eval/stage": 1.0, "eval/new_loss": 4.0, "eval/base_loss": 1.2, "eval/full_eval": 0.0}
    assert client.download_artifacts(child, Artifacts.TRIAL_CONFIG, str(tmp_path))

    front = space_frontier(space, ["t0007"], [{"learning": 0.7, "forgetting": 0.4}])
    again.log_frontier(
        front, [{"trial": "t0007", "learning": 0.7, "forgetting": 0.4, "num_params": 10.0}], [assignment.params]
    )
    parent_run = client.get_run(parent)
    assert (
        parent_run.data.tags[Tags.PARETO_TRIALS] == "t0007" and client.get_run(child).data.tags[Tags.PARETO] == "true"
    )
    artifacts = {a.path for a in client.list_artifacts(parent, "pareto")}
    assert artifacts == {
        f"pareto/{name}"
        for name in ("frontier.csv", "trials.csv", "hypervolume.json", "frontier.png", "hypervolume.png")
    }


def test_progress_table_follows_trials_and_marks_the_feasible_front(space) -> None:
    table = ProgressTable(space, Console(file=io.StringIO(), force_terminal=False))
    table.add_earlier("t0000", {"train.lr": 0.01}, {"learning": 0.9, "forgetting": 3.0}, "done")  # infeasible
    trials = []
    for number, (learning, forgetting) in enumerate([(0.5, 0.5), (0.4, 1.0), (0.6, 1.5)], start=1):
        assignment = TrialAssignment.create(number, {"train.lr": 0.001}, space.trial_config({}))
        trial = SimpleNamespace(config=assignment.model_dump(mode="json"), error_file=None)
        table.on_trial_start(0, [], trial)
        stage_end = EvalRecord(
            stage=1, step=10, new_loss=4.0, base_loss=1.0, full_eval=True, learning=learning, forgetting=forgetting
        )
        table.on_trial_result(0, [], trial, stage_end.to_report())
        table.on_trial_result(0, [], trial, final_result(learning, forgetting))
        trials.append(trial)
    assert table.rows["t0001"].state == "done" and table.rows["t0001"].trial_s == 9.0
    assert table.pareto_keys() == {"t0001", "t0003"}  # t0002 is dominated, t0000 breaks the constraint
    assert table.launched() == ["t0001", "t0002", "t0003"]
    table.failed("t0002", "failed", "ValueError: boom")
    assert table.rows["t0002"].state == "failed" and table.pareto_keys() == {"t0001", "t0003"}
    assert FINAL_KEY not in table.rows["t0001"].metrics


def test_a_restarted_trial_finds_the_stage_checkpoint_that_got_furthest(tmp_path: Path) -> None:
    """Tune numbers checkpoints from 0 again under a new driver: the stages done decide, not the names."""
    import json

    from raycl.sweep.trainable import furthest_stage_checkpoint, restore_stage_checkpoint

    trial_dir = tmp_path / "tune" / "t0003"
    for name, stages in (("checkpoint_000000", 2), ("checkpoint_000001", 1), ("checkpoint_000002", 3)):
        (trial_dir / name).mkdir(parents=True)
        (trial_dir / name / "progress.json").write_text(json.dumps({"stages_done": stages}))
        (trial_dir / name / "model.safetensors").write_text(name)
    (trial_dir / "params.json").write_text("{}")  # Tune's own files are not checkpoints
    assert furthest_stage_checkpoint(str(tmp_path / "tune" / "t9999")) is None
    checkpoint = furthest_stage_checkpoint(str(trial_dir))
    assert Path(checkpoint.path).name == "checkpoint_000002"

    out_dir = tmp_path / "trials" / "t0003"
    restore_stage_checkpoint(checkpoint, out_dir)
    restored = out_dir / "checkpoints" / "stage_002"
    assert (restored / "model.safetensors").read_text() == "checkpoint_000002"
    # The engine's own copy wins: it is never overwritten.
    (restored / "model.safetensors").write_text("engine")
    restore_stage_checkpoint(checkpoint, out_dir)
    assert (restored / "model.safetensors").read_text() == "engine"


def test_each_seed_run_of_a_trial_restarts_from_its_own_stage_checkpoints(tmp_path: Path) -> None:
    """Under budget.seeds the runs of a trial share its Tune folder; each checkpoint names its run."""
    import json

    from raycl.sweep.trainable import REPLICATE, furthest_stage_checkpoint

    trial_dir = tmp_path / "t0001"
    for name, run, stages in (("checkpoint_000000", 0, 3), ("checkpoint_000001", 1, 1), ("checkpoint_000002", 1, 2)):
        (trial_dir / name).mkdir(parents=True)
        (trial_dir / name / "progress.json").write_text(json.dumps({"stages_done": stages}))
        (trial_dir / name / REPLICATE).write_text(str(run))
    assert Path(furthest_stage_checkpoint(str(trial_dir), 0).path).name == "checkpoint_000000"
    assert Path(furthest_stage_checkpoint(str(trial_dir), 1).path).name == "checkpoint_000002"
    assert furthest_stage_checkpoint(str(trial_dir), 2) is None


def test_the_mean_over_seeds_averages_metrics_and_stage_records_and_keeps_each_run() -> None:

    def run(forgetting: float, offset: float) -> FinalReport:
        fields = {
            name: 1.0
            for name in FinalReport.model_fields
            if name
            not in {
                "stage_names",
                "stage_matrix",
                "retention_losses",
                "stage_forgetting",
                "node_ids",
                "replicates",
                "gpus",
                "device",
                "base_pretrain_tokens",
                "base_pretrain_loss",
            }
        }
        return FinalReport(
            **fields | {"forgetting": forgetting},
            stage_names=["a", "b"],
            stage_matrix=[[2.0 + offset, 2.0], [1.0, 2.0], [1.5, 1.0 + offset]],
            retention_losses=[1.0, 1.2 + offset, 1.4],
            stage_forgetting=[0.5 + offset],
            node_ids=[f"n{offset}"],
            gpus=[GpuSlot(node_id=f"n{offset}", gpu="0", since=offset, until=offset + 1)],
            device="cuda",
            bench_x=offset,
        )

    mean = FinalReport.mean_of([run(0.2, 0.0), run(0.4, 1.0)])
    assert mean.forgetting == pytest.approx(0.3) and mean.model_extra["bench_x"] == pytest.approx(0.5)
    assert mean.stage_matrix == [[2.5, 2.0], [1.0, 2.0], [1.5, 1.5]] and mean.stage_forgetting == [1.0]
    assert mean.node_ids == ["n0.0", "n1.0"]
    assert [str(slot) for slot in mean.gpus] == ["n0.0:0", "n1.0:0"] and mean.device == "cuda"
    assert [r["forgetting"] for r in mean.replicates] == [0.2, 0.4] and mean.metrics()["forgetting"] == pytest.approx(
        0.3
    )
