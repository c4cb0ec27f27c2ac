"""`raycl sweep NAME`: one search space in, a finished (or resumed) distributed sweep out.

    raycl sweep smoke                                   # local Ray on this machine, results in runs/smoke/
    raycl sweep scaling_laws --address auto \\
        --storage postgresql+psycopg2://raycl@HEAD_IP/optuna --tracking-uri http://HEAD_IP:5000   # on a cluster
    raycl sweep smoke --resume                          # after the driver was killed

Order of work: validate the space (no Ray, MLflow or Optuna imported yet, so a bad file fails in
a second and leaves nothing behind), check that the stores given by URL answer (seconds, nothing
created), take the sweep's lock, open the Optuna study and the MLflow parent run, connect to Ray,
plan resources, run the remaining trials through Ray Tune, then put the Pareto frontier and
hypervolume history on the parent run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock, Timeout
from rich.console import Console

from raycl.config import ConfigError
from raycl.config.records import Tags, trial_key
from raycl.config.space import SearchSpace, load_space
from raycl.sweep.plan import ResourcePlan, check_fits_locally
from raycl.sweep.ray_session import (
    LOG_FILE,
    clean_up_after_a_dead_driver,
    library_logs,
    ray_connection,
    scoped_env,
    sigterm_as_ctrl_c,
    without_tunes_trial_error_logs,
)
from raycl.sweep.stores import check_stores, database_url


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep left behind, and what this invocation did."""

    name: str
    out_dir: Path
    storage: str
    tracking_uri: str
    parent_run_id: str
    completed: int
    failed: int
    pareto_keys: list[str]
    hypervolume: float
    launched: list[str]
    wall_time_s: float
    plan: ResourcePlan | None = None
    trial_times: dict[str, dict[str, float]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # the driver's time: optuna, mlflow, ray, trials, frontier
    failures: dict[str, str] = field(default_factory=dict)  # failed trial key -> why, in one line
    stopped: dict[str, int] = field(default_factory=dict)  # trial key -> the stage early stopping ended it at
    unfinished: int = 0  # trials of the budget not yet run to an end (the sweep was stopped)
    running_elsewhere: int = 0  # trials of a shared study that another live driver runs
    # Placement groups still holding resources once this driver's trials had ended (a local Ray's own); none
    # unless something leaked. Not checked on a cluster, where other jobs hold theirs.
    placement_groups_left: list[str] = field(default_factory=list)


def run_sweep(
    name_or_path: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    storage: str | None = None,
    out_root: str | Path = "runs",
    ray_storage: str | None = None,
    num_cpus: int | None = None,
    show_worker_logs: bool = False,
    verbose: bool = False,
    console: Console | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    sweep_name: str | None = None,
) -> SweepOutcome:
    """Run (or with `resume`, finish) the sweep `name_or_path` (a name in search_spaces/ or a YAML path).

    address: a running Ray cluster ("auto", "ray://...", "HOST:PORT"); None starts a local Ray.
    tracking_uri: MLflow store; default sqlite `OUT_ROOT/NAME/mlflow.db`, artifacts beside it.
    storage: Optuna storage URL; default sqlite `OUT_ROOT/NAME/optuna.db`.
    ray_storage: where Ray Tune/Train keep state and stage checkpoints; default `OUT_ROOT/NAME/ray`.
        On a multi-node cluster this must be shared by every node (s3://..., NFS).
    num_cpus: CPUs of a local Ray (default: all).
    overrides: `key=value` items applied to the space's YAML (`budget.trials=2`), validated with it.
    sweep_name: the sweep's folder, study and experiment name; default the space's name.
    verbose: Ray's and MLflow's own log lines on the terminal; otherwise they go to `OUT_ROOT/NAME/sweep.log`.
    Raises `ConfigError` (one line naming the file and key, or the store that cannot be reached)
    before creating anything.
    """
    started = time.perf_counter()
    console = console or Console()
    space = load_space(name_or_path, overrides, sweep_name)
    if address is None:
        _check_local_resources(space, num_cpus)
    check_stores(storage, tracking_uri)
    out_dir = (Path(out_root) / space.name).resolve()
    own_tracking = tracking_uri is None
    storage = database_url(storage or f"sqlite:///{out_dir / 'optuna.db'}")
    tracking_uri = database_url(tracking_uri or f"sqlite:///{out_dir / 'mlflow.db'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / ".driver.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"{out_dir}: another driver is running sweep {space.name!r} (lock {lock.lock_file})"
        ) from None
    try:
        clean_up_after_a_dead_driver(out_dir)
        with sigterm_as_ctrl_c(), library_logs(out_dir / LOG_FILE, verbose):
            return _run(
                space,
                out_dir=out_dir,
                storage=storage,
                tracking_uri=tracking_uri,
                artifact_root=out_dir / "mlartifacts" if own_tracking else None,
                ray_storage=ray_storage or str(out_dir / "ray"),
                address=address,
                resume=resume,
                num_cpus=num_cpus,
                show_worker_logs=show_worker_logs,
                console=console,
                started=started,
            )
    finally:
        lock.release()


def _check_local_resources(space: SearchSpace, num_cpus: int | None) -> None:
    """The budget against the local Ray this driver would start (its CPUs, and GPUs when asked for)."""
    gpus = 0
    if space.budget.gpus_per_worker:
        import torch

        gpus = torch.cuda.device_count()
    try:
        check_fits_locally(space.budget, num_cpus or os.cpu_count() or 1, gpus)
    except ValueError as error:
        raise ConfigError(f"{space.source}: {error}") from None


def _run(
    space: SearchSpace,
    *,
    out_dir: Path,
    storage: str,
    tracking_uri: str,
    artifact_root: Path | None,
    ray_storage: str,
    address: str | None,
    resume: bool,
    num_cpus: int | None,
    show_worker_logs: bool,
    console: Console,
    started: float,
) -> SweepOutcome:
    # Heavy imports only now that the space is known to be valid.
    from raycl.models.builds import build_rungs, rungs_of
    from raycl.sweep.study import finished_trials, interrupted_trials, open_study

    phases: dict[str, float] = {}
    with _timed(phases, "optuna"):
        study = open_study(space, storage, resume=resume)
    interrupted = interrupted_trials(study, out_dir)
    finished = finished_trials(study)
    to_run = max(0, space.budget.trials - len(finished))
    if to_run and address is None:
        # On a cluster each node builds what its trials need (into its own cache) on first use.
        with _timed(phases, "models"):
            build_rungs(rungs_of(space.possible_configs(("model.", "world."))), num_cpus, say=console.print)
    plan, launched, trial_times, left = None, [], {}, []
    with contextlib.ExitStack() as ray_session:
        tracker = _open_tracker_while_ray_starts(
            space,
            study,
            storage,
            tracking_uri,
            artifact_root,
            phases,
            ray_session,
            connect=(lambda: ray_connection(address, num_cpus, show_worker_logs, out_dir)) if to_run else None,
        )
        _print_start(space, storage, tracking_uri, tracker, len(finished), len(interrupted), to_run, console)
        scheduler, progress = _progress_of_earlier_trials(space, study, finished, interrupted, console)
        if to_run:
            with _timed(phases, "trials"), _ended_on_error(tracker):
                plan, launched, trial_times, left = _launch(
                    space,
                    study,
                    interrupted,
                    to_run,
                    tracker,
                    progress,
                    scheduler,
                    out_dir=out_dir,
                    ray_storage=ray_storage,
                    elastic=address is not None,
                    console=console,
                )
            # Children still open belong to trials stopped mid-run (Ctrl-C); --resume reopens them.
            tracker.end_open_children("KILLED")
    with _timed(phases, "frontier"):
        outcome, reference = _record_frontier(space, study, tracker, out_dir, storage, tracking_uri)
    outcome = dataclasses.replace(
        outcome,
        launched=launched,
        wall_time_s=time.perf_counter() - started,
        plan=plan,
        trial_times=trial_times,
        phases=phases,
        placement_groups_left=left,
    )
    _print_end(outcome, reference, console)
    return outcome


def _open_tracker_while_ray_starts(
    space: SearchSpace,
    study: Any,
    storage: str,
    tracking_uri: str,
    artifact_root: Path | None,
    phases: dict[str, float],
    ray_session: contextlib.ExitStack,
    connect: Callable[[], contextlib.AbstractContextManager[None]] | None,
) -> Any:
    """The sweep's MLflow tracker with its parent run open; MLflow's store opens (creating its tables takes
    seconds) while `connect` (if given) starts Ray, whose session `ray_session` then holds."""
    from raycl.sweep.redaction import redact_url

    def open_tracker() -> Any:
        with _timed(phases, "mlflow"):
            from raycl.sweep.tracking import SweepTracker  # MLflow's import, too, overlaps Ray's start

            tracker = SweepTracker(tracking_uri, space, artifact_root)
            tracker.open_parent(
                {
                    Tags.STORAGE: redact_url(storage),
                    Tags.STUDY: space.name,
                    Tags.FINGERPRINT: space.fingerprint(),
                    Tags.SAMPLER: space.sampler.name,
                    Tags.SEED: str(space.seed),
                    Tags.OBJECTIVES: ",".join(f"{k}:{v}" for k, v in space.objectives.items()),
                }
            )
        return tracker

    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(open_tracker)
        if connect is not None:
            with _timed(phases, "ray"):
                ray_session.enter_context(connect())
        try:
            return opening.result()
        except Exception as error:
            raise _tracking_failed(error, tracking_uri, study) from None


def _print_start(
    space: SearchSpace,
    storage: str,
    tracking_uri: str,
    tracker: Any,
    finished: int,
    interrupted: int,
    to_run: int,
    console: Console,
) -> None:
    from raycl.sweep.redaction import redact_url

    console.print(
        f"sweep {space.name}: {finished} finished, {interrupted} interrupted, {to_run} to run\n"
        f"  optuna: {redact_url(storage)} (study {space.name})\n  mlflow: {redact_url(tracking_uri)} "
        f"(experiment raycl-{space.name}, parent run {tracker.parent_id})",
        highlight=False,
    )


def _progress_of_earlier_trials(
    space: SearchSpace, study: Any, finished: list, interrupted: list, console: Console
) -> tuple[Any, Any]:
    """The early-stopping scheduler (None without one), seeded with earlier drivers' rungs, and the progress
    table holding the trials earlier drivers finished or left interrupted."""
    from optuna.trial import TrialState

    from raycl.sweep.progress import ProgressTable
    from raycl.sweep.scheduler import StageHalving
    from raycl.sweep.study import completed_metrics, rung_history

    scheduler = StageHalving.of(space, rung_history(study))
    progress = ProgressTable(space, console, scheduler.stopped if scheduler else None)
    for trial in finished:
        state = {TrialState.COMPLETE: "done", TrialState.FAIL: "failed"}.get(trial.state, "stopped")
        progress.add_earlier(trial_key(trial.number), trial.params, completed_metrics(trial), state)
    for trial in interrupted:
        progress.add_earlier(trial_key(trial.number), trial.params, {}, "interrupted")
    return scheduler, progress


@contextlib.contextmanager
def _ended_on_error(tracker: Any) -> Iterator[None]:
    """The sweep's MLflow runs ended KILLED if the block raises (Ctrl-C, SIGTERM, a crash)."""
    try:
        yield
    except BaseException:
        tracker.end_open_children("KILLED")
        tracker.end_parent("KILLED")
        raise


def _record_frontier(
    space: SearchSpace, study: Any, tracker: Any, out_dir: Path, storage: str, tracking_uri: str
) -> tuple[SweepOutcome, str]:
    """Put the Pareto frontier and hypervolume history on the parent run, and end it; the outcome so far
    (what this invocation launched, and its times, are filled in by the caller) and the hypervolume's
    reference point in words."""
    from optuna.trial import TrialState

    from raycl.analysis.frontier import space_frontier
    from raycl.sweep.study import completed_metrics, finished_trials, interrupted_trials

    complete = sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete
    )
    keys, metrics = [trial_key(t.number) for t in complete], [completed_metrics(t) for t in complete]
    summary = space_frontier(space, keys, metrics)
    tracker.log_frontier(summary, [{"trial": key} | m for key, m in zip(keys, metrics)], [t.params for t in complete])
    failures = {
        trial_key(t.number): t.user_attrs.get(Tags.FAILURE, "no reason recorded")
        for t in finished_trials(study)
        if t.state == TrialState.FAIL
    }
    stopped = {
        trial_key(t.number): t.user_attrs.get(Tags.PRUNED, {}).get("stage", 0)
        for t in finished_trials(study)
        if t.state == TrialState.PRUNED
    }
    # Trials another live driver runs on a shared study are its to finish, not this one's.
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    elsewhere = len(running) - len(interrupted_trials(study, out_dir))
    unfinished = max(0, space.budget.trials - len(complete) - len(failures) - len(stopped) - elsewhere)
    tracker.end_parent("KILLED" if unfinished else "FINISHED")
    reference = ", ".join(f"{name} {value:.4g}" for name, value in zip(summary.objectives, summary.reference))
    outcome = SweepOutcome(
        name=space.name,
        out_dir=out_dir,
        storage=storage,
        tracking_uri=tracking_uri,
        parent_run_id=tracker.parent_id,
        completed=len(complete),
        failed=len(failures),
        pareto_keys=summary.pareto_keys,
        hypervolume=summary.hypervolume,
        launched=[],
        wall_time_s=0.0,
        failures=failures,
        stopped=stopped,
        unfinished=unfinished,
        running_elsewhere=elsewhere,
    )
    return outcome, f"{reference}; {summary.reference_source}"


def _print_end(outcome: SweepOutcome, reference: str, console: Console) -> None:
    console.print(
        f"sweep {outcome.name}: {outcome.completed} complete, {len(outcome.stopped)} stopped early, {outcome.failed} "
        "failed; "
        f"Pareto set {', '.join(outcome.pareto_keys)}; hypervolume {outcome.hypervolume:.4g} (reference: {reference})\n"
        f"  {outcome.wall_time_s:.0f} s in all: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.phases.items())
        + (" (mlflow and ray in parallel)" if "ray" in outcome.phases else ""),
        highlight=False,
    )
    if outcome.trial_times and outcome.plan and "trials" in outcome.phases:
        compute = sum(times["trial_s"] for times in outcome.trial_times.values())
        ideal = compute / outcome.plan.concurrency
        console.print(
            f"  trials: {compute:.0f} s of trial time over {outcome.plan.concurrency} slot(s), {ideal:.0f} s if packed "
            f"without a gap; the trial phase took {outcome.phases['trials'] / ideal:.2f}x that",
            highlight=False,
        )
    for key, reason in outcome.failures.items():
        console.print(f"  {key} failed: {reason}", highlight=False, soft_wrap=True)
    if outcome.stopped:
        console.print(
            "  stopped early (stage): " + ", ".join(f"{key} ({stage})" for key, stage in outcome.stopped.items()),
            highlight=False,
        )
    if outcome.running_elsewhere:
        console.print(
            f"  {outcome.running_elsewhere} trials still run under another driver of study {outcome.name}",
            highlight=False,
        )


def _launch(
    space: SearchSpace,
    study: Any,
    interrupted: list,
    to_run: int,
    tracker: Any,
    progress: Any,
    scheduler: Any,
    *,
    out_dir: Path,
    ray_storage: str,
    elastic: bool,
    console: Console,
) -> tuple[ResourcePlan, list[str], dict[str, dict[str, float]], list[str]]:
    """Plan on the connected Ray's nodes and run `to_run` trials through Tune (stopped early by `scheduler`, if any);
    also returns, on a local Ray, the placement groups still holding resources afterwards (none unless leaked)."""
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from raycl.adapters.ray_internals import stop_tune_forwarding_credentials
    from raycl.sweep.failures import FailureRecorder
    from raycl.sweep.lease import heartbeats
    from raycl.sweep.plan import NodeCapacity, plan_resources
    from raycl.sweep.study import OptunaSearcher
    from raycl.sweep.tracking import TrackingCallback
    from raycl.sweep.trainable import TrialContext, tune_trainable
    from raycl.sweep.worker_groups import (
        StageDecisions,
        orphaned_placement_groups_removed,
        placement_groups_in_use,
        start_stage_gate,
    )

    nodes = [
        NodeCapacity(node["NodeID"], node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
        for node in ray.nodes()
        if node["Alive"]
    ]
    try:
        plan = plan_resources(space.budget, nodes, elastic=elastic)
    except ValueError as error:
        raise ConfigError(f"{space.source}: {error}") from None
    console.print(plan.describe(to_run), highlight=False)
    if scheduler is not None:
        console.print(f"early stopping: {scheduler.debug_string()}", highlight=False)

    defaults = {} if space.fixes("train.cpu_threads") else {"train.cpu_threads": plan.threads_per_worker}
    searcher = OptunaSearcher(study, space, interrupted, defaults, out_dir, scheduler)
    # Under `train`, the workers of a trial wait at each stage end for the scheduler's decision.
    gate = start_stage_gate() if scheduler is not None and plan.executor == "train" else None
    stage_decisions = [StageDecisions(gate, scheduler.stopped)] if gate is not None and scheduler is not None else []
    context = TrialContext(
        sweep=space.name,
        trials_dir=str(out_dir / "trials"),
        train_storage=f"{ray_storage}/train",
        tune_storage=f"{ray_storage}/tune/{space.name}",
        plan=plan,
        max_failures=space.budget.max_failures,
        seeds=space.budget.seeds,
        stage_gate=gate,
    )
    tuner = tune.Tuner(
        tune_trainable(context),
        tune_config=tune.TuneConfig(
            num_samples=to_run,
            search_alg=searcher,
            scheduler=scheduler,
            max_concurrent_trials=plan.concurrency,
            # The next trial reuses a finished trial's Tune actor, with ray, torch and (under the
            # `tune` executor) the engine already imported; Train workers are new processes.
            # A stopped trial's actor too under `tune`: Ray 2.60's function trainable reports
            # synchronously, so the engine waits in its stage-end `tune.report` while the scheduler
            # decides, and the reset releases it into Ray's `sys.exit(0)` there, a clean end of the
            # thread. Under `train` a stopped trial's thread waits on its Train controller, the reset
            # would fail (and fail the next trial): its actor is ended instead, and the controller and
            # workers with it.
            reuse_actors=plan.executor == "tune" or scheduler is None,
            trial_name_creator=lambda trial: trial.config["key"],
            trial_dirname_creator=lambda trial: trial.config["key"],
        ),
        run_config=tune.RunConfig(
            # One experiment per sweep, kept across drivers: a resumed trial finds its stage checkpoints.
            name=space.name,
            storage_path=f"{ray_storage}/tune",
            verbose=0,
            # Only Tune's JSON logger (the result grid reads it); CSV and TensorBoard add nothing here.
            callbacks=[
                FailureRecorder(searcher, tracker, progress, out_dir / "trials"),
                TrackingCallback(tracker, scheduler.stopped if scheduler else None),
                progress,
                JsonLoggerCallback(),
                *stage_decisions,
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # Under `train` the worker group restarts inside the trial (Train's FailureConfig); under
            # `tune` Tune restarts the trial, which resumes from its last stage checkpoint.
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures if plan.executor == "tune" else 0),
        ),
    )
    stop_tune_forwarding_credentials()
    # Tune's own progress output would duplicate the live table; its default loggers give way to
    # the JSON one above.
    with (
        scoped_env({"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}),
        progress.live(),
        heartbeats(study, searcher.owned_trial_ids),
        without_tunes_trial_error_logs(),
        orphaned_placement_groups_removed() as released,
    ):
        tuner.fit()
    if released:
        console.print(f"released {len(released)} placement group(s) of ended Train trials", highlight=False)
    left = [] if elastic else placement_groups_in_use()
    if left:
        console.print(f"warning: {len(left)} placement group(s) still hold resources: {', '.join(left)}")
    return plan, progress.launched(), progress.trial_times(), left


def _tracking_failed(error: Exception, tracking_uri: str, study: Any) -> Exception:
    """MLflow's error (a page of traceback) as one line, password redacted; a study still without
    trials (just created) is deleted, so that a plain rerun does not find it in the way."""
    import optuna
    from mlflow.exceptions import MlflowException

    from raycl.adapters import optuna_internals
    from raycl.sweep.redaction import redact_url

    if not isinstance(error, MlflowException):
        return error
    if not study.trials:
        optuna.delete_study(study_name=study.study_name, storage=optuna_internals.storage_of(study))
    message = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if password := urlsplit(tracking_uri).password:
        message = message.replace(password, "***")
    return ConfigError(f"--tracking-uri {redact_url(tracking_uri)}: MLflow refused: {message}")


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = time.perf_counter() - started
