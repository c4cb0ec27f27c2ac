"""What the trial loop and the LR range test share: the device and its autocast, the next-token loss,
the stream a model trains on, and strict JSON."""

from __future__ import annotations

import contextlib
import json
import math
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


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; fp32 on CPU, where bf16 without native support runs 9-32x slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the next token; IGNORE_INDEX labels are skipped.

    A batch with nothing to learn (a long user turn under assistant-only loss) gives 0, not NaN.
    """
    targets = labels[:, 1:]
    if not (targets != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX)


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
