"""Whole training memory and speed of each method against AdamW: issue 16's S0 criteria
(peak memory of a training step < 0.5x AdamW's, at > 0.8x its tokens/s).

    python bench/memory.py                  # CPU: a 53M-parameter Llama; writes reports/memory.{md,json}
    python bench/memory.py --device cuda    # a 494M Qwen2-style model under bf16 autocast, plus MFU and
                                            # `pytest -m gpu`; writes reports/memory_gpu.{md,json}

Each method trains its own copy of one randomly initialised model built from a config (no hub) on the
same random batches. A step is forward, backward, clipping at 1.0, optimizer step, zero_grad. Its peak
memory is measured once per method on a dedicated step (raycl.training.memory.StepMemory); speed is
timed on other steps, round-robin over the methods so that a busy machine slows them all alike. On CPU
a step is timed in process CPU seconds: the process runs one thread, and other people's jobs on a
shared machine stretch its wall time, not its CPU time.
GaLore's projection refresh (an SVD per matrix) is timed on one forced step and amortised over
`update_proj_gap` steps: raycl's default of 50, and the GaLore paper's 200.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from report import machine, write_report
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, Qwen2Config, Qwen2ForCausalLM

from raycl.config import FullMethod, GaLoreMethod, LoraMethod, TrainConfig
from raycl.models.ladder import LADDER
from raycl.training.memory import StepMemory
from raycl.training.methods import ADAM_BETAS, PreparedMethod, build_optimizer, galore_groups, prepare_method

GRAD_CLIP, LR = 1.0, 1e-4
RAYCL_GAP = GaLoreMethod.model_fields["galore_update_proj_gap"].default
# bf16 dense peak of an H100/H200 SXM, for MFU; pass --peak-tflops for another GPU.
H100_BF16_TFLOPS = 989.0


def cpu_model() -> tuple[type, PretrainedConfig]:
    """53M parameters, wide rather than deep: a 256-token step's activations grow with d while the
    weights grow with d^2, and at d=1024 a step takes no longer on one core than at d=512 with 8 layers."""
    return LlamaForCausalLM, LlamaConfig(
        vocab_size=2048,
        hidden_size=1024,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=16,
        intermediate_size=2816,
        tie_word_embeddings=True,
        max_position_embeddings=1024,
    )


def gpu_model() -> tuple[type, PretrainedConfig]:
    """Qwen2-0.5B's shape (494M parameters, a 152k vocabulary, grouped-query attention)."""
    return Qwen2ForCausalLM, Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    )


def ladder_model(name: str) -> tuple[type, PretrainedConfig]:
    rung = LADDER[name]
    return LlamaForCausalLM, LlamaConfig(
        vocab_size=512,
        hidden_size=rung.hidden_size,
        num_hidden_layers=rung.num_layers,
        num_attention_heads=rung.num_heads,
        num_key_value_heads=rung.num_heads,
        intermediate_size=rung.intermediate_size,
        tie_word_embeddings=True,
    )


def galore_8bit(rank: int, per_layer: bool) -> Callable[[torch.nn.Module], PreparedMethod]:
    """GaLore with 8-bit Adam moments (bitsandbytes); CUDA only, as it calls torch.cuda.synchronize."""

    def prepare(model: torch.nn.Module) -> PreparedMethod:
        from galore_torch import GaLoreAdamW8bit

        from raycl.training.galore import use_compact_projectors

        def make(groups: list[dict]) -> torch.optim.Optimizer:
            return use_compact_projectors(GaLoreAdamW8bit(groups, lr=LR, betas=ADAM_BETAS, weight_decay=0.0))

        groups, info = galore_groups(model, GaLoreMethod(name="galore", galore_rank=rank))
        return PreparedMethod(model, build_optimizer(make, groups, per_layer, GRAD_CLIP), info)

    return prepare


def methods(width: int, device: torch.device) -> dict[str, Callable[[torch.nn.Module], PreparedMethod]]:
    """Every method of the comparison, AdamW first; GaLore at ranks d/4 and d/16."""
    train = TrainConfig(lr=LR, grad_clip=GRAD_CLIP)
    configs = {
        "AdamW": FullMethod(),
        "AdamW, per-layer": FullMethod(per_layer_updates=True),
        "LoRA r8": LoraMethod(name="lora", lora_rank=8),
        "LoRA r64": LoraMethod(name="lora", lora_rank=64),
    }
    for rank in (width // 4, width // 16):
        configs[f"GaLore r{rank}"] = GaLoreMethod(name="galore", galore_rank=rank)
        configs[f"GaLore r{rank}, per-layer"] = GaLoreMethod(name="galore", galore_rank=rank, per_layer_updates=True)
    prepared = {label: (lambda model, m=method: prepare_method(model, m, train)) for label, method in configs.items()}
    if device.type == "cuda":
        prepared[f"GaLore 8-bit r{width // 4}"] = galore_8bit(width // 4, per_layer=False)
        prepared[f"GaLore 8-bit r{width // 4}, per-layer"] = galore_8bit(width // 4, per_layer=True)
    return prepared


class Runner:
    """One method's model and optimizer, and the step the benchmark times and measures."""

    def __init__(
        self,
        prepare: Callable[[torch.nn.Module], PreparedMethod],
        model_class: type,
        config: PretrainedConfig,
        device: torch.device,
    ):
        torch.manual_seed(0)
        with device:  # a 494M model is initialised in seconds on a GPU, minutes on its host's CPU
            self.prepared = prepare(model_class(config))
        self.device = device
        self.clock = time.perf_counter if device.type == "cuda" else time.process_time
        self.times: list[float] = []

    def step(self, batch: torch.Tensor) -> float:
        """One training step; returns its seconds."""
        model, optimizer = self.prepared.model, self.prepared.optimizer
        self._sync()
        started = self.clock()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)  # per-layer: nothing left to clip here
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._sync()
        return self.clock() - started

    def measure(self, batch: torch.Tensor) -> StepMemory:
        with StepMemory(self.prepared.model, self.prepared.optimizer) as memory:
            self.tracked_s = self.step(batch)
        return memory

    def refresh_s(self, batch: torch.Tensor) -> float:
        """Extra seconds of a step that refreshes every GaLore projection (0 for other methods)."""
        projectors = [s["projector"] for s in self.prepared.optimizer.state.values() if "projector" in s]
        if not projectors:
            return 0.0
        gap = projectors[0].update_proj_gap
        for projector in projectors:
            projector.update_proj_gap = 1
        seconds = self.step(batch)
        for projector in projectors:
            projector.update_proj_gap = gap
        return max(0.0, seconds - statistics.median(self.times))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def spread(times: list[float]) -> float:
    """Interquartile range over median: how much one method's steps vary."""
    q1, median, q3 = statistics.quantiles(times, n=4)
    return (q3 - q1) / median


def training_flops_per_token(num_params: int, config: PretrainedConfig, seq_len: int) -> float:
    """6N for the weights' matmuls (forward and backward) plus attention scores, 12 * layers * d * T
    (PaLM, appendix B)."""
    return 6 * num_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def run(
    model_class: type,
    config: PretrainedConfig,
    device: torch.device,
    batch_size: int,
    seq_len: int,
    rounds: int,
    steps_per_round: int,
    peak_flops: float | None,
) -> dict:
    """Measure every method: peak memory, tokens/s and (on GPU) MFU, each also as a ratio to AdamW's."""
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=generator).to(device) for _ in range(4)
    ]
    runners = {
        label: Runner(prepare, model_class, config, device)
        for label, prepare in methods(config.hidden_size, device).items()
    }
    num_params = sum(p.numel() for p in runners["AdamW"].prepared.model.parameters())
    memory = {}
    for label, runner in runners.items():
        for batch in batches[:2]:  # optimizer state exists and the first projection is taken
            runner.step(batch)
        memory[label] = runner.measure(batches[2])
    for _ in range(rounds):
        for runner in runners.values():
            runner.times += [runner.step(batches[3]) for _ in range(steps_per_round)]
    tokens = batch_size * seq_len
    rows = {}
    for label, runner in runners.items():
        step_s = statistics.median(runner.times)
        refresh_s = runner.refresh_s(batches[3])
        rows[label] = {
            "peak_bytes": memory[label].peak_bytes,
            "parts": memory[label].parts,
            "step_s": step_s,
            "step_times_s": runner.times,
            "step_spread": spread(runner.times),
            "refresh_s": refresh_s,
            "tokens_per_s": tokens / (step_s + refresh_s / RAYCL_GAP),
            "tokens_per_s_gap200": tokens / (step_s + refresh_s / 200),
            "tracker_overhead": runner.tracked_s / step_s,
        }
        if peak_flops:
            rows[label]["mfu"] = (
                rows[label]["tokens_per_s"] * training_flops_per_token(num_params, config, seq_len) / peak_flops
            )
    adamw = rows["AdamW"]
    for row in rows.values():
        row["peak_ratio_vs_adamw"] = row["peak_bytes"] / adamw["peak_bytes"]
        row["speed_ratio_vs_adamw"] = row["tokens_per_s"] / adamw["tokens_per_s"]
        row["speed_ratio_vs_adamw_gap200"] = row["tokens_per_s_gap200"] / adamw["tokens_per_s_gap200"]
        row["meets_s0"] = row["peak_ratio_vs_adamw"] < 0.5 and row["speed_ratio_vs_adamw"] > 0.8
    return {"num_params": num_params, "tokens_per_step": tokens, "methods": rows}


def largest_rung_at_trial_batch() -> dict:
    """Peak ratio to AdamW of every CPU method on the largest ladder rung at the trial's default batch
    (one warm-up and one measured step each)."""
    name = max(LADDER, key=lambda rung: LADDER[rung].num_layers * LADDER[rung].hidden_size ** 2)
    model_class, config = ladder_model(name)
    train = TrainConfig()
    batch = torch.randint(
        0, config.vocab_size, (train.batch_size, train.seq_len), generator=torch.Generator().manual_seed(0)
    )
    peaks = {}
    for label, prepare in methods(config.hidden_size, torch.device("cpu")).items():
        runner = Runner(prepare, model_class, config, torch.device("cpu"))
        runner.step(batch)
        peaks[label] = runner.measure(batch)
    adamw = peaks["AdamW"]
    return {
        "model": name,
        "num_params": sum(p.numel() for p in adamw.model.parameters()),
        "batch": [train.batch_size, train.seq_len],
        "activations_share_of_adamw_peak": adamw.parts["activations"] / adamw.peak_bytes,
        "peak_ratio_vs_adamw": {label: m.peak_bytes / adamw.peak_bytes for label, m in peaks.items()},
    }


def gpu_tests() -> str:
    """The GPU test tier's last line (pytest -m gpu)."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    return (done.stdout.strip().splitlines() or ["no output"])[-1]


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument(
        "--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="the GPU's dense bf16 peak, for MFU"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"

    model_class, config = gpu_model() if on_gpu else cpu_model()
    result = run(
        model_class,
        config,
        device,
        args.batch_size,
        args.seq_len,
        args.rounds,
        args.steps_per_round,
        args.peak_tflops * 1e12 if on_gpu else None,
    )
    rung = None if on_gpu else largest_rung_at_trial_batch()
    if on_gpu:
        torch.cuda.empty_cache()  # the runners are gone; leave their memory to the tests
    tests = gpu_tests() if on_gpu else None
    report = {
        "device": args.device,
        "machine": machine(),
        "model": config.to_dict() | {"class": model_class.__name__},
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        **result,
        "largest_ladder_rung": rung,
        "gpu_tests": tests,
    }

    rows, tokens = result["methods"], result["tokens_per_step"]
    header = [
        "method",
        "peak MiB",
        "weights",
        "gradients",
        "optimizer state",
        "activations",
        "peak vs AdamW",
        "tokens/s",
        "speed vs AdamW",
        "speed vs AdamW, gap 200",
        *(["MFU"] if on_gpu else []),
        "S0 (< 0.5x memory, > 0.8x speed)",
    ]
    table = [
        [
            label,
            mib(r["peak_bytes"]),
            *(mib(r["parts"][part]) for part in ("weights", "gradients", "optimizer_state", "activations")),
            f"{r['peak_ratio_vs_adamw']:.2f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['speed_ratio_vs_adamw']:.2f}",
            f"{r['speed_ratio_vs_adamw_gap200']:.2f}",
            *([f"{r['mfu']:.1%}"] if on_gpu else []),
            "yes" if r["meets_s0"] else "no",
        ]
        for label, r in rows.items()
    ]
    galore = [r for label, r in rows.items() if r["refresh_s"] > 0]
    overheads = [r["tracker_overhead"] for r in rows.values()]
    peak_source = (
        "CUDA: the allocator peak above the step start, plus the weights, gradients and optimizer state held at "
        "the start."
        if on_gpu
        else "CPU: live tensor storages tracked by raycl.training.memory.StepMemory (scratch memory inside kernels "
        "is not seen)."
    )
    timing = (
        "wall time on a dedicated GPU" if on_gpu else "CPU time of one thread on 2 cores shared with 3 other engineers"
    )

    def labels(keep: Callable[[dict], bool]) -> str:
        return ", ".join(label for label, r in rows.items() if keep(r)) or "none"

    notes = [
        f"S0 met by: {labels(lambda r: r['meets_s0'])}. Below 0.5x AdamW's "
        f"peak: {labels(lambda r: r['peak_ratio_vs_adamw'] < 0.5)}. "
        f"Above 0.8x its speed: {labels(lambda r: r['speed_ratio_vs_adamw'] > 0.8)}.",
        f"Peak: the busiest moment of one dedicated step (forward, "
        f"backward, clipping, optimizer step), split into its parts "
        f"(MiB at that moment). {peak_source}",
        f"Speed: median of {args.rounds} rounds x {args.steps_per_round} steps per method, interleaved, "
        f"{timing}; "
        f"one method's steps spread by "
        f"{min(r['step_spread'] for r in rows.values()):.0%}-{max(r['step_spread'] for r in rows.values()):.0%} "
        "(interquartile range over median). "
        f"GaLore's projection refresh took "
        f"{min(r['refresh_s'] for r in galore):.2f}-{max(r['refresh_s'] for r in galore):.2f} s "
        f"and is amortised over raycl's default update_proj_gap of "
        f"{RAYCL_GAP} steps (tokens/s, speed, S0), or the GaLore paper's 200.",
        "Per-layer updates move the peak from the optimizer step "
        "(weights, every gradient, state) into the backward pass "
        "(weights, state, the activations not yet consumed, one "
        "gradient): they save the gradients less those activations.",
        f"GaLore projects each gradient and back, 4 x rank FLOPs "
        f"per projected weight per step, against 6 x tokens for the "
        f"step itself: at {tokens} tokens, the small batch that lets "
        f"weights and optimizer state dominate memory, that adds "
        + " and ".join(
            f"{4 * r / (6 * tokens):.0%} at rank {r}" for r in (config.hidden_size // 4, config.hidden_size // 16)
        )
        + " to the FLOPs of the projected weights.",
        f"The memory tracker slows its one step {min(overheads):.1f}-{max(overheads):.1f}x; that step is never timed.",
    ]
    if on_gpu:
        notes.append(
            f"MFU: tokens/s x (6N + 12 x layers x d x T) FLOPs per token / {args.peak_tflops:.0f} TFLOP/s, at this "
            "small batch (try --batch-size 8 --seq-len 1024 for a throughput-bound step). "
            f"GPU tests (`pytest -m gpu`): {tests}."
        )
    else:
        notes += [
            "8-bit GaLore (GaLoreAdamW8bit) calls torch.cuda.synchronize() "
            "unconditionally and fails on CPU: it runs only "
            "with `--device cuda`.",
            "GPU: `python bench/memory.py --device cuda` runs this "
            "comparison on a 494M Qwen2-style model (Qwen2-0.5B's "
            "shape) under bf16 autocast, adds 8-bit GaLore, MFU and the GPU test tier (`pytest -m gpu`), and writes "
            "reports/memory_gpu.md. No GPU was lent to this task: that mode was checked by reading only, never run.",
            f"Why not the ladder's largest rung, {rung['model']}: at "
            f"{rung['num_params'] / 1e6:.2f}M parameters and the trial's default "
            f"{rung['batch'][0]} x {rung['batch'][1]} batch, activations are "
            f"{rung['activations_share_of_adamw_peak']:.0%} of AdamW's peak, "
            "so no optimizer can move the whole; measured peak vs AdamW there: "
            + ", ".join(f"{k} {v:.2f}" for k, v in rung["peak_ratio_vs_adamw"].items())
            + ".",
        ]
    shape = f"{config.num_hidden_layers} layers, d={config.hidden_size}, vocab {config.vocab_size}"
    print(
        write_report(
            "memory_gpu" if on_gpu else "memory",
            f"Memory benchmark: {model_class.__name__} "
            f"({result['num_params'] / 1e6:.0f}M parameters, {shape}) on {args.device}",
            [
                f"One run of `python bench/memory.py --device {args.device}` on "
                f"{machine()}: batches of {args.batch_size} x {args.seq_len} "
                f"tokens (the token batch of the GaLore paper's LLaMA 7B memory "
                f"figure){', bf16 autocast over fp32 weights' if on_gpu else ', fp32'}, "
                f"lr {LR}, clipping at {GRAD_CLIP}, random tokens (memory and speed do not depend on them)."
            ],
            header,
            table,
            notes,
            report,
        )
    )


if __name__ == "__main__":
    main()
