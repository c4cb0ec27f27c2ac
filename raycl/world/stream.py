"""The offline world as a continual stream: its new domains as stages, its base held-out split as the probe."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from raycl.data.stream import Stage, Stream
from raycl.data.tokens import encode_conversation, encode_document, pack_blocks
from raycl.world.corpus import Split
from raycl.world.ladder import base_corpus_blocks
from raycl.world.offline import World


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
