"""Replay: which old blocks a trial keeps, and which of them each step mixes into its batch.

The pool is the original distribution's train blocks (or samples of the frozen base model); a finite
buffer keeps `buffer_size` of them, chosen at random, by reservoir sampling over the pool in stream
order, or by the base model's loss (hardest or easiest first).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from raycl.config import ReplayConfig
from raycl.data.tokens import batch_at
from raycl.mitigation.self_replay import sample_from_base


def reservoir_sample(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices kept by Algorithm R after streaming `count` items through a reservoir of `size`."""
    kept = torch.arange(min(size, count))
    for index in range(size, count):
        slot = int(torch.randint(0, index + 1, (1,), generator=generator))
        if slot < size:
            kept[slot] = index
    return kept.sort().values


@torch.no_grad()
def block_losses(model: nn.Module, blocks: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Mean next-token loss of `model` on each block."""
    device = next(model.parameters()).device
    losses = []
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        per_token = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        losses.append(per_token.mean(dim=1).cpu())
    return torch.cat(losses)


def select_blocks(
    pool: torch.Tensor, size: int | None, selection: str, seed: int, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """The buffer: `size` blocks of `pool` chosen by `selection` (all of them when size is None)."""
    if size is None or size >= len(pool):
        return pool
    generator = torch.Generator().manual_seed(seed)
    if selection == "random":
        return pool[torch.randperm(len(pool), generator=generator)[:size]]
    if selection == "reservoir":
        return pool[reservoir_sample(len(pool), size, generator)]
    if scores is None:
        raise ValueError(f"replay.selection: {selection} needs the base model's loss of every block")
    return pool[torch.topk(scores, size, largest=selection == "hardest").indices]


class Replay:
    """Replay rows for every step: a pure function of the step, so a resumed trial draws the same rows."""

    def __init__(self, config: ReplayConfig, pool: torch.Tensor, base_model: nn.Module | None, tokenizer, seed: int):
        """`base_model`: the frozen base model, None where replay reads nothing of it (`needs_frozen_base`)."""
        self.config = config
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.seed = seed
        self.generation_time_s = 0.0
        self._chunk: int | None = None
        if config.source == "base":
            scores = None
            if config.selection in ("hardest", "easiest"):
                assert base_model is not None  # ranking blocks by the base model's loss needs it
                scores = block_losses(base_model, pool)
            self.ids = select_blocks(pool, config.buffer_size, config.selection, seed, scores)
            self.labels = self.ids

    def _refresh(self, step: int, length: int) -> None:
        """Self-generated replay: a fresh chunk of base-model samples every `regenerate_every` steps."""
        chunk = step // self.config.regenerate_every
        if chunk == self._chunk:
            return
        assert self.base_model is not None  # self-generated replay samples it
        started = time.perf_counter()
        self.ids, self.labels = sample_from_base(
            self.base_model, self.tokenizer, self.config.generated_per_chunk, length, seed=self.seed * 7919 + chunk
        )
        self.generation_time_s += time.perf_counter() - started
        self._chunk = chunk

    def batch(self, step: int, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`rows` replay rows `(ids, labels)` for global step `step`; labels are -100 where masked."""
        if self.config.source == "self_generated":
            self._refresh(step, length)
        index = batch_at(torch.arange(len(self.ids)).unsqueeze(1), rows, step, self.seed).squeeze(1)
        return self.ids[index], self.labels[index]
