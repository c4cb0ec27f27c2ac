"""Multi-objective early stopping at stage boundaries: a Ray Tune scheduler (`early_stopping` in a space).

The rungs are the stage ends the space names (`rungs: [1]`), or every stage end but the last from
`first_rung` on (`rungs: stages`). A trial's stage-end report carries the objectives so far (learning
and forgetting after that stage); when it arrives at a rung the trial is ranked with the trials that
reached the rung before it, by NSGA-II's order (`raycl.sweep.promotion`), and continues only within the
top ceil(n / reduction); otherwise Tune stops it. The decisions, kept in `stopped`, are read by the
Optuna searcher (the trial is PRUNED, its values at the rung kept as user attrs), the MLflow tracker
(tag) and the live table, all in the driver.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raycl.config.records import PrunedRecord, TrialAssignment
from raycl.config.result import EvalRecord
from raycl.config.space import EarlyStopping, SearchSpace
from raycl.sweep.promotion import as_losses, promoted


class StageHalving(FIFOScheduler):
    """Stops a trial at a stage end when it ranks outside the top 1/reduction of the trials there."""

    def __init__(
        self, objectives: dict[str, str], rule: EarlyStopping, history: dict[str, dict[int, list[float]]] | None = None
    ):
        super().__init__()
        self.objectives = objectives
        self.rule = rule
        # rung (stage) -> trial key -> objective values there, in arrival order
        self.rungs: dict[int, dict[str, list[float]]] = {}
        self.stopped: dict[str, PrunedRecord] = {}
        for key, stages in (history or {}).items():
            for stage, values in sorted(stages.items()):
                self.rungs.setdefault(int(stage), {})[key] = values

    @classmethod
    def of(cls, space: SearchSpace, history: dict[str, dict[int, list[float]]] | None = None) -> StageHalving | None:
        """The space's scheduler, seeded with the rung values of trials an earlier driver ran; None without
        `early_stopping`."""
        if space.early_stopping is None:
            return None
        return cls(dict(space.objectives), space.early_stopping, history)

    def rung_values(self, key: str) -> dict[int, list[float]]:
        """The objective values trial `key` had at each rung it reached."""
        return {stage: trial_values[key] for stage, trial_values in self.rungs.items() if key in trial_values}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        record = EvalRecord.in_report(result)
        if record is None or not record.full_eval:
            return TrialScheduler.CONTINUE
        measured = record.metrics()
        if not all(name in measured for name in self.objectives):
            return TrialScheduler.CONTINUE
        assignment = TrialAssignment.model_validate(trial.config)
        stage = record.stage
        if not self.rule.is_rung(stage, assignment.trial_config.world.num_stages):
            return TrialScheduler.CONTINUE
        at_rung = self.rungs.setdefault(stage, {})
        if assignment.key in at_rung:
            return TrialScheduler.CONTINUE  # said again by a resumed trial: it was promoted then
        values = [measured[name] for name in self.objectives]
        at_rung[assignment.key] = values
        if promoted(as_losses(list(at_rung.values()), list(self.objectives.values())), self.rule.reduction):
            return TrialScheduler.CONTINUE
        self.stopped[assignment.key] = PrunedRecord(
            stage=stage, values=dict(zip(self.objectives, values)), at_rung=len(at_rung)
        )
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        where = (
            f"from stage {self.rule.first_rung} on" if self.rule.rungs == "stages" else f"of stages {self.rule.rungs}"
        )
        return (
            f"at the stage ends {where}, the top 1/{self.rule.reduction:g} by NSGA-II rank continue "
            f"({len(self.stopped)} stopped so far)"
        )
