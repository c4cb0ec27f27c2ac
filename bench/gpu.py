"""The prepared GPU check: what raycl does on one GPU, in under 8 minutes, written to reports/gpu.{md,json}.

    python bench/gpu.py                         # one CUDA GPU; the MFU peak is read from its name (or --peak-tflops)
    python bench/gpu.py --cpu --out /tmp/gpu    # the same steps at smoke size on CPU: proves the script runs (CI)

1. Speed: tokens/s of a bf16-autocast AdamW training step (forward, backward, clipping, step) of a
   SmolLM2-135M-shaped and a Qwen2-0.5B-shaped model (random init, no hub), and MFU against the card's dense
   bf16 peak (6N plus attention FLOPs per token).
2. Memory: the whole peak of a training step of the 0.5B model (weights, gradients, optimizer state and
   activations, raycl.training.memory.StepMemory over CUDA's allocator) under per-layer GaLore, with 8-bit Adam
   moments where galore-torch offers them (GaLoreAdamW8bit), against AdamW.
3. Sweep: 4 trials on this GPU, a quarter of it each, under the `train` executor with early stopping at stage 1;
   it must end with every trial complete or stopped and no placement group left (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from memory import Runner, galore_8bit, gpu_model, training_flops_per_token
from report import REPORTS, machine, write_report
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig

from raycl.config import FullMethod, GaLoreMethod, TrainConfig
from raycl.training.methods import PreparedMethod, prepare_method

# Dense bf16 peaks in TFLOP/s (no sparsity), by a part of torch.cuda.get_device_name(); the first match counts.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "4090": 165.0,
}
TRAIN = TrainConfig(lr=1e-4, grad_clip=1.0)


def smollm2_135m() -> tuple[type, PretrainedConfig]:
    """SmolLM2-135M's shape (Llama, 30 layers of width 576, grouped-query attention, a 49k vocabulary)."""
    return LlamaForCausalLM, LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    )


def smoke_size(model: tuple[type, PretrainedConfig]) -> tuple[type, PretrainedConfig]:
    """The same architecture, shrunk to seconds on one CPU core."""
    model_class, config = model
    small = {key: value for key, value in config.to_dict().items() if key != "layer_types"} | {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    return model_class, type(config)(**small)


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float | None, str]:
    """The card's dense bf16 peak in FLOP/s, and where it came from."""
    if given_tflops:
        return given_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no GPU: no MFU"
    name = torch.cuda.get_device_name(device)
    for part, tflops in PEAK_BF16_TFLOPS.items():
        if part in name:
            return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s dense bf16"
    return None, f"{name}: peak unknown, pass --peak-tflops"


def batch_of(config: PretrainedConfig, batch_size: int, seq_len: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=generator).to(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def speed(
    model: tuple[type, PretrainedConfig],
    device: torch.device,
    batch_size: int,
    seq_len: int,
    steps: int,
    peak: float | None,
) -> dict[str, Any]:
    """Median tokens/s of AdamW training steps after two warm-up steps, and MFU against `peak`."""
    model_class, config = model
    runner = Runner(lambda m: prepare_method(m, FullMethod(), TRAIN), model_class, config, device)
    batch = batch_of(config, batch_size, seq_len, device)
    for _ in range(2):
        runner.step(batch)
    times = [runner.step(batch) for _ in range(steps)]
    num_params = sum(p.numel() for p in runner.prepared.model.parameters())
    tokens_per_s = batch_size * seq_len / statistics.median(times)
    flops_per_token = training_flops_per_token(num_params, config, seq_len)
    del runner
    free(device)
    return {
        "num_params": num_params,
        "batch": [batch_size, seq_len],
        "step_times_s": times,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token / peak if peak else None,
    }


def memory(model: tuple[type, PretrainedConfig], device: torch.device, batch_size: int, seq_len: int) -> dict:
    """Whole peak memory of one training step per method (after two steps: moments and projections exist)."""
    model_class, config = model
    rank = config.hidden_size // 4
    methods: dict[str, Callable[[torch.nn.Module], PreparedMethod]] = {
        "AdamW": lambda m: prepare_method(m, FullMethod(), TRAIN),
        f"GaLore r{rank}, per-layer": lambda m: prepare_method(
            m, GaLoreMethod(name="galore", galore_rank=rank, per_layer_updates=True), TRAIN
        ),
    }
    if device.type == "cuda":  # bitsandbytes' 8-bit moments exist on CUDA only
        methods[f"GaLore 8-bit r{rank}, per-layer"] = galore_8bit(rank, per_layer=True)
    batch = batch_of(config, batch_size, seq_len, device)
    rows = {}
    for label, prepare in methods.items():
        runner = Runner(prepare, model_class, config, device)
        runner.step(batch)
        runner.step(batch)
        measured = runner.measure(batch)
        rows[label] = {"peak_bytes": measured.peak_bytes, "parts": measured.parts}
        del runner, measured
        free(device)
    for row in rows.values():
        row["peak_vs_adamw"] = row["peak_bytes"] / rows["AdamW"]["peak_bytes"]
    return {"batch": [batch_size, seq_len], "methods": rows}


def sweep(runs: Path, on_gpu: bool) -> dict[str, Any]:
    """A 4-trial early-stopping sweep under the `train` executor on this machine's local Ray."""
    import optuna
    from rich.console import Console

    from raycl.sweep import run_sweep

    space = {
        "parameters": {"train.lr": {"type": "log_uniform", "low": 1.0e-4, "high": 3.0e-2}},
        "fixed": {
            "model": {"name": "raycl-tiny-s" if on_gpu else "raycl-tiny-xs"},
            "world": {"num_stages": 2},
            "train": {"steps_per_stage": 30 if on_gpu else 6, "warmup_steps": 1},
            "eval": {"max_examples": 32 if on_gpu else 16, "benchmarks": {"tasks": []}},
        },
        "budget": {
            "trials": 4,
            "concurrency": 4,
            "workers_per_trial": 1,
            "cpus_per_worker": 2 if on_gpu else 1,
            "gpus_per_worker": 0.25 if on_gpu else 0,
            "executor": "train",
        },
        "early_stopping": {"rungs": [1], "reduction": 2},
        "sampler": {"name": "random"},
        "seed": 3,
    }
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / "gpu_sweep.yaml"
    path.write_text(yaml.safe_dump(space))
    outcome = run_sweep(path, out_root=runs, console=Console(width=120))
    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    trials = [
        {
            "trial": f"t{trial.number:04d}",
            "state": trial.state.name,
            "gpus": trial.user_attrs.get("gpus", []),
            "device": trial.user_attrs.get("device"),
        }
        for trial in study.trials
    ]
    return {
        "space": space,
        "runs": str(outcome.out_dir),
        "wall_s": outcome.wall_time_s,
        "completed": outcome.completed,
        "stopped": outcome.stopped,
        "failed": outcome.failed,
        "placement_groups_left": outcome.placement_groups_left,
        "trials": trials,
        "ok": outcome.failed == 0
        and outcome.unfinished == 0
        and not outcome.placement_groups_left
        and outcome.completed + len(outcome.stopped) == 4,
    }


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="smoke size on CPU (CI): proves the script runs")
    parser.add_argument("--out", type=Path, default=REPORTS, help="where gpu.md and gpu.json go (default reports/)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    args = parser.parse_args()
    on_gpu = not args.cpu
    if on_gpu and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device here; run with --cpu for the smoke size")
    device = torch.device("cuda" if on_gpu else "cpu")
    if not on_gpu:
        torch.set_num_threads(1)
    started = time.perf_counter()
    peak, peak_source = peak_flops(device, args.peak_tflops)
    models = {"SmolLM2-135M shape": smollm2_135m(), "Qwen2-0.5B shape": gpu_model()}
    if not on_gpu:
        models = {label: smoke_size(model) for label, model in models.items()}
    batch_size, seq_len, steps = (8, 1024, 10) if on_gpu else (2, 32, 3)
    speeds = {label: speed(model, device, batch_size, seq_len, steps, peak) for label, model in models.items()}
    memories = memory(models["Qwen2-0.5B shape"], device, *((4, 512) if on_gpu else (2, 32)))
    with tempfile.TemporaryDirectory(prefix="raycl-gpu-bench-") as runs:
        swept = sweep(Path(runs), on_gpu)
    data = {
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu (smoke size)",
        "machine": machine(),
        "peak_flops": peak,
        "peak_source": peak_source,
        "speed": speeds,
        "memory": memories,
        "sweep": swept,
        "wall_s": time.perf_counter() - started,
    }
    rows = [
        [
            "speed",
            label,
            f"{row['tokens_per_s']:,.0f} tokens/s",
            f"MFU {row['mfu']:.1%}" if row["mfu"] is not None else "-",
        ]
        for label, row in speeds.items()
    ]
    rows += [
        ["memory (Qwen2-0.5B shape)", label, f"{mib(row['peak_bytes'])} MiB peak", f"{row['peak_vs_adamw']:.2f}x AdamW"]
        for label, row in memories["methods"].items()
    ]
    rows.append(
        [
            "sweep",
            "4 trials, train executor, early stopping" + (", 0.25 GPU each" if on_gpu else ""),
            f"{swept['completed']} complete, {len(swept['stopped'])} stopped, {swept['failed']} failed",
            f"{len(swept['placement_groups_left'])} placement groups left",
        ]
    )
    markdown = write_report(
        "gpu",
        "The prepared GPU check" + ("" if on_gpu else " (CPU smoke size: no GPU numbers)"),
        [
            f"{data['device']}; {data['machine']}; {data['wall_s']:.0f} s in all. Peak: {peak_source}.",
            f"Speed: bf16-autocast AdamW steps of {batch_size} x {seq_len} tokens, median of {steps} after 2 warm-up "
            "steps; random-init models of the named shapes.",
        ],
        ["part", "what", "measured", "against"],
        rows,
        [f"Sweep ok: {swept['ok']} (every trial complete or stopped, no placement group left)."],
        data,
        directory=args.out,
    )
    print(markdown)
    if not swept["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
