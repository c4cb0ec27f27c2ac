"""Building (once) and loading the offline world a config describes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from raycl.artifacts.cache import cached_build
from raycl.config import WorldConfig
from raycl.world.corpus import WorldText, generate_world_text
from raycl.world.tokenizer import train_tokenizer

# Bump when the generator or the tokenizer recipe changes: old caches then rebuild.
WORLD_VERSION = 5


@dataclass(frozen=True)
class World:
    config: WorldConfig
    text: WorldText
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerFast:
        return AutoTokenizer.from_pretrained(self.path / "tokenizer")


def tokenizer_corpus(text: WorldText) -> list[str]:
    """The base domain's train text: like a real base model's, the tokenizer never saw the new data."""
    base = text.base.train
    return [*base.documents, *(message["content"] for chat in base.conversations for message in chat)]


def load_world(config: WorldConfig) -> World:
    """The world of `config`: text regenerated from its seed, tokenizer from the cache."""
    text = generate_world_text(
        seed=config.seed,
        num_stages=config.num_stages,
        base_entities=config.base_entities,
        stage_entities=config.stage_entities,
        familiar_entities=config.familiar_entities,
    )

    def build(out: Path) -> None:
        train_tokenizer(tokenizer_corpus(text), config.vocab_size, out / "tokenizer")

    path = cached_build("worlds", base_side(config) | {"version": WORLD_VERSION}, build)
    return World(config=config, text=text, path=path)


def base_side(config: WorldConfig) -> dict[str, int]:
    """What shapes a world's base side (its text and tokenizer, so the rungs pretrained on it): it keys the cache,
    so that base models are shared by every stream length and, without familiar domains, every stage size."""
    side = {"seed": config.seed, "base_entities": config.base_entities, "vocab_size": config.vocab_size}
    if config.familiar_entities:  # only then, so the keys of worlds without familiar domains stay as they were
        # (familiar names follow every stage's, so the base text depends on stage_entities too)
        side |= {"familiar_entities": config.familiar_entities, "stage_entities": config.stage_entities}
    return side
