"""lm-eval benchmarks on the pretrained offline-world base model: a trial-like flow, the agreement with
lm-eval's own command line, the cost, and the real benchmark files when /work/shared has them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raycl.config import TrialConfig, WorldConfig
from raycl.data.tokens import batch_at
from raycl.evaluation.harness import BenchmarkConfig, prepare_task_dir, run_benchmarks
from raycl.models.loading import load_base_model
from raycl.reporting.checkpoints import evaluate_checkpoint
from raycl.training.checkpoint import save_checkpoint, stage_checkpoint_dir
from raycl.training.methods import prepare_method
from raycl.training.trial import run_trial
from raycl.world.offline import load_world
from raycl.world.stream import offline_stream

pytestmark = pytest.mark.slow

SHARED_EVAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"
REAL_FILES = {
    "raycl_arc_easy": SHARED_EVAL / "arc_easy.jsonl",
    "raycl_hellaswag": SHARED_EVAL / "hellaswag_val_2000.jsonl",
    "raycl_lambada": SHARED_EVAL / "lambada_openai.jsonl",
}
needs_shared = pytest.mark.skipif(not SHARED_EVAL.is_dir(), reason=f"needs the real benchmark files at {SHARED_EVAL}")


def train_steps(model, blocks: torch.Tensor, steps: int, lr: float) -> float:
    """Plain AdamW on a stage's blocks (batch 16 x 128, as a default trial); seconds per step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    started = time.perf_counter()
    for step in range(steps):
        batch = batch_at(blocks, 16, step, seed=0)
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps


def test_a_trial_logs_benchmarks_at_step_0_and_every_stage_end_and_acquisition_rises(tmp_path: Path) -> None:
    # Five questions per entity: 120 acquisition items per stage, enough to see a rise above noise.
    config = TrialConfig.model_validate(
        {
            "world": {"num_stages": 2},
            "train": {"steps_per_stage": 40, "lr": 1e-3},
            "eval": {"benchmarks": {"questions_per_entity": 5}},
        }
    )
    result = run_trial(config, tmp_path / "trial")
    rows = result.benchmarks
    assert len(rows) == 3  # step 0 and both stage ends
    for row in rows:
        assert {
            "raycl_retention",
            "raycl_acquisition_astronomy",
            "raycl_acquisition_cuisine",
            "raycl_acquisition",
        } <= set(row)
    first, last = rows[0], rows[-1]
    for task in ("raycl_retention", "raycl_acquisition_astronomy", "raycl_acquisition_cuisine", "raycl_acquisition"):
        print(f"{task}: " + " -> ".join(f"{row[task]:.3f}" for row in rows))
    # Step 0: the base model has never seen the stages' facts (4 choices: chance is 0.25).
    assert first["raycl_acquisition"] < 0.33
    assert last["raycl_acquisition"] >= first["raycl_acquisition"] + 0.05
    assert rows[1]["raycl_acquisition_astronomy"] >= first["raycl_acquisition_astronomy"] + 0.05
    scores = result.metrics()
    assert scores["bench_raycl_acquisition_delta"] == pytest.approx(
        100 * (last["raycl_acquisition"] - first["raycl_acquisition"])
    )
    assert scores["bench_max_drop"] >= 0
    assert 0 < result.eval_time_fraction < 1
    # The stage checkpoints carry what `raycl eval` needs.
    progress = json.loads((tmp_path / "trial" / "checkpoints" / "stage_001" / "progress.json").read_text())
    assert progress["config"] == config.model_dump(mode="json") and len(progress["benchmarks"]) == 3


def saved_checkpoint(out: Path) -> Path:
    """A stage checkpoint of a briefly trained full fine-tune, as a trial writes it."""
    config = TrialConfig.model_validate({"world": {"num_stages": 1}})
    world = load_world(config.world)
    model, tokenizer = load_base_model(config.model, world)
    prepared = prepare_method(model, config.method, config.train)
    train_steps(prepared.model, offline_stream(world, tokenizer, 128).stages[0].train_blocks, steps=5, lr=1e-3)
    progress = {"stages_done": 1, "config": config.model_dump(mode="json")}
    return save_checkpoint(stage_checkpoint_dir(out, 0), prepared.model, prepared.optimizer, progress)


def test_checkpoint_scores_equal_those_of_the_lm_eval_command_line(tmp_path: Path) -> None:
    checkpoint = saved_checkpoint(tmp_path / "trial")
    tasks = ["raycl_retention", "raycl_acquisition_astronomy"]
    task_paths = {}
    if SHARED_EVAL.is_dir():
        tasks.append("raycl_arc_easy")
        task_paths["raycl_arc_easy"] = str(REAL_FILES["raycl_arc_easy"])
    else:
        print(f"raycl_arc_easy left out: no real benchmark files at {SHARED_EVAL}")
    ours = evaluate_checkpoint(checkpoint, tasks, limit=40, batch_size=8, task_paths=task_paths)

    out = tmp_path / "lm_eval_out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={checkpoint / 'eval' / 'hf'}",
            "--include_path",
            str(checkpoint / "eval" / "tasks"),
            "--tasks",
            ",".join(tasks),
            "--limit",
            "40",
            "--batch_size",
            "8",
            "--device",
            "cpu",
            "--output_path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    theirs = json.loads(results_file.read_text())["results"]
    for task in tasks:
        assert theirs[task]["acc,none"] == pytest.approx(ours[task], abs=1e-12), task
        assert theirs[task]["acc_norm,none"] == pytest.approx(ours[f"{task}/acc_norm"], abs=1e-12), task
    # 40 items per task: the scores are multiples of 1/40, not all equal to chance.
    assert all(round(ours[task] * 40, 6).is_integer() for task in tasks)


@needs_shared
def test_real_benchmark_files_run_as_shipped_tasks(tmp_path: Path) -> None:
    world = load_world(WorldConfig(num_stages=1))
    model, tokenizer = load_base_model(TrialConfig().model, world)
    config = BenchmarkConfig(tasks=tuple(REAL_FILES), task_paths={t: str(p) for t, p in REAL_FILES.items()}, limit=50)
    scores = run_benchmarks(model, tokenizer, config, prepare_task_dir(world, config, tmp_path / "tasks"), limit=50)
    print(scores)
    # A 43k-parameter model of an invented towns corpus knows no English science or stories: about
    # chance on the 4-way benchmarks, and LAMBADA's last words cost many nats.
    assert 0.1 <= scores["raycl_arc_easy"] <= 0.45 and 0.1 <= scores["raycl_hellaswag"] <= 0.45
    assert scores["raycl_lambada"] <= 0.05 and scores["raycl_lambada/perplexity"] > 100
