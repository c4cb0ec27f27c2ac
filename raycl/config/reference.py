"""The key reference of search spaces and trial configs, generated from the config models (`raycl config reference`).

docs/reference.md is this text; a unit test keeps it in step with the models.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from raycl.config.benchmarks import BenchmarkConfig, TaskFile
from raycl.config.space import (
    Budget,
    Categorical,
    EarlyStopping,
    IntRange,
    LogUniform,
    SamplerSpec,
    SearchSpace,
    Uniform,
)
from raycl.config.stream import StreamConfig
from raycl.config.trial import (
    EvalConfig,
    EWCConfig,
    FullMethod,
    GaLoreMethod,
    LoraMethod,
    ModelConfig,
    ReplayConfig,
    StopRule,
    TrainConfig,
    TrialConfig,
    WorldConfig,
)

INTRO = """# Configuration reference

Generated from the config models by `raycl config reference > docs/reference.md`; every key below is checked
when a file is read (`raycl validate`), and an unknown one is an error that names the key meant.

A **trial config** (`raycl run TRIAL.yaml`) has the sections of `TrialConfig`. A **search space**
(`search_spaces/NAME.yaml`, `raycl sweep NAME`) names the objectives, the searched `parameters` (dotted trial
keys such as `train.lr`), the `fixed` trial settings every trial shares, the budget, the sampler and a seed.
`raycl config show [SPACE|TRIAL]` prints one with every default filled in; on the command line, `KEY=VALUE`
overrides any key (`raycl sweep smoke budget.trials=2`, `raycl run method.name=lora`).
"""

# (heading, model, the key prefix its fields are written under)
SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("Search space", SearchSpace, ""),
    ("Search space: a parameter of type log_uniform", LogUniform, "parameters.KEY."),
    ("Search space: a parameter of type uniform", Uniform, "parameters.KEY."),
    ("Search space: a parameter of type int", IntRange, "parameters.KEY."),
    ("Search space: a parameter of type categorical", Categorical, "parameters.KEY."),
    ("Search space: budget", Budget, "budget."),
    ("Search space: sampler", SamplerSpec, "sampler."),
    ("Search space: early_stopping", EarlyStopping, "early_stopping."),
    ("Trial config", TrialConfig, ""),
    ("Trial config: world", WorldConfig, "world."),
    ("Trial config: model", ModelConfig, "model."),
    ("Trial config: method (name: full)", FullMethod, "method."),
    ("Trial config: method (name: lora)", LoraMethod, "method."),
    ("Trial config: method (name: galore)", GaLoreMethod, "method."),
    ("Trial config: train", TrainConfig, "train."),
    ("Trial config: train.stop_when", StopRule, "train.stop_when."),
    ("Trial config: replay", ReplayConfig, "replay."),
    ("Trial config: ewc", EWCConfig, "ewc."),
    ("Trial config: eval", EvalConfig, "eval."),
    ("Trial config: eval.benchmarks", BenchmarkConfig, "eval.benchmarks."),
    ("Trial config: eval.benchmarks.task_paths.TASK", TaskFile, "eval.benchmarks.task_paths.TASK."),
    ("Trial config: stream (a real dataset as the new data)", StreamConfig, "stream."),
]


def type_name(annotation: Any) -> str:
    """A field's type in words a YAML author reads: `int`, `float or null`, `one of full, lora`."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(annotation)))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in get_args(annotation))
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if get_args(annotation):  # Annotated and other wrappers
        return type_name(get_args(annotation)[0])
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return f"`{text}`" if text not in ("", "''") else "`''`"


def section(heading: str, model: type[BaseModel], prefix: str) -> str:
    summary = (model.__dict__.get("__doc__") or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [
        f"## {heading}",
        "",
        *([summary, ""] if summary else []),
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{prefix}{name}` | {type_name(field.annotation)} | {default_text(field)} | {description} |")
    return "\n".join(lines) + "\n"


def reference() -> str:
    """The whole reference, as Markdown."""
    return "\n".join([INTRO, *(section(heading, model, prefix) for heading, model, prefix in SECTIONS)])
