"""Base models by name: offline-ladder rungs, local `save_pretrained` directories, or hub ids."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from raycl.config import ModelConfig
from raycl.models import hub
from raycl.world.ladder import LADDER, ladder_model_dir
from raycl.world.offline import World
from raycl.world.tokenizer import CHAT_TEMPLATE


def load_base_model(config: ModelConfig, world: World) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model and its tokenizer; a ladder rung is pretrained on `world` on first use."""
    if config.name in LADDER:
        path: Path | str = ladder_model_dir(
            config.name, world.text.base, world.tokenizer, world.id, config.pretrain_tokens_per_param
        )
    else:
        path = config.name
    model = hub.load_model(str(path), trust_remote_code=config.trust_remote_code)
    tokenizer = hub.load_tokenizer(str(path), trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return model, tokenizer
