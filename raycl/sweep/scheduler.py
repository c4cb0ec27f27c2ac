"""Multi-objective early stopping at stage boundaries: a Ray Tune scheduler (`early_stopping` in a space).

Every stage end of a trial's stream from `first_rung` on, but the last, is a rung. A trial's stage-end report carries the
objectives so far (learning and forgetting after that stage); when it arrives at a rung the trial
is ranked with the trials that reached the rung before it, by NSGA-II's order (`raycl.sweep.promotion`),
and continues only within the top ceil(n / reduction); otherwise Tune stops it. The decisions,
kept in `stopped`, are read by the Optuna searcher (the trial is PRUNED, its values at the rung kept
as user attrs), the MLflow tracker (tag) and the live table, all in the driver.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raycl.config.records import FINAL_KEY, PrunedRecord, TrialAssignment
from raycl.config.space import SearchSpace
from raycl.sweep.promotion import as_losses, promoted


class StageHalving(FIFOScheduler):
    """Stops a trial at a stage end when it ranks outside the top 1/reduction of the trials there."""

    def __init__(self, objectives: dict[str, str], reduction: float, history: dict[str, dict[int, list[float]]] | None = None,
                 first_rung: int = 1):
        super().__init__()
        self.objectives = objectives
        self.reduction = reduction
        self.first_rung = first_rung
        # rung (stage) -> trial key -> objective values there, in arrival order
        self.rungs: dict[int, dict[str, list[float]]] = {}
        self.stopped: dict[str, PrunedRecord] = {}
        for key, stages in (history or {}).items():
            for stage, values in sorted(stages.items()):
                self.rungs.setdefault(int(stage), {})[key] = values

    @classmethod
    def of(cls, space: SearchSpace, history: dict[str, dict[int, list[float]]] | None = None) -> StageHalving | None:
        """The space's scheduler, seeded with the rung values of trials an earlier driver ran; None without `early_stopping`."""
        if space.early_stopping is None:
            return None
        return cls(dict(space.objectives), space.early_stopping.reduction, history, space.early_stopping.first_rung)

    def rung_values(self, key: str) -> dict[int, list[float]]:
        """The objective values trial `key` had at each rung it reached."""
        return {stage: trial_values[key] for stage, trial_values in self.rungs.items() if key in trial_values}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if FINAL_KEY in result or not result.get("full_eval") or not all(name in result for name in self.objectives):
            return TrialScheduler.CONTINUE
        assignment = TrialAssignment.model_validate(trial.config)
        stage = int(result["stage"])
        if stage < self.first_rung or stage >= assignment.trial_config.world.num_stages:
            return TrialScheduler.CONTINUE  # before the first rung, or the last stage: nothing left to save
        at_rung = self.rungs.setdefault(stage, {})
        if assignment.key in at_rung:
            return TrialScheduler.CONTINUE  # said again by a resumed trial: it was promoted then
        values = [float(result[name]) for name in self.objectives]
        at_rung[assignment.key] = values
        if promoted(as_losses(list(at_rung.values()), list(self.objectives.values())), self.reduction):
            return TrialScheduler.CONTINUE
        self.stopped[assignment.key] = PrunedRecord(stage=stage, values=dict(zip(self.objectives, values)), at_rung=len(at_rung))
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return (f"at stage ends from stage {self.first_rung} on, the top 1/{self.reduction:g} by NSGA-II rank continue "
                f"({len(self.stopped)} stopped so far)")
