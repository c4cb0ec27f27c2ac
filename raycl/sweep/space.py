"""Search spaces: `search_spaces/NAME.yaml` read through typed models and checked before any work.

A space names its objectives, optional constraints, the searched parameters (dotted `TrialConfig`
keys such as `train.lr`, each with a distribution and an optional `when` condition), the fixed
settings every trial shares, the budget, the Optuna sampler and a seed. Every problem is a
`ConfigError` whose one-line message names the file and the key. This module imports neither Ray
nor MLflow nor Optuna, so a malformed space fails in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError

from raycl.config import ConfigError, TrialConfig, read_yaml
from raycl.schema import StrictModel

Scalar = bool | int | float | str
Direction = Literal["maximize", "minimize"]

# Scalar keys of `run_trial`'s result that a space may optimise or constrain
# (keep in step with raycl.training.trial.summarize and run_trial).
REPORTED_METRICS = (
    "learning",
    "forgetting",
    "bwt",
    "fwt",
    "average_final_loss",
    "drift_spread",
    "tokens_per_s",
    "eval_time_fraction",
    "peak_memory_bytes",
    "optimizer_state_bytes",
    "num_params",
    "wall_time_s",
    "replay_generation_fraction",
    "train_tokens",
    "new_tokens",
)
# Benchmark scores and retention deltas: bench_<task>, bench_<task>_delta (points), bench_max_drop.
BENCHMARK_PREFIX = "bench_"


def is_reported_metric(name: str) -> bool:
    """Whether a trial's final result carries `name` as a scalar metric the sweep records."""
    return name in REPORTED_METRICS or name.startswith(BENCHMARK_PREFIX)


def _benchmark_metric_known(name: str, base: TrialConfig) -> bool:
    """`bench_max_drop` or a score/delta of one of the trials' lm-eval tasks."""
    if name == BENCHMARK_PREFIX + "max_drop":
        return bool(base.eval.benchmarks.tasks)
    task = name.removeprefix(BENCHMARK_PREFIX).removesuffix("_delta")
    return any(task.startswith(configured) for configured in base.eval.benchmarks.tasks)
SAMPLER_OPTIONS = {"tpe": {"n_startup_trials"}, "gp": {"n_startup_trials"}, "nsga2": {"population_size"}, "random": set()}
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class Parameter(StrictModel):
    """One searched setting: a distribution over values of a `TrialConfig` key."""

    type: Literal["log_uniform", "uniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: int | None = Field(None, ge=1, description="int only: spacing of the values")
    log: bool = Field(False, description="int only: sample on a log scale")
    choices: list[Scalar] | None = None
    when: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="sample only when every named parameter took one of the listed values"
    )

    def values_to_check(self) -> dict[str, list[Scalar]]:
        """Field name -> the extreme values this parameter can produce."""
        if self.type == "categorical":
            return {"choices": list(self.choices or [])}
        cast = int if self.type == "int" else float
        return {"low": [cast(self.low)], "high": [cast(self.high)]}

    def suggest(self, trial: Any, name: str) -> Scalar:
        """Ask an Optuna trial (duck-typed, so this module needs no Optuna import) for a value."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.type == "log_uniform")


class Budget(StrictModel):
    """How many trials, how many at once, and what each trial's Ray Train worker group gets."""

    trials: int = Field(ge=1)
    concurrency: int = Field(1, ge=1, description="trials running at once (the plan may lower it to fit)")
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers (DDP ranks) per trial")
    cpus_per_worker: float = Field(1.0, gt=0, description="trimmed by the trial's 0.01-CPU coordinator share")
    gpus_per_worker: float = Field(0.0, ge=0)
    max_failures: int = Field(0, ge=0, description="restarts of a trial's worker group from its last stage checkpoint")


class SamplerSpec(StrictModel):
    """The Optuna sampler, always named: Optuna 5's multi-objective default changed from NSGA-II to TPE."""

    name: Literal["tpe", "nsga2", "gp", "random"]
    n_startup_trials: int | None = Field(None, ge=0, description="tpe, gp: random trials before modelling")
    population_size: int | None = Field(None, ge=2, description="nsga2: trials per generation")


class SearchSpace(StrictModel):
    """One sweep, as written in `search_spaces/NAME.yaml`."""

    description: str = ""
    objectives: dict[str, Direction] = Field(
        default_factory=lambda: {"learning": "maximize", "forgetting": "minimize"}, min_length=1
    )
    constraints: list[str] = Field(default_factory=list, description='e.g. "forgetting <= 0.05"')
    reference_point: dict[str, float] | None = Field(None, description="hypervolume reference; default: just past the worst trial")
    parameters: dict[str, Parameter] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict, description="TrialConfig sections every trial shares")
    budget: Budget
    sampler: SamplerSpec
    seed: int

    _name: str = PrivateAttr("")
    _source: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @property
    def source(self) -> str:
        return self._source

    @property
    def directions(self) -> list[Direction]:
        return list(self.objectives.values())

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(text) for text in self.constraints]

    def base_config(self) -> TrialConfig:
        return TrialConfig.model_validate(self.fixed)

    def fingerprint(self) -> str:
        """Hash of what defines the search (not the budget), so a resumed sweep can be checked against it."""
        defining = self.model_dump(mode="json", exclude={"budget", "description"})
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:12]

    def sample(self, trial: Any) -> dict[str, Scalar]:
        """Draw one set of parameters define-by-run, skipping those whose condition does not hold."""
        params: dict[str, Scalar] = {}
        for name, parameter in self.parameters.items():
            if all(_holds(params.get(key), allowed) for key, allowed in parameter.when.items()):
                params[name] = parameter.suggest(trial, name)
        return params

    def trial_config(self, params: dict[str, Scalar]) -> TrialConfig:
        return self.base_config().with_overrides(params)


@dataclass(frozen=True)
class Constraint:
    """`metric <= bound` or `metric >= bound`; Optuna's convention: a value <= 0 is feasible."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = _CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"{text!r} is not of the form 'metric <= number' or 'metric >= number'")
        return cls(match[1], match[2], float(match[3]))

    def value(self, metrics: dict[str, float]) -> float:
        violation = metrics[self.metric] - self.bound
        return violation if self.op == "<=" else -violation

    def satisfied(self, metrics: dict[str, float]) -> bool:
        compare = operator.le if self.op == "<=" else operator.ge
        return compare(metrics[self.metric], self.bound)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def _holds(value: Scalar | None, allowed: Scalar | list[Scalar]) -> bool:
    options = allowed if isinstance(allowed, list) else [allowed]
    return value is not None and value in options


def resolve_space_path(name_or_path: str | Path) -> Path:
    """`search_spaces/NAME.yaml` (in the working directory, else the repository's), or a file path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    for directory in (Path.cwd() / "search_spaces", SHIPPED_DIR):
        candidate = directory / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(path.stem for path in SHIPPED_DIR.glob("*.yaml")))
    raise ConfigError(f"{text}: no search space of that name in search_spaces/ (shipped: {known})")


def load_space(name_or_path: str | Path) -> SearchSpace:
    """The validated search space, or a one-line `ConfigError` naming the file and the key."""
    path = resolve_space_path(name_or_path)
    source = str(path)
    data = read_yaml(path)
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_one_line(error, source)) from None
    _check(space, source)
    space._name = path.stem
    space._source = source
    return space


def shipped_spaces() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.yaml"))


def validate_spaces(paths: Iterable[str | Path] | None = None) -> list[tuple[Path, str | None]]:
    """(path, error line or None) for each space; all shipped spaces when `paths` is None."""
    checked = []
    for path in shipped_spaces() if paths is None else [resolve_space_path(p) for p in paths]:
        try:
            load_space(path)
            checked.append((Path(path), None))
        except ConfigError as error:
            checked.append((Path(path), str(error)))
    return checked


def _one_line(error: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in (*prefix, *first["loc"])) or "(top level)"
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    return f"{source}: {key}: {message}"


def _check(space: SearchSpace, source: str) -> None:
    """Everything the models alone cannot see: keys, ranges, conditions, metrics, sampler options."""

    def fail(key: str, problem: str) -> None:
        raise ConfigError(f"{source}: {key}: {problem}")

    try:
        base = space.base_config()
    except ValidationError as error:
        raise ConfigError(_one_line(error, source, prefix=("fixed",))) from None

    def known(metric: str) -> bool:
        return metric in REPORTED_METRICS or (metric.startswith(BENCHMARK_PREFIX) and _benchmark_metric_known(metric, base))

    for metric in space.objectives:
        if not known(metric):
            fail(f"objectives.{metric}", f"not a metric trials report (choose from {', '.join(REPORTED_METRICS)}, "
                 "or bench_max_drop / bench_TASK / bench_TASK_delta for the trials' eval.benchmarks.tasks)")
    for index, text in enumerate(space.constraints):
        try:
            constraint = Constraint.parse(text)
        except ValueError as error:
            fail(f"constraints[{index}]", str(error))
        if not known(constraint.metric):
            fail(f"constraints[{index}]", f"{constraint.metric!r} is not a metric trials report")
    if space.reference_point is not None and set(space.reference_point) != set(space.objectives):
        fail("reference_point", f"needs exactly the objectives {', '.join(space.objectives)}")

    unused = set(space.sampler.model_fields_set) - {"name"} - SAMPLER_OPTIONS[space.sampler.name]
    for option in sorted(unused):
        fail(f"sampler.{option}", f"not an option of the {space.sampler.name} sampler")

    for name, parameter in space.parameters.items():
        _check_parameter(name, parameter, space, base, fail)


def _check_parameter(name: str, parameter: Parameter, space: SearchSpace, base: TrialConfig, fail: Any) -> None:
    key = f"parameters.{name}"
    field = _config_field(name)
    if field is None:
        fail(key, "not a trial config key (use section.field, e.g. train.lr)")
    section, leaf = name.split(".")
    if leaf in space.fixed.get(section, {}):
        fail(key, f"also set in fixed.{name}")

    numeric_only = {"low", "high"} if parameter.type != "categorical" else {"choices"}
    int_only = {"step", "log"} if parameter.type == "int" else set()
    for option in sorted(parameter.model_fields_set - {"type", "when"} - numeric_only - int_only):
        fail(f"{key}.{option}", f"not used by a {parameter.type} parameter")
    if parameter.type == "categorical":
        if not parameter.choices:
            fail(f"{key}.choices", "needs at least one value")
        if len(set(map(repr, parameter.choices))) != len(parameter.choices):
            fail(f"{key}.choices", "lists a value twice")
    else:
        for bound in ("low", "high"):
            if getattr(parameter, bound) is None:
                fail(f"{key}.{bound}", f"a {parameter.type} parameter needs one")
        if parameter.low >= parameter.high:
            fail(f"{key}.high", f"empty range: high ({parameter.high:g}) must be greater than low ({parameter.low:g})")
        if parameter.type == "log_uniform" and parameter.low <= 0:
            fail(f"{key}.low", "a log_uniform range must be positive")
        if parameter.type == "int":
            if not (float(parameter.low).is_integer() and float(parameter.high).is_integer()):
                fail(f"{key}.low", "an int parameter needs whole-number bounds")
            if parameter.log and parameter.low < 1:
                fail(f"{key}.low", "a log-scale int range must start at 1 or above")
        elif field.annotation is int:
            fail(f"{key}.type", f"{name} takes whole numbers: use type: int")

    for option, values in parameter.values_to_check().items():
        for value in values:
            try:
                base.with_overrides({name: value})
            except ConfigError as error:
                reason = str(error).removeprefix("overrides: ").removeprefix(f"{name}: ")
                fail(f"{key}.{option}", f"{value!r} is not a valid {name} ({reason})")

    searched_before = list(space.parameters)[: list(space.parameters).index(name)]
    for condition, allowed in parameter.when.items():
        if condition not in searched_before:
            fail(f"{key}.when.{condition}", "condition on a parameter that is not searched before this one")
        target = space.parameters[condition]
        for value in allowed if isinstance(allowed, list) else [allowed]:
            if target.type == "categorical" and value not in target.choices:
                fail(f"{key}.when.{condition}", f"{value!r} is not among its choices {target.choices}")


def _config_field(dotted: str) -> Any:
    """The pydantic field behind `section.field` of `TrialConfig`, or None."""
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in TrialConfig.model_fields:
        return None
    section = TrialConfig.model_fields[parts[0]].annotation
    return section.model_fields.get(parts[1])
