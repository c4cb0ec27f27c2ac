"""The forgetting findings' conditions on a real model: SmolLM2-135M-Instruct fine-tuned on real conversations.

    python bench/real_findings.py --pilot                 # the unscored pilot: "none" at data seed 99
    python bench/real_findings.py                         # 6 conditions x data seeds 0, 1, 2, 2 at a time
    python bench/real_findings.py --model gemma-3-270m    # "none" only, one trial at a time (9 GB each)

Every trial is one stage of OpenAssistant conversations (oasst1's English validation trees, best-ranked thread
of each, loss on the assistant turns) through the trial engine, with C4/WikiText documents as the original
distribution: a held-out tenth of them is the retention probe (forgetting), the rest the replay pool. LAMBADA,
ARC-Easy and HellaSwag run through lm-eval on a small subsample at step 0 and at the stage end. Seeds are
`train.seed` (data order, replay draws, LoRA init, self-generated samples); the model and the data are the
same in every seed, so the seeds cover training noise only. The held-out new loss and the retention loss are
evaluated every few steps on the same examples: those curves are what the findings' analysis reads
(bench/findings.py, the band of bench/findings_protocol.yaml, set from this script's pilot).

Finished trials are appended to `runs/findings_real/trials.jsonl` with the fields of bench/findings.py's
records plus `label`, `seed` and `benchmarks`; a rerun skips the trials already there. The scored trials are
also written to `reports/findings_real_trials.jsonl`, and the run's wall time to `reports/findings_real_run.json`.
Needs ../shared/data and the converted model (`raycl models get smollm2-135m-instruct`); runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from findings import busy_seconds, key, load_cache, run_pool, trial_record
from report import REPORTS

from raycl.artifacts.real_models import ModelNotFetchedError, real_model_dir
from raycl.config import TrialConfig
from raycl.evaluation.metrics import untrained_loss
from raycl.training.trial import run_trial

ROOT = REPORTS.parent
CACHE = ROOT / "runs" / "findings_real" / "trials.jsonl"
# Relative to the repository root (the script runs from there), so that the cached overrides read the same on any
# machine with ../shared beside the checkout.
DATA = Path("..") / "shared" / "data"
BENCHMARKS = {
    "raycl_lambada": DATA / "eval" / "lambada_openai.jsonl",
    "raycl_arc_easy": DATA / "eval" / "arc_easy.jsonl",
    "raycl_hellaswag": DATA / "eval" / "hellaswag_val_2000.jsonl",
}
CONVERSATIONS = DATA / "conversations" / "oasst1_en_validation_messages.jsonl"
ORIGINAL = (DATA / "pretrain" / "c4_demo.jsonl", DATA / "pretrain" / "wikitext2_raw_test.txt")
SEEDS = (0, 1, 2)
PILOT_SEED = 99  # bench/findings_protocol.yaml's band.pilot_data_seed


@dataclass(frozen=True)
class Scale:
    """How much of everything a trial does."""

    steps: int  # fine-tuning steps of a trial at the full LR
    every: int  # steps between evaluations of held-out new loss and retention loss
    max_examples: int  # held-out examples per split, the same ones at every evaluation
    bench_limit: int  # first N items of each benchmark, at step 0 and at the stage end


# Batch 4 x 128 tokens (1 replay row in 4 at 25%); 24 steps, evaluated every 3: 9 points of each curve, the whole
# run (18 trials) 58 minutes on a 2-core box shared with other jobs (reports/findings_real_run.json).
SCALE = Scale(steps=24, every=3, max_examples=16, bench_limit=20)


@dataclass(frozen=True)
class RealModel:
    """A real model the runner knows: its full-fine-tuning LR and the GaLore rank d/4 of its hidden size."""

    lr: float
    galore_rank: int
    conditions: tuple[str, ...]  # the conditions it runs
    workers: int  # trials at a time that fit in memory


# SmolLM2 at 1e-4, chosen from learning alone: its instruct tuning already fits these conversations (held-out
# assistant loss 2.13 at step 0), and a first pilot at 3e-4 (raycl's default) did not learn them: its held-out loss
# rose again after the warm-up and ended 0.013 nats down after 24 steps, within its own wiggle; at 1e-4 a 12-step
# smoke check fell steadily (0.08 nats). That pilot is kept in the pilot file as `earlier_pilots`. Gemma at 3e-5:
# at 2e-4 full fine-tuning makes it worse on the new data too; it needs 9 GB, so one trial at a time.
MODELS = {
    "smollm2-135m-instruct": RealModel(lr=1e-4, galore_rank=576 // 4, conditions=(), workers=2),
    "gemma-3-270m": RealModel(lr=3e-5, galore_rank=640 // 4, conditions=("none",), workers=1),
}


def trial(
    scale: Scale, model: str, seed: int, lr: float, steps: int | None = None, every: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """The overrides of one trial: one stage of oasst1 conversations, C4/WikiText as the original distribution."""
    return {
        "model.name": model,
        "train.lr": lr,
        "train.steps_per_stage": steps or scale.steps,
        "train.batch_size": 4,
        "train.seq_len": 128,
        "train.warmup_steps": 2,
        "train.dtype": "auto",
        "train.cpu_threads": 1,
        "train.seed": seed,
        "eval.every_steps": every or scale.every,
        "eval.max_examples": scale.max_examples,
        "eval.quick_max_examples": scale.max_examples,
        "eval.batch_size": 16,
        "eval.benchmarks": {
            "tasks": list(BENCHMARKS),
            "task_paths": {task: str(path) for task, path in BENCHMARKS.items()},
            "limit": scale.bench_limit,
            "batch_size": 16,
        },
        "stream": {
            "source": {"path": str(CONVERSATIONS), "format": "oasst", "max_bad_fraction": 0.05},
            "shape": {"by": "count", "stages": 1, "heldout_fraction": 0.1, "seed": 0},
            "loss_on": "assistant",
            "original": {
                "paths": [str(path) for path in ORIGINAL],
                "max_documents": 100,
                "document_chars": 1000,
                "heldout_fraction": 0.1,
                "seed": 0,
            },
        },
    } | overrides


def design(scale: Scale, model: str) -> dict[str, Callable[[int], dict[str, Any]]]:
    """Each condition as a function of the data seed. LoRA at 10x the full LR (it is tuned an order of magnitude
    higher); GaLore at rank d/4 and 1/galore_scale (4x) the full LR, so its scaled update is AdamW's size, as
    bench/findings.py's method_overrides; the lower LR 3x longer, evaluated 3x less often (as many points)."""
    real = MODELS[model]
    lr = real.lr
    conditions: dict[str, Callable[[int], dict[str, Any]]] = {
        "none": lambda seed: trial(scale, model, seed, lr),
        "replay 25%": lambda seed: trial(scale, model, seed, lr, **{"replay.ratio": 0.25}),
        "self-generated 25% + KL": lambda seed: trial(
            scale,
            model,
            seed,
            lr,
            **{
                "replay.ratio": 0.25,
                "replay.source": "self_generated",
                "replay.loss": "kl",
                # One chunk of samples for the whole stage: one replay row a step needs `steps` sequences.
                "replay.generated_per_chunk": scale.steps,
                "replay.regenerate_every": scale.steps,
            },
        ),
        "LoRA r8": lambda seed: trial(scale, model, seed, 10 * lr, **{"method": {"name": "lora", "lora_rank": 8}}),
        "GaLore": lambda seed: trial(
            scale, model, seed, 4 * lr, **{"method": {"name": "galore", "galore_rank": real.galore_rank}}
        ),
        "lr/3": lambda seed: trial(scale, model, seed, lr / 3, steps=3 * scale.steps, every=3 * scale.every),
    }
    return {label: make for label, make in conditions.items() if not real.conditions or label in real.conditions}


# ---- running the trials --------------------------------------------------------------------------------------


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one trial; keep bench/findings.py's record (final metrics, the (step, new loss, retention loss) curve)
    plus its label, seed and benchmark accuracies before and after."""
    overrides, base_loss_init = job["overrides"], job["base_loss_init"]
    config, started_at = TrialConfig().with_overrides(overrides), time.time()
    with tempfile.TemporaryDirectory() as out:
        r = run_trial(config, Path(out))
    matrix, retention = r.stage_matrix, r.retention_losses
    curve = [[0, matrix[0][0], retention[0]]]
    curve += [
        [c["step"], c["stage_losses"][0], c["base_loss"]] for c in r.curves if c["step"] < config.train.steps_per_stage
    ]
    curve.append([config.train.steps_per_stage, matrix[-1][0], retention[-1]])
    before, after = r.benchmarks[0], r.benchmarks[-1]
    return trial_record(overrides, r, curve, started_at) | {
        "label": job["label"],
        "seed": config.train.seed,
        **{name: getattr(r, name) for name in ("eval_time_fraction", "replay_generation_fraction", "device", "dtype")},
        "base_loss_init": base_loss_init,
        "benchmarks": {task: {"before": before[task], "after": after[task]} for task in before},
    }


def run_all(jobs: list[dict[str, Any]], cache: Path, workers: int) -> None:
    """Run the trials not in `cache` yet, `workers` at a time, appending each to the cache as it finishes."""
    # Longest first, so the last trials to start are short ones.
    jobs = sorted(jobs, key=lambda job: -job["overrides"]["train.steps_per_stage"])
    run_pool(
        jobs,
        run_one,
        cache,
        workers,
        lambda record: (
            f"{record['label']} seed {record['seed']}: learning {record['learning_nats']:+.3f} nats, "
            f"forgetting {record['forgetting']:+.3f} nats"
        ),
    )


def base_loss_init(model: str) -> float:
    """ln(vocab) of the converted model, or exit with one line saying how to get it."""
    try:
        directory = real_model_dir(model)
    except (ModelNotFetchedError, FileNotFoundError) as error:
        sys.exit(f"real_findings: {error}")
    return untrained_loss(json.loads((directory / "config.json").read_text())["vocab_size"])


def run_summary(records: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """The run's time, as the records hold it, so a rebuild from them states the same."""
    return {
        "trials": len(records),
        "workers": workers,
        "busy_s": busy_seconds([(r["started_at"], r["finished_at"]) for r in records]),
        "trial_s": sum(r["wall_time_s"] for r in records),
        "wall_s_by_label": {
            label: [r["wall_time_s"] for r in records if r["label"] == label]
            for label in dict.fromkeys(r["label"] for r in records)
        },
        "load_average": list(np.percentile([r["load_average"] for r in records], [0, 50, 100])),
        "device": records[0]["device"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="smollm2-135m-instruct")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="data seeds 0..N-1 per condition")
    parser.add_argument("--pilot", action="store_true", help=f'only "none" at data seed {PILOT_SEED}, unscored')
    parser.add_argument("--workers", type=int, default=None, help="trials at a time, one torch thread each")
    parser.add_argument("--steps", type=int, default=SCALE.steps, help="steps at the full LR (smoke checks only)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"trial cache (default {CACHE})")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    missing = [path for path in (CONVERSATIONS, *ORIGINAL, *BENCHMARKS.values()) if not path.exists()]
    if missing:
        sys.exit(f"real_findings: {missing[0].absolute()} is missing: the runner reads ../shared/data beside the repo")
    loss_init = base_loss_init(args.model)
    workers = min(args.workers or MODELS[args.model].workers, MODELS[args.model].workers)
    scale = Scale(steps=args.steps, every=SCALE.every, max_examples=SCALE.max_examples, bench_limit=SCALE.bench_limit)
    conditions = design(scale, args.model)
    if args.pilot:
        conditions = {"none": conditions["none"]}
    seeds = (PILOT_SEED,) if args.pilot else tuple(range(args.seeds))

    started = time.perf_counter()
    wanted = {
        key(make(seed)): {"label": label, "overrides": make(seed), "base_loss_init": loss_init}
        for label, make in conditions.items()
        for seed in seeds
    }
    done = load_cache(args.cache)
    pending = [job for k, job in wanted.items() if k not in done]
    print(f"{len(wanted)} trials, {len(pending)} to run, {workers} at a time", flush=True)
    run_all(pending, args.cache, workers)
    results = load_cache(args.cache)
    records = [results[k] for k in wanted]
    summary = run_summary(records, workers)
    print(
        f"computed {len(pending)} of {len(wanted)} trials in {(time.perf_counter() - started) / 60:.1f} minutes; "
        f"{summary['busy_s'] / 60:.1f} minutes with trials running",
        flush=True,
    )
    if args.steps != SCALE.steps:
        return  # a smoke check: nothing goes into reports/
    stem = "findings_real" if args.model == "smollm2-135m-instruct" else f"findings_real_{args.model}"
    if args.pilot:
        pilot = records[0]
        (REPORTS / f"{stem}_pilot.json").write_text(
            json.dumps(
                {
                    "model": args.model,
                    "seed": PILOT_SEED,
                    "label": pilot["label"],
                    "overrides": pilot["overrides"],
                    "curve": pilot["curve"],
                    "learning_nats": pilot["learning_nats"],
                    "forgetting": pilot["forgetting"],
                    "benchmarks": pilot["benchmarks"],
                    "wall_time_s": pilot["wall_time_s"],
                    "run": summary,
                    # Pilots of this model at other settings, discarded before any scored trial ran.
                    "earlier_pilots": [
                        {
                            field: r[field]
                            for field in ("overrides", "curve", "learning_nats", "forgetting", "wall_time_s")
                        }
                        for k, r in results.items()
                        if k not in wanted and r["seed"] == PILOT_SEED and r["overrides"]["model.name"] == args.model
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        return
    (REPORTS / f"{stem}_trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (REPORTS / f"{stem}_run.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
