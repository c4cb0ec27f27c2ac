"""Trials across GPUs and nodes, simulated: a three-node Ray cluster on this machine whose nodes each declare one GPU
(Ray takes `num_gpus` without CUDA), running `train`-executor sweeps whose trials each ask for a whole GPU, or half
of one. Without CUDA the trials train on CPU; what is checked is where Ray put them, as the sweep records it."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from raycl.config.records import Tags
from raycl.sweep import SweepOutcome, run_sweep

pytestmark = pytest.mark.slow

NODES = 3


@pytest.fixture(scope="module")
def gpu_cluster(start_cluster: Callable[..., Any]) -> Any:
    """Three nodes of two CPUs and one declared GPU each."""
    return start_cluster(*[{"num_cpus": 2, "num_gpus": 1}] * NODES)


def gpu_sweep(
    tmp_path: Path, cluster: Any, name: str, trials: int, gpus_per_worker: float, steps: int = 4
) -> tuple[SweepOutcome, str]:
    space = {
        "parameters": {"train.lr": {"type": "log_uniform", "low": 1.0e-3, "high": 1.0e-2}},
        "fixed": {
            "model": {"name": "raycl-tiny-xs"},
            "world": {"num_stages": 1},
            "train": {"steps_per_stage": steps, "warmup_steps": 0},
            "eval": {"max_examples": 16, "benchmarks": {"tasks": []}},
        },
        "budget": {
            "trials": trials,
            "concurrency": trials,
            "workers_per_trial": 1,
            "cpus_per_worker": 0.5,
            "gpus_per_worker": gpus_per_worker,
            "executor": "train",
        },
        "sampler": {"name": "random"},
        "seed": 0,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    console = Console(record=True, width=200)
    outcome = run_sweep(path, address=cluster.address, out_root=tmp_path / "runs", console=console)
    return outcome, console.export_text()


def trials_by_gpu(outcome: SweepOutcome) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Each GPU (node, index) and when trials held it, as the Optuna study records it, checked against the MLflow
    tag of each trial."""
    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * len(study.trials)
    client = MlflowClient(tracking_uri=outcome.tracking_uri)
    experiment = client.get_experiment_by_name(f"raycl-{outcome.name}")
    tags = {
        run.data.tags[Tags.TRIAL]: run.data.tags.get(Tags.GPUS)
        for run in client.search_runs([experiment.experiment_id])
        if Tags.TRIAL in run.data.tags
    }
    held: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for trial in study.trials:
        [slot] = trial.user_attrs["gpus"]  # one worker, one GPU (or half of one)
        assert trial.user_attrs["device"] == "cpu"  # no CUDA here
        assert tags[f"t{trial.number:04d}"] == f"{slot['node_id']}:{slot['gpu']}"
        held[(slot["node_id"], slot["gpu"])].append((slot["since"], slot["until"]))
    return held


def overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two trials held their GPU at once."""
    return first[0] < second[1] and second[0] < first[1]


def test_whole_gpu_trials_use_every_node_and_never_share_a_gpu(tmp_path: Path, gpu_cluster: Any) -> None:
    outcome, printed = gpu_sweep(tmp_path, gpu_cluster, "whole_gpu", trials=4, gpus_per_worker=1)
    assert "3 at a time" in printed  # three GPUs: the fourth trial waits for one
    held = trials_by_gpu(outcome)
    nodes = {node.node_id for node in [gpu_cluster.head_node, *gpu_cluster.worker_nodes]}
    assert {node for node, _ in held} == nodes and all(gpu == "0" for _, gpu in held)
    for trials in held.values():
        assert not any(overlap(a, b) for a, b in itertools.combinations(trials, 2))
    assert printed.count("found no CUDA there, and trained on CPU") == 1


def test_half_gpu_trials_pack_two_to_a_gpu(tmp_path: Path, gpu_cluster: Any) -> None:
    # Trials long enough to outlast the seconds between their starts, so that they run at once.
    outcome, printed = gpu_sweep(tmp_path, gpu_cluster, "half_gpu", trials=4, gpus_per_worker=0.5, steps=40)
    assert "4 at a time" in printed
    held = trials_by_gpu(outcome)
    # Four trials at once on three GPUs: one GPU holds two of them, and none more than two.
    assert any(overlap(a, b) for trials in held.values() for a, b in itertools.combinations(trials, 2))
    for trials in held.values():
        assert not any(
            overlap(a, b) and overlap(b, c) and overlap(a, c) for a, b, c in itertools.combinations(trials, 3)
        )
