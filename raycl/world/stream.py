"""The offline world's text as tokens: its splits as examples and packed blocks (what the ladder pretrains on),
and the world as a continual stream: its new domains as stages, its base held-out split as the probe."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from raycl.artifacts.cache import cached_build
from raycl.data.stream import Stage, Stream
from raycl.data.tokens import encode_conversation, encode_document, pack_blocks, tokenizer_fingerprint
from raycl.world.corpus import Domain, Split
from raycl.world.offline import World

POOL_FILE = "replay_pool.safetensors"


def base_corpus_blocks(base: Domain, tokenizer: PreTrainedTokenizerBase, block_size: int) -> torch.Tensor:
    """The base domain's train split (documents and chats) packed into training blocks."""
    return pack_blocks(split_examples(base.train, tokenizer), block_size)


def split_examples(split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int | None = None) -> list[list[int]]:
    """Token ids of every document and chat of `split`, each cut to `max_length`."""
    examples = [encode_document(tokenizer, text) for text in split.documents]
    examples += [encode_conversation(tokenizer, chat) for chat in split.conversations]
    return [example[:max_length] for example in examples]


def replay_pool(world: World, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> torch.Tensor:
    """The base train split packed into `seq_len` blocks: the replay source of every offline stream.

    About a million tokens, which take seconds to encode: encoded once per world, tokenizer and block
    length, and cached.
    """
    spec = {"world": world.id, "tokenizer": tokenizer_fingerprint(tokenizer), "seq_len": seq_len}

    def build(out: Path) -> None:
        save_file({"blocks": base_corpus_blocks(world.text.base, tokenizer, seq_len)}, str(out / POOL_FILE))

    return load_file(str(cached_build("replay_pools", spec, build) / POOL_FILE))["blocks"]


def offline_stream(world: World, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> Stream:
    """The offline world's stages (its new domains, in order) and its base held-out split."""
    stages = []
    for domain in world.text.stages:
        blocks = pack_blocks(split_examples(domain.train, tokenizer), seq_len)
        heldout = split_examples(domain.heldout, tokenizer, seq_len)
        # The offline world trains on every token.
        stages.append(Stage(domain.name, blocks, blocks, heldout, heldout))
    return Stream(
        stages=stages,
        retention=split_examples(world.text.base.heldout, tokenizer, seq_len),
        replay_pool=replay_pool(world, tokenizer, seq_len),
    )
