"""The Optuna side of a sweep: the persistent study, its pinned sampler, and the Tune searcher over it.

Optuna is driven by ask/tell rather than through `OptunaSearch`, so that run identity survives a
killed driver: a trial left RUNNING by a dead driver is handed out again under the same number and
parameters (its engine resumes from its stage checkpoints), instead of being failed and re-asked.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, TypedDict

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from raycl.adapters import optuna_internals
from raycl.config import ConfigError
from raycl.config.records import FINAL_KEY, REPLICATES_ATTR, FinalReport, Tags, TrialAssignment, trial_key
from raycl.config.result import is_reported_metric
from raycl.config.space import SamplerSpec, SearchSpace
from raycl.sweep.lease import ask, claim, orphaned, rdb_storage
from raycl.sweep.scheduler import StageHalving

_MAX_INVALID_ASKS = 100


class _StartupKwargs(TypedDict, total=False):
    n_startup_trials: int


class _PopulationKwargs(TypedDict, total=False):
    population_size: int


def make_sampler(spec: SamplerSpec, seed: int) -> optuna.samplers.BaseSampler:
    startup: _StartupKwargs = {} if spec.n_startup_trials is None else {"n_startup_trials": spec.n_startup_trials}
    if spec.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **startup)
    if spec.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    if spec.name == "nsga2":
        size = spec.population_size
        population: _PopulationKwargs = {} if size is None else {"population_size": size}
        return optuna.samplers.NSGAIISampler(seed=seed, **population)
    return optuna.samplers.RandomSampler(seed=seed)


def storage_for(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A dashboard reading the same file may hold the lock briefly; wait rather than fail.
        return rdb_storage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    return rdb_storage(url)


def open_study(space: SearchSpace, storage_url: str, *, resume: bool) -> optuna.Study:
    """Create the study `space.name`, or load it to resume; refuse to mix two different spaces."""
    storage = storage_for(storage_url)
    exists = space.name in optuna.study.get_all_study_names(storage)
    if exists and not resume:
        raise ConfigError(
            f"{space.source}: study {space.name!r} already exists in {storage_url}; pass --resume to continue it, "
            "or --new for a fresh sweep beside it"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Offset the seed by the trials already asked, so a resumed sweep does not replay the first draws.
    previous = len(optuna.load_study(study_name=space.name, storage=storage).trials) if exists else 0
    study = optuna.create_study(
        study_name=space.name,
        storage=storage,
        directions=space.directions,
        sampler=make_sampler(space.sampler, space.seed + previous),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(Tags.FINGERPRINT)
    if recorded is None:
        study.set_user_attr(Tags.FINGERPRINT, space.fingerprint())
        study.set_user_attr(Tags.OBJECTIVES, list(space.objectives))
        with warnings.catch_warnings():  # experimental in name only since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(space.objectives))  # the dashboard's axes: learning, forgetting
    elif recorded != space.fingerprint():
        raise ConfigError(
            f"{space.source}: the search (objectives, constraints, parameters, fixed, sampler, seed or budget.seeds) "
            f"changed since study {space.name!r} started; only the rest of budget may change on --resume"
        )
    if [d.name.lower() for d in study.directions] != space.directions:
        raise ConfigError(f"{space.source}: objectives: directions differ from the stored study's")
    return study


def interrupted_trials(study: optuna.Study, out_dir: Path) -> list[FrozenTrial]:
    """Trials a dead driver left RUNNING, which this one (driving from `out_dir`) continues; a live
    driver's, on a shared study, are left alone (`raycl.sweep.lease`)."""
    return orphaned(study, out_dir)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials of the budget that ran to an end (complete, stopped early or failed); impossible samples excluded."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return [trial for trial in finished if Tags.INVALID not in trial.user_attrs]


class OptunaSearcher(Searcher):
    """A Tune searcher that asks the study for parameters and tells it each trial's final objectives.

    Each suggestion is a `TrialAssignment` (as Tune's trial config); interrupted trials are handed
    out first, with their stored parameters. `defaults` (e.g. torch threads from the resource plan)
    apply under the sampled parameters. With a `scheduler` (early stopping), a trial it stopped is
    told PRUNED, with its objectives at that rung as user attrs, and every trial keeps its rung values.
    """

    def __init__(
        self,
        study: optuna.Study,
        space: SearchSpace,
        interrupted: list[FrozenTrial],
        defaults: dict[str, Any],
        out_dir: Path | None = None,
        scheduler: StageHalving | None = None,
    ):
        super().__init__()
        self._study = study
        self._scheduler = scheduler
        self._space = space
        self._defaults = defaults
        self._out_dir = out_dir  # marks the trials this driver runs (`claim`)
        self._interrupted = [optuna_internals.reopen(study, frozen) for frozen in interrupted]
        for trial in self._interrupted:
            claim(study, trial, out_dir)
        self._live: dict[str, optuna.trial.Trial] = {}
        self._failed: dict[str, optuna.trial.Trial] = {}  # errored, waiting for `tell_failed`

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        """The next trial's `TrialAssignment` as Tune config, or `Searcher.FINISHED` once the budget is taken."""
        for _ in range(_MAX_INVALID_ASKS):
            if not self._interrupted and self._budget_taken():
                return Searcher.FINISHED
            trial = self._interrupted.pop(0) if self._interrupted else ask(self._study, self._out_dir)
            # Re-suggesting an interrupted trial returns its stored values (and fills any it lacks).
            params = self._space.sample(trial)
            try:
                config = self._space.trial_config(self._defaults | params)
            except ConfigError as error:
                # Failed, but marked: an impossible sample is not a trial of the budget.
                trial.set_user_attr(Tags.INVALID, str(error))
                self._study.tell(trial, state=TrialState.FAIL)
                continue
            self._live[trial_id] = trial
            return TrialAssignment.create(trial.number, params, config).model_dump(mode="json")
        raise ConfigError(
            f"{self._space.source}: parameters: {_MAX_INVALID_ASKS} samples in a row gave invalid trial configs"
        )

    def _budget_taken(self) -> bool:
        """Whether the study's trials (finished, or running under any driver) already fill the budget."""
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return len(finished_trials(self._study)) + len(running) >= self._space.budget.trials

    def owned_trial_ids(self) -> list[int]:
        """Optuna ids of the trials this driver runs or is about to: the ones to keep beating for."""
        owned = [*self._interrupted, *self._live.values(), *self._failed.values()]
        return [optuna_internals.trial_id(trial) for trial in owned]

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study's storage is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: `run_sweep(resume=True)` reopens the study instead."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self._live.pop(trial_id, None)
        if trial is None:
            return
        if error:
            # Tune tells the searcher of an error before its callbacks can read why: the
            # FailureRecorder callback calls `tell_failed` with the reason.
            self._failed[trial_id] = trial
            return
        key = trial_key(trial.number)
        if self._scheduler is not None:
            trial.set_user_attr(
                Tags.RUNG_VALUES, {str(stage): values for stage, values in self._scheduler.rung_values(key).items()}
            )
            if key in self._scheduler.stopped:
                trial.set_user_attr(Tags.PRUNED, self._scheduler.stopped[key].model_dump())
                self._study.tell(trial, state=TrialState.PRUNED)
                return
        if not result or FINAL_KEY not in result:
            # Stopped before it finished (Ctrl-C, shutdown): stays RUNNING, and --resume continues it.
            return
        report = FinalReport.of(result)
        metrics = report.metrics()
        for name, value in metrics.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("stage_matrix", report.stage_matrix)
        trial.set_user_attr("node_ids", report.node_ids)
        if report.gpus:
            trial.set_user_attr("gpus", [slot.model_dump() for slot in report.gpus])
        if report.device:
            trial.set_user_attr("device", report.device)
        if report.replicates:
            trial.set_user_attr(
                REPLICATES_ATTR, [{name: run[name] for name in self._space.objectives} for run in report.replicates]
            )
        for constraint in self._space.constraints:
            trial.set_constraint(str(constraint), constraint.value(metrics))
        self._study.tell(trial, [metrics[name] for name in self._space.objectives])

    def tell_failed(self, trial_id: str, attrs: dict[str, Any]) -> None:
        """Tell Optuna that an errored trial failed, with `attrs` (the reason) as its user attrs."""
        trial = self._failed.pop(trial_id, None)
        if trial is None:
            return
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        self._study.tell(trial, state=TrialState.FAIL)


def rung_history(study: optuna.Study) -> dict[str, dict[int, list[float]]]:
    """Trial key -> stage -> objectives at that rung, of the trials earlier drivers finished (to seed the scheduler)."""
    return {
        trial_key(trial.number): {int(stage): values for stage, values in trial.user_attrs[Tags.RUNG_VALUES].items()}
        for trial in finished_trials(study)
        if Tags.RUNG_VALUES in trial.user_attrs
    }


def completed_metrics(trial: FrozenTrial) -> dict[str, float]:
    """The reported scalar metrics stored on a COMPLETE trial."""
    return {name: value for name, value in trial.user_attrs.items() if is_reported_metric(name)}
