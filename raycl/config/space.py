"""Search spaces: `search_spaces/NAME.yaml` read through typed models and checked before any work.

A space names its objectives, optional constraints, the searched parameters (dotted `TrialConfig`
keys such as `train.lr`, each with a distribution and an optional `when` condition), the fixed
settings every trial shares, the budget, the Optuna sampler and a seed. Every problem is a
`ConfigError` whose one-line message names the file and the key. Pydantic only: a malformed space
fails in well under a second, before Ray, MLflow or Optuna are imported.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Discriminator, Field, PrivateAttr, Tag, field_validator, model_serializer, model_validator

from raycl.config.base import ConfigError, StrictModel, apply_overrides, did_you_mean, read_yaml, validate
from raycl.config.records import Scalar
from raycl.config.result import BENCHMARK_PREFIX, MEASURED_AT_STAGE_ENDS, REPORTED_METRICS
from raycl.config.trial import TrialConfig, config_field, config_keys, validate_config

Direction = Literal["maximize", "minimize"]
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class _Parameter(StrictModel):
    when: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="sample only when every named parameter took one of the listed values"
    )

    @property
    def log_scale(self) -> bool:
        """Whether values are drawn on a log scale (and are best plotted on one)."""
        return False


class _Range(_Parameter):
    low: float
    high: float

    def extremes(self) -> dict[str, list[Scalar]]:
        """Option name -> the extreme values this parameter can produce (each must be a valid config value)."""
        return {"low": [self.low], "high": [self.high]}

    @model_validator(mode="after")
    def _nonempty(self) -> _Range:
        if self.low >= self.high:
            raise ValueError(f"high: empty range: high ({self.high:g}) must be greater than low ({self.low:g})")
        return self


class Uniform(_Range):
    type: Literal["uniform"]

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)


class LogUniform(_Range):
    type: Literal["log_uniform"]

    @property
    def log_scale(self) -> bool:
        return True

    @field_validator("low")
    @classmethod
    def _positive(cls, low: float) -> float:
        if low <= 0:
            raise ValueError("a log_uniform range must be positive")
        return low

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)


class IntRange(_Range):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1, description="spacing of the values")
    log: bool = Field(default=False, description="sample on a log scale")

    @property
    def log_scale(self) -> bool:
        return self.log

    @model_validator(mode="after")
    def _log_from_one(self) -> IntRange:
        if self.log and self.low < 1:
            raise ValueError("low: a log-scale int range must start at 1 or above")
        return self

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class Categorical(_Parameter):
    type: Literal["categorical"]
    choices: list[Scalar]

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Scalar]) -> list[Scalar]:
        if not choices:
            raise ValueError("needs at least one value")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError("lists a value twice")
        return choices

    def extremes(self) -> dict[str, list[Scalar]]:
        return {"choices": list(self.choices)}

    def suggest(self, trial: Any, name: str) -> Scalar:
        return trial.suggest_categorical(name, self.choices)


def _parameter_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else value.type
    return f"parameter:type={kind}"


# One searched setting: a distribution over values of a `TrialConfig` key, by `type`.
Parameter = Annotated[
    Annotated[LogUniform, Tag("parameter:type=log_uniform")]
    | Annotated[Uniform, Tag("parameter:type=uniform")]
    | Annotated[IntRange, Tag("parameter:type=int")]
    | Annotated[Categorical, Tag("parameter:type=categorical")],
    Discriminator(_parameter_type),
]


class Constraint(StrictModel):
    """`metric <= bound` or `metric >= bound`, written as that text; Optuna's convention: a value <= 0 is feasible."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        match = _CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"{text!r} is not of the form 'metric <= number' or 'metric >= number'")
        return {"metric": match[1], "op": match[2], "bound": float(match[3])}

    @model_serializer
    def _as_text(self) -> str:
        return str(self)

    def value(self, metrics: dict[str, float]) -> float:
        violation = metrics[self.metric] - self.bound
        return violation if self.op == "<=" else -violation

    def satisfied(self, metrics: Mapping[str, float]) -> bool:
        compare = operator.le if self.op == "<=" else operator.ge
        return compare(metrics[self.metric], self.bound)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


class Budget(StrictModel):
    """How many trials, how many at once, and what each trial's Ray Train worker group gets."""

    trials: int = Field(ge=1)
    concurrency: int = Field(default=1, ge=1, description="trials running at once (the plan may lower it to fit)")
    workers_per_trial: int = Field(default=1, ge=1, description="Ray Train workers (DDP ranks) per trial")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="trimmed by the trial's 0.01-CPU coordinator share")
    gpus_per_worker: float = Field(default=0.0, ge=0)
    max_failures: int = Field(default=0, ge=0, description="restarts of a failed trial from its last stage checkpoint")
    seeds: int = Field(
        default=1,
        ge=1,
        le=16,
        description="runs of each sampled configuration, with train.seed, train.seed + 1, ... (data order, replay "
        "draws); Optuna and the report see the mean, the report an interval over them",
    )
    executor: Literal["auto", "train", "tune"] = Field(
        default="auto",
        description="train: a Ray Train worker group per trial; tune: the trial runs in its Tune actor (one process, "
        "seconds cheaper); auto: tune for single-worker CPU trials, train otherwise",
    )

    @model_validator(mode="after")
    def _one_process_in_an_actor(self) -> Budget:
        if self.executor == "tune" and self.workers_per_trial > 1:
            raise ValueError("executor: tune runs a trial in one process; workers_per_trial > 1 needs executor train")
        return self

    def resolved_executor(self) -> tuple[Literal["train", "tune"], str]:
        """The executor that runs each trial, and why."""
        if self.executor != "auto":
            return self.executor, "set in budget.executor"
        if self.workers_per_trial > 1 or self.gpus_per_worker > 0:
            return (
                "train",
                "auto: several workers or a GPU per trial, where Ray "
                "Train's worker group, fault tolerance and DDP pay off",
            )
        return "tune", "auto: one CPU worker per trial, which trains in its Tune actor (no worker group to start)"


SAMPLER_OPTIONS = {
    "tpe": {"n_startup_trials"},
    "gp": {"n_startup_trials"},
    "nsga2": {"population_size"},
    "random": set(),
}


class SamplerSpec(StrictModel):
    """The Optuna sampler, always named: Optuna 5's multi-objective default changed from NSGA-II to TPE."""

    name: Literal["tpe", "nsga2", "gp", "random"]
    n_startup_trials: int | None = Field(default=None, ge=0, description="tpe, gp: random trials before modelling")
    population_size: int | None = Field(default=None, ge=2, description="nsga2: trials per generation")

    @model_validator(mode="after")
    def _options_of_this_sampler(self) -> SamplerSpec:
        for option in sorted(self.model_fields_set - {"name"} - SAMPLER_OPTIONS[self.name]):
            raise ValueError(f"{option}: not an option of the {self.name} sampler")
        return self


class EarlyStopping(StrictModel):
    """Stop trials at stage ends: at each rung keep the top 1/reduction by NSGA-II rank of the objectives so far."""

    # [1] by default: measured on the offline world (bench/early_stopping.py), each objective's rank after stage 1
    # already follows its final rank, and every later rung cuts trials of a near-front field, losing hypervolume.
    rungs: Literal["stages"] | list[Annotated[int, Field(ge=1)]] = Field(
        default=[1],
        description="the stage ends to rank at; `stages`: every stage end but the last (from first_rung on)",
    )
    reduction: float = Field(default=3.0, gt=1, description="eta: 1/reduction of the trials at a rung continue")
    first_rung: int = Field(
        default=1,
        ge=1,
        description="the first stage end that is a rung (ASHA's grace period): earlier ones never stop a trial",
    )

    @model_validator(mode="after")
    def _one_way_to_name_rungs(self) -> EarlyStopping:
        if isinstance(self.rungs, list):
            if not self.rungs or self.rungs != sorted(set(self.rungs)):
                raise ValueError(f"rungs: {self.rungs} must list stage ends in increasing order, each once")
            if "first_rung" in self.model_fields_set:
                raise ValueError("first_rung: only with rungs: stages (a list of rungs names its first)")
        return self

    def is_rung(self, stage: int, num_stages: int) -> bool:
        """Whether the end of `stage` (1-based) of a `num_stages`-stage stream ranks the trials there."""
        if stage >= num_stages:
            return False  # the last stage end: nothing left to save
        return stage >= self.first_rung if self.rungs == "stages" else stage in self.rungs


# The objectives every stage end reports: what it measures that a trial's summary reports too.
STAGE_METRICS = tuple(name for name in MEASURED_AT_STAGE_ENDS if name in REPORTED_METRICS)


class SearchSpace(StrictModel):
    """One sweep, as written in `search_spaces/NAME.yaml`."""

    description: str = ""
    objectives: dict[str, Direction] = Field(
        default_factory=lambda: {"learning": "maximize", "forgetting": "minimize"}, min_length=1
    )
    constraints: list[Constraint] = Field(default_factory=list, description='e.g. "forgetting <= 0.05"')
    reference_point: dict[str, float] | None = Field(
        default=None, description="hypervolume reference; default: just past the worst trial"
    )
    parameters: dict[str, Parameter] = Field(min_length=1)
    fixed: TrialConfig = Field(default=TrialConfig(), description="TrialConfig sections every trial shares")
    budget: Budget
    sampler: SamplerSpec
    seed: int
    early_stopping: EarlyStopping | None = Field(
        default=None, description="stop trials at stage ends (e.g. {rungs: [1], reduction: 3})"
    )

    _name: str = PrivateAttr("")
    _source: str = PrivateAttr("")
    _text: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @property
    def source(self) -> str:
        return self._source

    @property
    def text(self) -> str:
        """The YAML the space was read from, command-line overrides applied."""
        return self._text

    @property
    def directions(self) -> list[Direction]:
        return list(self.objectives.values())

    def fixes(self, dotted: str) -> bool:
        """Whether `fixed` sets the dotted key itself."""
        node: Any = self.fixed
        for part in dotted.split("."):
            if node is None or part not in node.model_fields_set:
                return False
            node = getattr(node, part)
        return True

    def fingerprint(self) -> str:
        """Hash of what defines the search (not the budget, but its seeds: a mean over other seeds is another
        measurement), so a resumed sweep can be checked against it."""
        # early_stopping, like the budget, changes what a sweep spends, not what it searches.
        defining = self.model_dump(mode="json", exclude={"budget", "description", "early_stopping"})
        if self.budget.seeds != 1:
            defining["seeds"] = self.budget.seeds
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:12]

    def sample(self, trial: Any) -> dict[str, Scalar]:
        """Draw one set of parameters define-by-run, skipping those whose condition does not hold."""
        params: dict[str, Scalar] = {}
        for name, parameter in self.parameters.items():
            if all(_holds(params.get(key), allowed) for key, allowed in parameter.when.items()):
                params[name] = parameter.suggest(trial, name)
        return params

    def possible_configs(self, prefixes: tuple[str, ...]) -> list[TrialConfig]:
        """Every trial config the categorical parameters named under `prefixes` can give, the others left as
        `fixed` has them (for building what trials will need before they start)."""
        choices = {
            name: parameter.choices
            for name, parameter in self.parameters.items()
            if isinstance(parameter, Categorical) and name.startswith(prefixes)
        }
        return [self.trial_config(dict(zip(choices, values))) for values in itertools.product(*choices.values())]

    def trial_config(self, params: dict[str, Scalar]) -> TrialConfig:
        return self.fixed.with_overrides(params)

    @model_validator(mode="after")
    def _metrics_are_reported(self) -> SearchSpace:
        for metric in self.objectives:
            if not self._reports(metric):
                raise ValueError(
                    f"objectives.{metric}: not a metric trials report (choose from {', '.join(REPORTED_METRICS)}, "
                    "or bench_max_drop / bench_TASK / bench_TASK_delta for the trials' eval.benchmarks.tasks)"
                )
        for index, constraint in enumerate(self.constraints):
            if not self._reports(constraint.metric):
                raise ValueError(f"constraints[{index}]: {constraint.metric!r} is not a metric trials report")
        if self.reference_point is not None and set(self.reference_point) != set(self.objectives):
            raise ValueError(f"reference_point: needs exactly the objectives {', '.join(self.objectives)}")
        return self

    @model_validator(mode="after")
    def _parameters_fit_the_config(self) -> SearchSpace:
        names = list(self.parameters)
        for index, (name, parameter) in enumerate(self.parameters.items()):
            key = f"parameters.{name}"
            field = config_field(name)
            if field is None:
                suggestion = did_you_mean(name, config_keys())
                raise ValueError(f"{key}: not a trial config key (use section.field, e.g. train.lr){suggestion}")
            if self.fixes(name):
                raise ValueError(f"{key}: also set in fixed.{name}")
            if parameter.type in ("uniform", "log_uniform") and field.annotation is int:
                raise ValueError(f"{key}.type: {name} takes whole numbers: use type: int")
            for condition, allowed in parameter.when.items():
                if condition not in names[:index]:
                    suggestion = did_you_mean(condition, names[:index])
                    raise ValueError(
                        f"{key}.when.{condition}: condition on a parameter that is not searched before this one"
                        + suggestion
                    )
                target = self.parameters[condition]
                for value in allowed if isinstance(allowed, list) else [allowed]:
                    if target.type == "categorical" and value not in target.choices:
                        raise ValueError(
                            f"{key}.when.{condition}: {value!r} is not among its choices {target.choices}"
                            f"{did_you_mean(value, target.choices)}"
                        )
            # Each extreme value is tried where the parameter is sampled: under its conditions.
            context = {
                condition: allowed[0] if isinstance(allowed, list) else allowed
                for condition, allowed in parameter.when.items()
            }
            for option, values in parameter.extremes().items():
                for value in values:
                    try:
                        self.fixed.with_overrides(context | {name: value})
                    except ConfigError as error:
                        reason = str(error).removeprefix("overrides: ").removeprefix(f"{name}: ")
                        raise ValueError(f"{key}.{option}: {value!r} is not a valid {name} ({reason})") from None
        return self

    @model_validator(mode="after")
    def _stages_to_stop_at(self) -> SearchSpace:
        if self.early_stopping is None:
            return self
        if self.fixed.stream is not None:
            raise ValueError(
                "early_stopping: needs the offline world's stages; a "
                "real stream's stage count is known only once loaded"
            )
        if self.budget.seeds != 1:
            # A trial's seeds run in turn, so its stage reports would reach the rungs once per seed.
            raise ValueError(
                f"early_stopping: ranks one run per trial at each stage end; budget.seeds is {self.budget.seeds}"
            )
        rungs, num_stages = self.early_stopping.rungs, self.fixed.world.num_stages
        if "world.num_stages" not in self.parameters:
            if rungs == "stages" and self.early_stopping.first_rung >= num_stages:
                raise ValueError(
                    f"early_stopping.first_rung: {self.early_stopping.first_rung} leaves no rung before the last of "
                    f"{num_stages} stages"
                )
            if rungs != "stages" and rungs[-1] >= num_stages:
                raise ValueError(
                    f"early_stopping.rungs: stage end {rungs[-1]} is not before the last of {num_stages} stages"
                )
        for metric in self.objectives:
            if metric not in STAGE_METRICS:
                raise ValueError(
                    f"early_stopping: objective {metric} is not reported "
                    f"at stage ends (only {', '.join(STAGE_METRICS)} are)"
                )
        return self

    def _reports(self, metric: str) -> bool:
        """A metric of every trial's result: a reported field, or a score of one of the trials' lm-eval tasks."""
        if metric in REPORTED_METRICS:
            return True
        tasks = self.fixed.eval.benchmarks.tasks
        if metric == BENCHMARK_PREFIX + "max_drop":
            return bool(tasks)
        task = metric.removeprefix(BENCHMARK_PREFIX).removesuffix("_delta")
        return metric.startswith(BENCHMARK_PREFIX) and any(task.startswith(configured) for configured in tasks)


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
    known = sorted(path.stem for path in SHIPPED_DIR.glob("*.yaml"))
    suggestion = did_you_mean(text, known)
    raise ConfigError(
        f"{text}: no search space of that name in search_spaces/{suggestion} (shipped: {', '.join(known)})"
    )


def load_space(name_or_path: str | Path, overrides: Iterable[str] = (), name: str | None = None) -> SearchSpace:
    """The validated search space, or a one-line `ConfigError` naming the file and the key.

    overrides: `key=value` items (`budget.trials=2`, `fixed.train.lr=0.01`) applied to the file's YAML before it
    is validated; name: the sweep's name (its folder, study and experiment), default the file's stem.
    """
    path = resolve_space_path(name_or_path)
    overrides = list(overrides)
    data = apply_overrides(read_yaml(path), overrides, str(path))
    space = validate(SearchSpace, data, f"{path} (with {' '.join(overrides)})" if overrides else str(path))
    space._name = name or path.stem
    space._source = str(path)
    space._text = yaml.safe_dump(data, sort_keys=False) if overrides else path.read_text()
    return space


def shipped_spaces() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.yaml"))


def load_space_or_config(
    name_or_path: str | Path, overrides: Iterable[str] = ()
) -> tuple[Path, SearchSpace | TrialConfig]:
    """The file and the search space or trial config it holds (a space has keys a trial config lacks), with
    `key=value` overrides, validated; a `ConfigError` naming the file and the key of each problem otherwise."""
    path = resolve_space_path(name_or_path)  # a space's name, or any file's path as it is
    data = read_yaml(path)
    if set(data) & (set(SearchSpace.model_fields) - set(TrialConfig.model_fields)):
        return path, load_space(path, overrides)
    overrides = list(overrides)
    source = f"{path} (with {' '.join(overrides)})" if overrides else str(path)
    return path, validate_config(apply_overrides(data, overrides, str(path)), source=source)
