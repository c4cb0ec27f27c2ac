"""Records a sweep passes between Optuna, Tune, Train and MLflow, and the names it files them under."""

from __future__ import annotations

from statistics import mean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raycl.config.base import StrictModel
from raycl.config.result import Divergence, TrialDiverged, TrialResult, TrialSummary
from raycl.config.trial import TrialConfig

Scalar = bool | int | float | str

# Marks the one Tune result of a trial that carries its final summary.
FINAL_KEY = "raycl_final"
# The Ray node a rank-0 evaluation report came from.
NODE_KEY = "raycl_node_id"
# Optuna user attr of a trial run under several seeds (`budget.seeds`): each run's objectives.
REPLICATES_ATTR = "replicates"


def trial_key(number: int) -> str:
    """The stable name of Optuna trial `number` everywhere: out dir, Train run, MLflow tag."""
    return f"t{number:04d}"


class TrialAssignment(StrictModel):
    """What Optuna hands to Tune for one trial: which trial it is, what was sampled, the config it runs.

    Travels as Tune's trial config (`model_dump(mode="json")`) and is read back with `model_validate`.
    """

    number: int
    key: str
    params: dict[str, Scalar]
    trial_config: TrialConfig

    @classmethod
    def create(cls, number: int, params: dict[str, Scalar], trial_config: TrialConfig) -> TrialAssignment:
        return cls(number=number, key=trial_key(number), params=params, trial_config=trial_config)


class GpuSlot(StrictModel):
    """A GPU one of a trial's workers held: its Ray node, its index there (Ray's GPU id, what the worker's
    CUDA_VISIBLE_DEVICES names), and when the worker ran on it (Unix times)."""

    node_id: str
    gpu: str
    since: float
    until: float

    def __str__(self) -> str:
        return f"{self.node_id}:{self.gpu}"


class FinalReport(TrialSummary):
    """A finished trial's last Tune result: its summary, and the Ray nodes its workers ran on.

    A trial run under several seeds (`budget.seeds`) reports the mean of its runs, and under
    `replicates` each run's metrics, from which the report draws intervals.
    """

    node_ids: list[str]
    replicates: list[dict[str, float]] = Field(
        default_factory=list, description="each seed's metrics; empty for one seed"
    )
    gpus: list[GpuSlot] = Field(default_factory=list, description="the GPUs its workers held; empty without GPUs")
    device: str | None = Field(default=None, description="the torch device type it trained on (cuda, cpu)")

    def to_tune(self) -> dict[str, Any]:
        return self.model_dump() | {FINAL_KEY: 1.0}

    @classmethod
    def mean_of(cls, reports: list[FinalReport]) -> FinalReport:
        """The seeds of one configuration as one trial: every metric and stage record averaged over them."""
        runs = [report.metrics() for report in reports]
        names = [name for name in runs[0] if all(name in run for run in runs)]
        averaged = {name: mean(run[name] for run in runs) for name in names}
        record = {
            name: _mean_elementwise([getattr(report, name) for report in reports])
            for name in ("stage_matrix", "retention_losses", "stage_forgetting")
        }
        nodes = sorted({node for report in reports for node in report.node_ids})
        gpus = [slot for report in reports for slot in report.gpus]
        return cls.model_validate(
            {"stage_names": reports[0].stage_names, **record, **averaged, "node_ids": nodes, "replicates": runs}
            | {"gpus": gpus, "device": reports[0].device}
        )


class EngineRun(BaseModel):
    """What one run of the engine hands back to its Tune trial (from the trial's own actor, or from Ray Train's
    rank 0): its result, or the divergence that stopped it, and the Ray nodes its ranks ran on."""

    model_config = ConfigDict(frozen=True)

    result: TrialResult | Divergence
    node_ids: list[str]
    gpus: list[GpuSlot] = Field(default_factory=list)
    device: str | None = None

    def final_report(self) -> FinalReport:
        """The Tune trial's report of the run; raises `TrialDiverged` for a diverged one, so that the Tune trial
        fails like any error and is recorded as one."""
        if isinstance(self.result, Divergence):
            raise TrialDiverged(self.result)
        return FinalReport(
            **self.result.summary().model_dump(), node_ids=self.node_ids, gpus=self.gpus, device=self.device
        )


def _mean_elementwise(values: list[Any]) -> Any:
    """The mean of equally shaped numbers or nested lists of numbers, element by element."""
    if isinstance(values[0], list):
        return [_mean_elementwise(list(column)) for column in zip(*values)]
    return mean(values)


class PrunedRecord(StrictModel):
    """A trial that early stopping ended at a stage boundary: where, its objectives there, and how many trials were
    at that rung."""

    stage: int
    values: dict[str, float]
    at_rung: int


class Tags:
    """MLflow tag names of a sweep's runs."""

    SWEEP = "raycl.sweep"  # parent and children: the sweep's name
    ROLE = "raycl.role"  # "parent" on the sweep's run
    TRIAL = "raycl.trial_id"  # child: trial_key(number)
    NUMBER = "raycl.optuna_number"
    SEARCHED = "raycl.searched"  # child: the searched parameters it sampled, comma-separated
    FINAL_LOGGED = "raycl.final_logged"  # child: "true" once its final metrics are logged
    NODE_IDS = "raycl.node_ids"
    GPUS = "raycl.gpus"  # child: the GPUs its workers held, NODE_ID:GPU_INDEX, comma-separated
    PARETO = "raycl.pareto"  # child: on the Pareto front
    FEASIBLE = "raycl.feasible"  # child: meets the space's constraints
    PARETO_TRIALS = "raycl.pareto_trials"  # parent: the Pareto set's keys
    HV_REFERENCE = "raycl.hv_reference"  # parent: the hypervolume reference point
    FAILURE = "raycl.failure"  # child of a failed trial: why, in one line (also an Optuna user attr)
    DIVERGED = "raycl.diverged"  # child of a diverged trial: the step (also an Optuna user attr)
    PRUNED = "raycl.pruned"  # child of a trial stopped early: the stage (also an Optuna user attr, as a PrunedRecord)
    RUNG_VALUES = "raycl.rung_values"  # Optuna user attr: stage -> the objectives the trial had at that rung
    STORAGE = "raycl.optuna_storage"  # parent: the Optuna storage URL, password redacted
    STUDY = "raycl.study"  # parent: the Optuna study's name
    FINGERPRINT = "raycl.space_fingerprint"  # parent, and the study's user attr: SearchSpace.fingerprint()
    SAMPLER = "raycl.sampler"  # parent
    SEED = "raycl.seed"  # parent
    OBJECTIVES = "raycl.objectives"  # parent ("name:direction,..."), and the study's user attr (the names)
    INVALID = "raycl.invalid_config"  # Optuna user attr of an impossible sample (not a trial of the budget)
    OUT_DIR = "raycl.out_dir"  # Optuna user attr: the folder (and so the lock) of the driver that started the trial


class Artifacts:
    """MLflow artifact paths of a sweep's runs."""

    SEARCH_SPACE = "search_space.yaml"  # parent: the space as run
    TRIAL_CONFIG = "trial_config.json"  # child: the full TrialConfig
    STAGE_RECORD = "stage_matrix.json"  # child: its StageRecord
    REPLICATES = "replicates.json"  # child run under several seeds: each seed's metrics
    ERROR = "error.txt"  # child of a failed trial: the full traceback (also in its trial folder)
    PRUNED = "pruned.json"  # child of a trial stopped early: its PrunedRecord


EVAL_PREFIX = "eval/"  # child metric curves: eval/new_loss, eval/base_loss, eval/bench_...
