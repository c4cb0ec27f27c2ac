"""The continual stream a trial trains on: stages of new data, plus the retention probe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

from raycl.data.tokens import encode_conversation, encode_document, pack_blocks
from raycl.world.corpus import Split
from raycl.world.ladder import base_corpus_blocks
from raycl.world.offline import World

if TYPE_CHECKING:
    from raycl.data.sources import LoadSummary


@dataclass(frozen=True)
class Stage:
    name: str
    train_blocks: torch.Tensor  # (n, seq_len) packed token blocks
    train_labels: torch.Tensor  # like train_blocks, -100 where no loss (e.g. user turns)
    heldout: list[list[int]]  # unpacked examples, one per held-out document or conversation
    heldout_labels: list[list[int]]  # like heldout, -100 where no loss


@dataclass(frozen=True)
class Stream:
    stages: list[Stage]
    retention: list[list[int]]  # held-out examples of the original (pretraining) distribution
    replay_pool: torch.Tensor  # (n, seq_len) train blocks of the original distribution, disjoint from `retention`
    summary: LoadSummary | None = None  # what loading a real dataset kept and skipped


def encode_split(tokenizer: PreTrainedTokenizerBase, split: Split, max_length: int) -> list[list[int]]:
    """Every document and conversation of `split` as token ids, cut to `max_length`."""
    examples = [encode_document(tokenizer, text) for text in split.documents]
    examples += [encode_conversation(tokenizer, chat) for chat in split.conversations]
    return [example[:max_length] for example in examples]


def offline_stream(world: World, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> Stream:
    """The offline world's stages (its new domains, in order) and its base held-out split."""
    stages = []
    for domain in world.text.stages:
        blocks = pack_blocks(encode_split(tokenizer, domain.train, max_length=10**9), seq_len)
        heldout = encode_split(tokenizer, domain.heldout, seq_len)
        # The offline world trains on every token.
        stages.append(Stage(domain.name, blocks, blocks, heldout, heldout))
    return Stream(
        stages=stages,
        retention=encode_split(tokenizer, world.text.base.heldout, seq_len),
        replay_pool=base_corpus_blocks(world.text.base, tokenizer, seq_len),
    )
