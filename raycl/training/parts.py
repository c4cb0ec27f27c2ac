"""What the trial loop and the LR range test share: the device and its autocast, the next-token loss,
the stream a model trains on, and strict JSON."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raycl.config import TrialConfig
from raycl.data.build import build_stream
from raycl.data.stream import Stream
from raycl.data.tokens import IGNORE_INDEX
from raycl.world.offline import World
from raycl.world.stream import offline_stream


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


# From this many parameters a model gains from bf16 on a CPU that has it, and from more than one thread; below it
# (the ladder's models, at most a few million) casts and thread handoffs cost more than they save.
LARGE_MODEL_PARAMS = 30_000_000
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); without it bf16 autocast runs 9-32x slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_dtype(choice: str, device: torch.device, num_params: int) -> torch.dtype:
    """`train.dtype` resolved: bf16 or fp32; auto is bf16 on a GPU, and on a CPU with native bf16 for a large model."""
    if choice == "auto":
        large = num_params >= LARGE_MODEL_PARAMS
        bf16 = device.type == "cuda" or (large and cpu_has_bf16())
        return torch.bfloat16 if bf16 else torch.float32
    return torch.bfloat16 if choice == "bf16" else torch.float32


def cores_given() -> int:
    """The cores this process is given: OMP_NUM_THREADS (Ray sets it to a task's CPUs), else those of the CPUs it
    may run on that other processes leave idle (their count less the 1-minute load average, at least 1).

    Threads beyond the idle cores wait on each other: a SmolLM2-135M step (4 x 128 tokens, bf16) took 17.5 s on
    2 threads against 4.0 s on 1 on a 2-core machine at load 4.6.
    """
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = math.floor(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0  # cores in full use elsewhere
    return max(1, cores - busy)


def resolve_threads(choice: int | None, num_params: int, cores: int | None = None) -> int:
    """`train.cpu_threads` resolved: as given, else 1 for a small model and the cores given (`cores`, counted
    before the trial's own work raised the load, else now) for a large one."""
    if choice is not None:
        return choice
    return (cores or cores_given()) if num_params >= LARGE_MODEL_PARAMS else 1


def autocast_for(device: torch.device, dtype: torch.dtype = torch.float32) -> contextlib.AbstractContextManager:
    """bf16 autocast where `dtype` is bf16, on GPU or CPU; otherwise plain fp32."""
    if dtype == torch.bfloat16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the next token; IGNORE_INDEX labels are skipped.

    A batch with nothing to learn (a long user turn under assistant-only loss) gives 0, not NaN.
    """
    targets = labels[:, 1:]
    if not (targets != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    # Labels shifted left against all logits, flat (transformers' own loss): on a 49k vocabulary, slicing the logits
    # and moving the vocabulary to dim 1 instead took 1.0-2.1 s for loss and backward against 0.8-1.5 s (CPU).
    shifted = nn.functional.pad(targets, (0, 1), value=IGNORE_INDEX)
    flat = logits.float().reshape(-1, logits.shape[-1])
    return nn.functional.cross_entropy(flat, shifted.reshape(-1), ignore_index=IGNORE_INDEX)


def load_stream(config: TrialConfig, world: World, tokenizer) -> Stream:
    """The offline world's stages, or a real dataset's (`stream:`), whose original distribution is
    its own `stream.original` corpus or, without one, the offline world's base corpus."""
    seq_len = config.train.seq_len
    if config.stream is None:
        return offline_stream(world, tokenizer, seq_len)
    if config.stream.original is not None:
        return build_stream(config.stream, tokenizer, seq_len)
    offline = offline_stream(world, tokenizer, seq_len)
    return build_stream(config.stream, tokenizer, seq_len, retention=offline.retention, replay_pool=offline.replay_pool)


def finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float (nested in lists and dicts) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON (a bare NaN is not JSON): non-finite numbers are written as null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite_or_none(data), indent=2, allow_nan=False))
