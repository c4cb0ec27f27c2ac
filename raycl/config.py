"""Typed configuration of one continual-learning trial: the single source of truth.

YAML files are read through these models; unknown keys and impossible values are errors that name the
file and the key (`ConfigError`), raised before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from raycl.data.stream_config import StreamConfig
from raycl.evaluation.harness import BenchmarkConfig, is_world_stage_task
from raycl.schema import StrictModel


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the file and the key."""


class WorldConfig(StrictModel):
    """The embedded offline world: a base corpus and new-data stages, generated from a seed."""

    seed: int = 0
    num_stages: int = Field(3, ge=1, le=5, description="new-data stages in the stream")
    base_entities: int = Field(120, ge=8, description="entities the base corpus teaches")
    stage_entities: int = Field(24, ge=4, description="new entities each stage teaches")
    vocab_size: int = Field(512, ge=300, le=65536, description="size of the locally trained BPE")


class ModelConfig(StrictModel):
    """The base model: an offline-ladder name (`raycl-tiny-s`), a local directory, or a hub id."""

    name: str = "raycl-tiny-s"
    pretrain_tokens_per_param: float = Field(
        20.0, gt=0, description="pretraining budget of offline-ladder models (Chinchilla's 20 by default)"
    )
    trust_remote_code: bool = False


class MethodConfig(StrictModel):
    """How the trial updates the model: full fine-tuning (AdamW), LoRA adapters, or GaLore."""

    name: Literal["full", "lora", "galore"] = "full"
    lora_rank: int = Field(8, ge=1, description="higher rank: more trainable parameters and state")
    lora_alpha: float = Field(16.0, gt=0)
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    galore_rank: int = Field(8, ge=1, description="rank of the gradient projection; at or above a matrix side saves nothing")
    galore_update_proj_gap: int = Field(50, ge=1, description="steps between SVD refreshes of the projection")
    galore_scale: float = Field(0.25, gt=0)
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    galore_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(StrictModel):
    """The optimisation of each stage."""

    lr: float = Field(3e-4, gt=0, lt=1)
    steps_per_stage: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    seq_len: int = Field(128, ge=16)
    warmup_steps: int = Field(5, ge=0, description="linear warm-up at the start of the stream")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = Field(
        1, ge=1, description="torch threads on CPU; tiny models run fastest on one, and more than the cores slows every trial"
    )


class ReplayConfig(StrictModel):
    """Replay of old data mixed into every training batch, and how it enters the loss."""

    ratio: float = Field(0.0, ge=0, lt=1, description="fraction of each batch drawn from replay; 0 is plain fine-tuning")
    source: Literal["base", "self_generated"] = Field(
        "base", description="base: the base corpus (disjoint from the retention probe); self_generated: samples of the frozen base model"
    )
    loss: Literal["ntp", "kl"] = Field("ntp", description="next-token loss on replay rows, or KL(p_base || p_current) on them")
    kl_weight: float = Field(1.0, ge=0, description="lambda of the KL penalty when loss is kl")
    buffer_size: int | None = Field(None, ge=1, description="replay blocks kept; None keeps the whole source")
    selection: Literal["random", "reservoir", "hardest", "easiest"] = Field(
        "random", description="which blocks a finite buffer keeps; hardest/easiest rank by the base model's loss"
    )
    regenerate_every: int = Field(60, ge=1, description="self_generated: steps between fresh chunks of samples")
    generated_per_chunk: int = Field(32, ge=1, description="self_generated: sequences sampled per chunk")


class EWCConfig(StrictModel):
    """Elastic weight consolidation: a diagonal-Fisher penalty anchoring weights important to the base corpus."""

    weight: float = Field(0.0, ge=0, description="lambda; 0 turns EWC off")
    fisher_batches: int = Field(16, ge=1, description="base-corpus batches for the Fisher estimate")


class EvalConfig(StrictModel):
    """When and how much the trial evaluates."""

    every_steps: int = Field(0, ge=0, description="quick held-out loss check every K steps; 0: stage ends only")
    quick_max_examples: int = Field(64, ge=1, description="examples per split in a quick check")
    batch_size: int = Field(32, ge=1)
    benchmarks: BenchmarkConfig = Field(
        BenchmarkConfig(), description="lm-eval tasks at step 0 and every stage end (world probes by default)"
    )


class TrialConfig(StrictModel):
    """Everything that defines one continual-learning trial."""

    world: WorldConfig = WorldConfig()
    stream: StreamConfig | None = Field(None, description="a real dataset as the new data; None: the offline world's stages")
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()
    replay: ReplayConfig = ReplayConfig()
    ewc: EWCConfig = EWCConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check_combinations(self) -> TrialConfig:
        # A real dataset's stage count is known only once it is loaded.
        if self.stream is None and self.train.warmup_steps > self.train.steps_per_stage * self.world.num_stages:
            raise ValueError("train.warmup_steps: longer than the whole stream")
        if self.stream is not None and any(is_world_stage_task(t) for t in self.eval.benchmarks.tasks):
            raise ValueError(
                "eval.benchmarks.tasks: the raycl_acquisition probes ask about the offline world's stages, "
                "and a stream: trial trains on other data; list the tasks it should run"
            )
        replay_rows = round(self.replay.ratio * self.train.batch_size)
        if self.replay.ratio > 0 and not 0 < replay_rows < self.train.batch_size:
            raise ValueError(
                f"replay.ratio: {self.replay.ratio} of a batch of {self.train.batch_size} rows is {replay_rows} replay rows; "
                "need at least one replay row and one new row"
            )
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> TrialConfig:
        """A copy with dotted keys replaced, e.g. {"train.lr": 1e-3, "method.name": "lora"}."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"{dotted}: no such config section {key!r}")
                node = node[key]
            if leaf not in node:
                raise ConfigError(f"{dotted}: no such config key")
            node[leaf] = value
        return validate_config(data, source="overrides")


def format_validation_error(error: ValidationError, source: str) -> str:
    """The first problem of a pydantic error as `source: dotted.key: message`."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    # Cross-field checks have no location of their own and name their keys in the message.
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"


def validate_config(data: dict[str, Any], source: str) -> TrialConfig:
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`, or a `ConfigError` naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    return data


def load_config(path: Path | None) -> TrialConfig:
    """The trial config in `path`, or the default offline-world trial when `path` is None."""
    if path is None:
        return TrialConfig()
    return validate_config(read_yaml(path), source=str(path))
