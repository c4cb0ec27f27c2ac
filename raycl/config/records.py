"""Records a sweep passes between Optuna, Tune, Train and MLflow, and the names it files them under."""

from __future__ import annotations

from typing import Any

from raycl.config.base import StrictModel
from raycl.config.result import TrialSummary
from raycl.config.trial import TrialConfig

Scalar = bool | int | float | str

# Marks the one Tune result of a trial that carries its final summary.
FINAL_KEY = "raycl_final"
# The Ray node a rank-0 evaluation report came from.
NODE_KEY = "raycl_node_id"


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


class FinalReport(TrialSummary):
    """A finished trial's last Tune result: its summary, and the Ray nodes its workers ran on."""

    node_ids: list[str]

    def to_tune(self) -> dict[str, Any]:
        return self.model_dump() | {FINAL_KEY: 1.0}


class PrunedRecord(StrictModel):
    """A trial that early stopping ended at a stage boundary: where, its objectives there, and how many trials were at that rung."""

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
    PARETO = "raycl.pareto"  # child: on the Pareto front
    FEASIBLE = "raycl.feasible"  # child: meets the space's constraints
    PARETO_TRIALS = "raycl.pareto_trials"  # parent: the Pareto set's keys
    HV_REFERENCE = "raycl.hv_reference"  # parent: the hypervolume reference point
    FAILURE = "raycl.failure"  # child of a failed trial: why, in one line (also an Optuna user attr)
    DIVERGED = "raycl.diverged"  # child of a diverged trial: the step (also an Optuna user attr)
    PRUNED = "raycl.pruned"  # child of a trial stopped early: the stage (also an Optuna user attr, as a PrunedRecord)
    RUNG_VALUES = "raycl.rung_values"  # Optuna user attr: stage -> the objectives the trial had at that rung


class Artifacts:
    """MLflow artifact paths of a sweep's runs."""

    SEARCH_SPACE = "search_space.yaml"  # parent: the space as run
    TRIAL_CONFIG = "trial_config.json"  # child: the full TrialConfig
    STAGE_RECORD = "stage_matrix.json"  # child: its StageRecord
    ERROR = "error.txt"  # child of a failed trial: the full traceback (also in its trial folder)
    PRUNED = "pruned.json"  # child of a trial stopped early: its PrunedRecord


EVAL_PREFIX = "eval/"  # child metric curves: eval/new_loss, eval/base_loss, eval/bench_...
