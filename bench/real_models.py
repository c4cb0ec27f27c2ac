"""Real pretrained models through raycl's training loop: speed against a bare transformers loop, and memory.

    raycl models get smollm2-135m-instruct && raycl models get gemma-3-270m
    python bench/real_models.py                                    # both models; writes reports/real_models.{md,json}
    python bench/real_models.py --models smollm2-135m-instruct --trial gemma-3-270m=runs/gemma/result.json
    python bench/real_models.py --rows-from reports/real_models.json --trial NAME=RESULT   # add trials only

Per model and method (full fine-tuning with AdamW, LoRA, GaLore with per-layer updates; and full in fp32 for the
bf16 comparison) the trial of examples/real_trial.yaml is built as `raycl run` builds it (model, stream, replay,
dtype, threads), then its steps are timed two ways on the same model, optimizer and batches, alternating step by
step in one process so that a busy machine slows both alike:
- raycl's loop: `TrialRun.train_step` (batch with replay rows, autocast, next-token loss on the labelled tokens,
  divergence check, LR, clipping, optimizer step);
- a bare transformers loop: `model(input_ids, labels=...).loss`, backward, optimizer step, zero_grad.
`loop_vs_bare` is raycl's tokens/s over the bare loop's (median step times). Memory is the peak of one training
step by part (weights, gradients, optimizer state, activations), measured by `StepMemory` on raycl's second step;
`peak_ratio_vs_adamw` and `speed_ratio_vs_adamw` compare a method with full AdamW on the same model (issue 16's S0
criteria: GaLore's peak < 0.5x AdamW's at > 0.8x its speed). `--trial NAME=RESULT` adds a trial's wall time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from report import machine, write_report

from raycl.artifacts.real_models import PACKAGED
from raycl.config import load_config
from raycl.training.parts import autocast_for, cores_given
from raycl.training.trial import TrialProgress, TrialRun

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "real_trial.yaml"
# A quarter of the hidden size, as bench/memory.py's GaLore row.
METHODS: dict[str, list[str]] = {
    "full (AdamW)": ["method.name=full"],
    "LoRA r8": ["method.name=lora", "method.lora_rank=8"],
    "GaLore per-layer r=d/4": ["method.name=galore", "method.per_layer_updates=true"],
    "full (AdamW), fp32": ["method.name=full", "train.dtype=fp32"],
}


def bare_step(run: TrialRun, batch: tuple[torch.Tensor, ...]) -> None:
    """The plainest loop on the same model and optimizer: transformers' own loss, backward, step, zero_grad."""
    new, new_labels, old, old_labels = batch
    ids, labels = torch.cat([new, old]), torch.cat([new_labels, old_labels])
    with autocast_for(run.device, run.dtype):
        loss = run.model(input_ids=ids, labels=labels).loss
    loss.backward()
    if isinstance(run.optimizer, torch.optim.Optimizer):  # a per-layer optimizer stepped inside backward
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)


def measure(model: str, label: str, overrides: list[str], steps: int) -> dict[str, Any]:
    hidden = {"smollm2-135m-instruct": 576, "gemma-3-270m": 640}[model]
    extra = [f"method.galore_rank={hidden // 4}"] if "galore" in " ".join(overrides) else []
    config = load_config(EXAMPLE, [f"model.name={model}", f"train.steps_per_stage={steps * 2 + 2}", *overrides, *extra])
    run = TrialRun.build(config)
    progress = TrialProgress(config={})
    out = Path(tempfile.mkdtemp())
    tokens = config.train.batch_size * config.train.seq_len
    run.train_step(progress, 0, 0, out)  # warm-up
    run.train_step(progress, 0, 1, out)  # its memory is measured (and left out of the timing)
    raycl_s, bare_s = [], []
    for local_step in range(2, 2 + steps):
        started = time.perf_counter()
        run.train_step(progress, 0, local_step, out)
        raycl_s.append(time.perf_counter() - started)
        batch = run.batch(progress.step, 0, local_step)
        started = time.perf_counter()
        bare_step(run, batch)
        bare_s.append(time.perf_counter() - started)
    raycl_tps, bare_tps = tokens / statistics.median(raycl_s), tokens / statistics.median(bare_s)
    row = {
        "model": model,
        "method": label,
        "overrides": overrides + extra,
        "dtype": "bf16" if run.dtype == torch.bfloat16 else "fp32",
        "cpu_threads": run.cpu_threads,
        "tokens_per_step": tokens,
        "raycl_step_s": raycl_s,
        "bare_step_s": bare_s,
        "raycl_tokens_per_s": raycl_tps,
        "bare_tokens_per_s": bare_tps,
        "loop_vs_bare": raycl_tps / bare_tps,
        "train_memory": progress.train_memory,
        "train_peak_bytes": sum(progress.train_memory.values()),
        "num_params": run.counts["total_params"],
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps({key: value for key, value in row.items() if not key.endswith("_step_s")}), flush=True)
    return row


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The checked numbers at the top of the JSON: SmolLM2's full-AdamW `loop_vs_bare` (the lowest over its
    methods beside it) and the GaLore per-layer rows' ratios against AdamW."""
    first = rows[0]["model"] if rows else None
    mine = [row for row in rows if row["model"] == first]
    full = next((row for row in mine if row["method"] == "full (AdamW)"), None)
    galore = {row["model"]: row for row in rows if row["method"].startswith("GaLore")}
    return {
        "model": first,
        "loop_vs_bare": full["loop_vs_bare"] if full else None,
        "loop_vs_bare_min": min((row["loop_vs_bare"] for row in mine), default=None),
        "galore_per_layer": {
            model: {key: row.get(key) for key in ("peak_ratio_vs_adamw", "speed_ratio_vs_adamw", "loop_vs_bare")}
            for model, row in galore.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(PACKAGED), choices=list(PACKAGED))
    parser.add_argument("--steps", type=int, default=4, help="timed steps of each loop per method")
    parser.add_argument("--trial", action="append", default=[], help="NAME=RESULT_JSON of a finished trial")
    parser.add_argument("--skip", action="append", default=[], help="MODEL:METHOD label not to run")
    parser.add_argument("--rows-from", type=Path, help="an earlier report's JSON: its rows, not measured again")
    args = parser.parse_args()

    cores = cores_given()
    threads = f"train.cpu_threads={cores}"  # one count for every row, so that their speeds compare
    torch.set_num_threads(cores)  # as the rows run, for `machine()`
    earlier = json.loads(args.rows_from.read_text()) if args.rows_from else {"rows": [], "machine": machine()}
    rows, where = earlier["rows"], earlier["machine"]
    for model in [] if args.rows_from else args.models:
        for label, overrides in METHODS.items():
            if f"{model}:{label}" in args.skip or (model != args.models[0] and "fp32" in label):
                continue
            rows.append(measure(model, label, [*overrides, threads], args.steps))
            gc.collect()  # the last run's model and optimizer
        adamw = next((row for row in rows if row["model"] == model and row["method"] == "full (AdamW)"), None)
        for row in rows:
            if row["model"] == model and adamw is not None and row is not adamw:
                row["peak_ratio_vs_adamw"] = row["train_peak_bytes"] / adamw["train_peak_bytes"]
                row["speed_ratio_vs_adamw"] = row["raycl_tokens_per_s"] / adamw["raycl_tokens_per_s"]
    trials = {}
    for spec in args.trial:
        name, path = spec.rsplit("=", 1)
        result = json.loads(Path(path).read_text())
        trials[name] = {
            key: result.get(key)
            for key in (
                "wall_time_s", "train_time_s", "eval_time_fraction", "tokens_per_s", "learning_nats", "forgetting",
                "base_loss_before", "base_loss_after", "dtype", "cpu_threads", "peak_memory_bytes", "lr",
            )
        } | {key: value for key, value in result.items() if key.startswith("bench_")}  # fmt: skip

    table = [
        [
            row["model"], row["method"], row["dtype"], str(row["cpu_threads"]), f"{row['raycl_tokens_per_s']:.0f}",
            f"{row['bare_tokens_per_s']:.0f}", f"{row['loop_vs_bare']:.2f}", f"{row['train_peak_bytes'] / 2**30:.2f}",
            f"{row.get('peak_ratio_vs_adamw', 1.0):.2f}", f"{row.get('speed_ratio_vs_adamw', 1.0):.2f}",
        ]
        for row in rows
    ]  # fmt: skip
    loads = ", ".join(f"{row['load_average']:.1f}" for row in rows)
    notes = [
        f"Machine: {where}; load average {loads} after each row (other jobs shared the 2 cores).",
        "Steps: batch 4 x 128 tokens (1 replay row), examples/real_trial.yaml's trial; tokens/s from median steps.",
    ]
    measured = {row["model"] for row in rows}
    notes += [
        f"{model}: no loop or memory rows in this report (not run: `python bench/real_models.py --models {model}`)."
        for model in PACKAGED
        if model not in measured
    ]
    for name, trial in trials.items():
        notes.append(
            f"Trial {name}: {trial['wall_time_s']:.0f} s wall, {trial['tokens_per_s']:.0f} tokens/s in training "
            f"({trial['dtype']}, lr {trial['lr']:g}), learning_nats {trial['learning_nats']:.3f}, forgetting "
            f"{trial['forgetting']:+.3f} nats (C4/WikiText {trial['base_loss_before']:.3f} -> "
            f"{trial['base_loss_after']:.3f}), eval share {trial['eval_time_fraction']:.2f}, peak resident "
            f"{trial['peak_memory_bytes'] / 2**30:.1f} GiB."
        )
    markdown = write_report(
        "real_models",
        "Real models: raycl's loop against a bare loop, and memory by method",
        [__doc__.split("\n\n")[2].strip()],
        [
            "model", "method", "dtype", "threads", "raycl tokens/s", "bare tokens/s", "loop_vs_bare",
            "step peak GiB", "peak vs AdamW", "speed vs AdamW",
        ],
        table,
        notes,
        {"machine": where, **headline(rows), "rows": rows, "trials": trials},
    )  # fmt: skip
    print(markdown)


if __name__ == "__main__":
    main()
