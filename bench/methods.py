"""Full fine-tuning vs LoRA vs GaLore on one stream, side by side, plus raycl's loop vs a bare loop.

    python bench/methods.py                      # raycl-tiny-m, writes reports/methods.{md,json}
    python bench/methods.py --model raycl-tiny-l

Every number is measured in this one run on this machine, so the ratios compare like with like.
GaLore runs at rank d/4, where it must keep at most half of AdamW's optimizer state.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from report import machine, write_report

from raycl.config import TrialConfig
from raycl.data.tokens import batch_at
from raycl.models.ladder import LADDER
from raycl.models.loading import load_base_model
from raycl.training.trial import run_trial
from raycl.world.offline import load_world
from raycl.world.stream import offline_stream


def bare_loop_tokens_per_s(config: TrialConfig, steps: int) -> float:
    """Tokens/s of the plainest AdamW loop on the same model and batches: the floor raycl is held to."""
    torch.set_num_threads(config.train.cpu_threads or 1)  # the ladder: one thread (resolve_threads)
    world = load_world(config.world)
    model, tokenizer = load_base_model(config.model, world)
    blocks = offline_stream(world, tokenizer, config.train.seq_len).stages[0].train_blocks
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        batch = batch_at(blocks, config.train.batch_size, step, 0)
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * blocks.shape[1] * config.train.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="raycl-tiny-m", choices=sorted(LADDER))
    parser.add_argument("--steps-per-stage", type=int, default=60)
    args = parser.parse_args()

    width = LADDER[args.model].hidden_size
    base = TrialConfig().with_overrides({"model.name": args.model, "train.steps_per_stage": args.steps_per_stage})
    methods = {
        "full (AdamW)": {"method.name": "full"},
        "LoRA r8": {"method.name": "lora", "method.lora_rank": 8},
        f"GaLore r{width // 4} (d/4)": {"method.name": "galore", "method.galore_rank": width // 4},
    }
    results = {}
    for label, overrides in methods.items():
        with tempfile.TemporaryDirectory() as out:
            results[label] = run_trial(base.with_overrides(overrides), Path(out))
    bare = bare_loop_tokens_per_s(base, steps=args.steps_per_stage)

    full = results["full (AdamW)"]
    rows = [
        {
            "method": label,
            "learning": r.learning,
            "forgetting": r.forgetting,
            "optimizer_state_bytes": r.optimizer_state_bytes,
            "state_vs_full": r.optimizer_state_bytes / full.optimizer_state_bytes,
            "trainable_params": r.method_info["trainable_params"],
            "tokens_per_s": r.tokens_per_s,
            "speed_vs_full": r.tokens_per_s / full.tokens_per_s,
            "eval_time_fraction": r.eval_time_fraction,
        }
        for label, r in results.items()
    ]
    report = {
        "model": args.model,
        "num_params": full.num_params,
        "steps_per_stage": args.steps_per_stage,
        "stages": len(full.stage_matrix) - 1,
        "machine": machine(),
        "bare_loop_tokens_per_s": bare,
        "raycl_full_vs_bare_speed": full.tokens_per_s / bare,
        "methods": rows,
    }
    table = [
        [
            row["method"],
            f"{row['learning']:.3f}",
            f"{row['forgetting']:+.3f}",
            f"{row['optimizer_state_bytes'] / 2**10:,.0f} KiB",
            f"{row['state_vs_full']:.2f}",
            f"{row['trainable_params']:,}",
            f"{row['tokens_per_s']:,.0f}",
            f"{row['speed_vs_full']:.2f}",
            f"{row['eval_time_fraction']:.1%}",
        ]
        for row in rows
    ]
    print(
        write_report(
            "methods",
            f"Methods benchmark: {args.model} ({full['num_params']:,} parameters)",
            [
                f"One run of `python bench/methods.py --model {args.model}` on {machine()}: "
                f"{report['stages']} stages x {args.steps_per_stage} "
                f"steps of the offline world, default trial settings."
            ],
            [
                "method",
                "learning",
                "forgetting (nats)",
                "optimizer state",
                "state vs full",
                "trainable params",
                "tokens/s",
                "speed vs full",
                "evaluation share of wall time",
            ],
            table,
            [
                f"raycl's trial loop (full) vs a bare PyTorch AdamW loop on the same model and batches: "
                f"{full['tokens_per_s']:,.0f} vs {bare:,.0f} tokens/s, ratio {report['raycl_full_vs_bare_speed']:.2f}."
            ],
            report,
        )
    )


if __name__ == "__main__":
    main()
