"""The ladder of tiny Llama-style base models, pretrained from scratch on the world's base corpus.

Each rung is cached by a hash of everything that defines it (architecture, world, budget, seed), so
a sweep over model sizes pretrains every size once, whoever asks first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import Progress
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from raycl.data.tokens import batch_at, encode_conversation, encode_document, pack_blocks
from raycl.world.cache import cached_build
from raycl.world.corpus import Domain

# Bump when pretraining changes in a way the spec below does not capture: old caches then rebuild.
PRETRAIN_VERSION = 1


@dataclass(frozen=True)
class Rung:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


LADDER: dict[str, Rung] = {
    "raycl-tiny-s": Rung(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=96),
    "raycl-tiny-m": Rung(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=192),
    "raycl-tiny-l": Rung(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384),
}


@dataclass(frozen=True)
class PretrainRecipe:
    """Pretraining hyperparameters shared by every rung (small models tolerate a high LR)."""

    lr: float = 3e-3
    batch_size: int = 16
    block_size: int = 128
    warmup_steps: int = 20
    seed: int = 0


def llama_config(rung: Rung, tokenizer: PreTrainedTokenizerBase, max_positions: int = 512) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=rung.hidden_size,
        num_hidden_layers=rung.num_layers,
        num_attention_heads=rung.num_heads,
        num_key_value_heads=rung.num_heads,
        intermediate_size=rung.intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def base_corpus_blocks(base: Domain, tokenizer: PreTrainedTokenizerBase, block_size: int) -> torch.Tensor:
    """The base domain's train split (documents and chats) packed into training blocks."""
    sequences = [encode_document(tokenizer, text) for text in base.train.documents]
    sequences += [encode_conversation(tokenizer, chat) for chat in base.train.conversations]
    return pack_blocks(sequences, block_size)


def pretrain(
    model: LlamaForCausalLM, blocks: torch.Tensor, tokens: int, recipe: PretrainRecipe, label: str
) -> list[float]:
    """Pretrain `model` on `blocks` for `tokens` tokens (AdamW, warm-up then cosine to 10%).

    Returns the loss of every step.
    """
    steps = max(1, math.ceil(tokens / (recipe.batch_size * recipe.block_size)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    losses = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"pretraining {label}", total=steps)
        for step in range(steps):
            warmup = min(1.0, (step + 1) / recipe.warmup_steps)
            cosine = 0.1 + 0.45 * (1 + math.cos(math.pi * step / steps))
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * warmup * cosine
            batch = batch_at(blocks, recipe.batch_size, step, recipe.seed)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            progress.update(task, advance=1, description=f"pretraining {label} loss {loss.item():.3f}")
    return losses


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())


def ladder_model_dir(
    name: str, base: Domain, tokenizer: PreTrainedTokenizerBase, world_id: str, tokens_per_param: float
) -> Path:
    """The cached pretrained rung `name` (a `save_pretrained` directory), built on first use."""
    rung = LADDER[name]
    recipe = PretrainRecipe()
    spec = {
        "rung": asdict(rung),
        "recipe": asdict(recipe),
        "world": world_id,
        "tokens_per_param": tokens_per_param,
        "version": PRETRAIN_VERSION,
    }

    def build(out: Path) -> None:
        torch.manual_seed(recipe.seed)
        model = LlamaForCausalLM(llama_config(rung, tokenizer))
        tokens = int(tokens_per_param * count_parameters(model))
        blocks = base_corpus_blocks(base, tokenizer, recipe.block_size)
        losses = pretrain(model, blocks, tokens, recipe, f"{name} ({count_parameters(model):,} params)")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "pretrain_losses.txt").write_text("\n".join(f"{loss:.5f}" for loss in losses))

    return cached_build("models", spec | {"name": name}, build)
