"""Base models by name: offline-ladder rungs, packaged real models and `.gguf` files, local `save_pretrained`
directories, or hub ids."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from raycl.artifacts import hub
from raycl.artifacts.real_models import is_real_model, real_model_dir
from raycl.config import ModelConfig
from raycl.models.ladder import LADDER, ladder_model_dir, pretrain_record
from raycl.world.offline import World
from raycl.world.tokenizer import CHAT_TEMPLATE


def base_model_path(config: ModelConfig, world: World) -> Path | str:
    """Where the base model comes from: a ladder rung's cached directory (pretrained on `world` on
    first use), a real model's converted directory (`raycl.artifacts.real_models`), else the name as given
    (a local directory or a hub id)."""
    if config.name in LADDER:
        return ladder_model_dir(
            config.name, world.text.base, world.tokenizer, world.id, config.pretrain_tokens_per_param
        )
    if is_real_model(config.name):
        return real_model_dir(config.name)
    return config.name


def pretraining_facts(config: ModelConfig, world: World) -> dict[str, float]:
    """What pretraining a ladder rung took and reached (tokens, final train loss); {} for other models."""
    if config.name not in LADDER:
        return {}
    record = pretrain_record(Path(base_model_path(config, world)))
    return {
        "base_pretrain_tokens": float(record["pretrain_tokens"]),
        "base_pretrain_loss": float(record["final_train_loss"]),
    }


def load_base_model(config: ModelConfig, world: World) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model and its tokenizer; a ladder rung is pretrained on `world` on first use."""
    path = base_model_path(config, world)
    model = hub.load_model(str(path), trust_remote_code=config.trust_remote_code)
    tokenizer = hub.load_tokenizer(str(path), trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return model, tokenizer
