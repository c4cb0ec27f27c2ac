"""Token-level plumbing shared by pretraining, the continual stream and evaluation."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

import torch
from transformers import PreTrainedTokenizerBase

from raycl.data.formats import Conversation

# The label of a token no loss is computed on (the `transformers` and `torch` convention).
IGNORE_INDEX = -100


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what turns text into ids here: vocabulary and merges, special tokens, the chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [backend.to_str() if backend is not None else tokenizer.name_or_path, str(tokenizer.chat_template)]
    parts += [str(tokenizer.bos_token), str(tokenizer.eos_token)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def leading_bos(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The BOS id where the tokenizer starts every text with it by itself, as its model expects one at position 0
    (Gemma); else None."""
    bos = tokenizer.bos_token_id
    return bos if isinstance(bos, int) and tokenizer("a").input_ids[:1] == [bos] else None


def encode_conversation(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> list[int]:
    """Token ids of a chat rendered with the tokenizer's chat template (BOS included once)."""
    # One conversation, tokenized, without a dict: a flat list of ids (the return type spans every option).
    return cast(list[int], list(tokenizer.apply_chat_template(list(conversation), tokenize=True, return_dict=False)))


def encode_document(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a plain document framed as `BOS text EOS`."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if not isinstance(bos, int) or not isinstance(eos, int):
        raise ValueError(f"{tokenizer.name_or_path}: documents are framed as BOS text EOS, and it lacks one of them")
    ids: list[int] = tokenizer(text, add_special_tokens=False).input_ids
    return [bos, *ids, eos]


def pack_blocks(sequences: Sequence[Sequence[int]], block_size: int, lead: int | None = None) -> torch.Tensor:
    """Concatenate sequences and cut them into `(n, block_size)` training blocks; with `lead`, each block is
    `lead` (a BOS, for a model that expects one first) and the next `block_size - 1` tokens.

    The remainder shorter than a block is dropped; an error if not even one block fits.
    """
    flat = [token for sequence in sequences for token in sequence]
    width = block_size if lead is None else block_size - 1
    count = len(flat) // width
    if count == 0:
        raise ValueError(f"{len(flat)} tokens cannot fill one block of {block_size}")
    blocks = torch.tensor(flat[: count * width], dtype=torch.long).view(count, width)
    if lead is None:
        return blocks
    return torch.cat([torch.full((count, 1), lead, dtype=torch.long), blocks], dim=1)


def batch_at(blocks: torch.Tensor, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """The batch of blocks used at `step`: epochs of seeded shuffles, a pure function of its inputs.

    Being stateless, a resumed run draws exactly the batches an uninterrupted one would.
    """
    count = blocks.shape[0]
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // count
    rows = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        in_epoch = epochs == epoch
        rows[in_epoch] = order[positions[in_epoch] % count]
    return blocks[rows]


def pad_batch(examples: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad examples into `(input_ids, attention_mask)`."""
    width = max(len(example) for example in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, : len(example)] = torch.tensor(example, dtype=torch.long)
        mask[row, : len(example)] = 1
    return ids, mask
