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
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from filelock import FileLock, Timeout
from rich.console import Console

from raycl.config import ConfigError
from raycl.config.space import SearchSpace, load_space
from raycl.sweep.plan import ResourcePlan
from raycl.sweep.redaction import is_secret
from raycl.sweep.stores import check_stores, database_url

# Ray Train knobs that cut the fixed cost of a Train run inside a Tune trial (measured here: ~15 s ->
# 11-13 s per trial); a value already in the environment wins.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_METRICS_ENABLED": "0"}
LOCAL_ONLY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}  # spot preemption only exists on clouds
FORWARDED_ENV_PREFIXES = ("RAYCL_", "HF_", "MLFLOW_ALLOW_FILE_STORE")
RAY_TEMP_PREFIX = "raycl-ray-"
RAY_TEMP_RECORD = ".ray_temp_dir"  # in the sweep's folder: the temp dir of the local Ray it runs on


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
    Raises `ConfigError` (one line naming the file and key, or the store that cannot be reached)
    before creating anything.
    """
    started = time.perf_counter()
    console = console or Console()
    space = load_space(name_or_path, overrides, sweep_name)
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
        raise ConfigError(f"{out_dir}: another driver is running sweep {space.name!r} (lock {lock.lock_file})") from None
    try:
        _clean_up_after_a_dead_driver(out_dir)
        with _sigterm_as_ctrl_c():
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


def _run(space: SearchSpace, *, out_dir: Path, storage: str, tracking_uri: str, artifact_root: Path | None,
         ray_storage: str, address: str | None, resume: bool, num_cpus: int | None, show_worker_logs: bool,
         console: Console, started: float) -> SweepOutcome:
    # Heavy imports only now that the space is known to be valid.
    from optuna.trial import TrialState

    from raycl.analysis.frontier import space_frontier
    from raycl.config.records import Tags, trial_key
    from raycl.sweep.progress import ProgressTable
    from raycl.sweep.redaction import redact_url
    from raycl.sweep.scheduler import StageHalving
    from raycl.sweep.study import completed_metrics, finished_trials, interrupted_trials, open_study, rung_history

    phases: dict[str, float] = {}
    with _timed(phases, "optuna"):
        study = open_study(space, storage, resume=resume)
    interrupted = interrupted_trials(study, out_dir)
    finished = finished_trials(study)
    to_run = max(0, space.budget.trials - len(finished))

    def open_tracker() -> Any:
        with _timed(phases, "mlflow"):
            from raycl.sweep.tracking import SweepTracker  # MLflow's import, too, overlaps Ray's start

            tracker = SweepTracker(tracking_uri, space, artifact_root)
            tracker.open_parent({
                "raycl.optuna_storage": redact_url(storage),
                "raycl.study": space.name,
                "raycl.space_fingerprint": space.fingerprint(),
                "raycl.sampler": space.sampler.name,
                "raycl.seed": str(space.seed),
                "raycl.objectives": ",".join(f"{k}:{v}" for k, v in space.objectives.items()),
            })
        return tracker

    plan, launched, trial_times = None, [], {}
    with contextlib.ExitStack() as ray_session:
        # MLflow's store opens (creating its tables takes seconds) while Ray starts.
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(open_tracker)
            if to_run:
                with _timed(phases, "ray"):
                    ray_session.enter_context(_ray_connection(address, num_cpus, show_worker_logs, out_dir))
            try:
                tracker = opening.result()
            except Exception as error:
                raise _tracking_failed(error, tracking_uri, study) from None
        console.print(
            f"sweep {space.name}: {len(finished)} finished, {len(interrupted)} interrupted, {to_run} to run\n"
            f"  optuna: {redact_url(storage)} (study {space.name})\n  mlflow: {redact_url(tracking_uri)} "
            f"(experiment raycl-{space.name}, parent run {tracker.parent_id})",
            highlight=False,
        )
        scheduler = StageHalving.of(space, rung_history(study))
        progress = ProgressTable(space, console, scheduler.stopped if scheduler else None)
        for trial in finished:
            state = {TrialState.COMPLETE: "done", TrialState.FAIL: "failed"}.get(trial.state, "stopped")
            progress.add_earlier(trial_key(trial.number), trial.params, completed_metrics(trial), state)
        for trial in interrupted:
            progress.add_earlier(trial_key(trial.number), trial.params, {}, "interrupted")

        if to_run:
            try:
                with _timed(phases, "trials"):
                    plan, launched, trial_times = _launch(
                        space, study, interrupted, to_run, tracker, progress, scheduler, out_dir=out_dir,
                        ray_storage=ray_storage, elastic=address is not None, console=console,
                    )
            except BaseException:
                tracker.end_open_children("KILLED")
                tracker.end_parent("KILLED")
                raise
            # Children still open belong to trials stopped mid-run (Ctrl-C); --resume reopens them.
            tracker.end_open_children("KILLED")

    with _timed(phases, "frontier"):
        complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete)
        keys, metrics = [trial_key(t.number) for t in complete], [completed_metrics(t) for t in complete]
        summary = space_frontier(space, keys, metrics)
        tracker.log_frontier(summary, [{"trial": key} | m for key, m in zip(keys, metrics)], [t.params for t in complete])
        failures = {
            trial_key(t.number): t.user_attrs.get(Tags.FAILURE, "no reason recorded")
            for t in finished_trials(study) if t.state == TrialState.FAIL
        }
        failed = len(failures)
        stopped = {
            trial_key(t.number): t.user_attrs.get(Tags.PRUNED, {}).get("stage", 0)
            for t in finished_trials(study) if t.state == TrialState.PRUNED
        }
        # Trials another live driver runs on a shared study are its to finish, not this one's.
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        elsewhere = len(running) - len(interrupted_trials(study, out_dir))
        unfinished = max(0, space.budget.trials - len(complete) - failed - len(stopped) - elsewhere)
        tracker.end_parent("KILLED" if unfinished else "FINISHED")
    reference = ", ".join(f"{name} {value:.4g}" for name, value in zip(summary.objectives, summary.reference))
    wall = time.perf_counter() - started
    console.print(
        f"sweep {space.name}: {len(complete)} complete, {len(stopped)} stopped early, {failed} failed; Pareto set {', '.join(summary.pareto_keys)}; "
        f"hypervolume {summary.hypervolume:.4g} (reference: {reference}; {summary.reference_source})\n"
        f"  {wall:.0f} s in all: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
        + (" (mlflow and ray in parallel)" if "ray" in phases else ""),
        highlight=False,
    )
    for key, reason in failures.items():
        console.print(f"  {key} failed: {reason}", highlight=False, soft_wrap=True)
    if stopped:
        console.print("  stopped early (stage): " + ", ".join(f"{key} ({stage})" for key, stage in stopped.items()), highlight=False)
    if elsewhere:
        console.print(f"  {elsewhere} trials still run under another driver of study {space.name}", highlight=False)
    return SweepOutcome(
        name=space.name,
        out_dir=out_dir,
        storage=storage,
        tracking_uri=tracking_uri,
        parent_run_id=tracker.parent_id,
        completed=len(complete),
        failed=failed,
        pareto_keys=summary.pareto_keys,
        hypervolume=summary.hypervolume,
        launched=launched,
        wall_time_s=wall,
        plan=plan,
        trial_times=trial_times,
        phases=phases,
        failures=failures,
        stopped=stopped,
        unfinished=unfinished,
    )


def _launch(space: SearchSpace, study: Any, interrupted: list, to_run: int, tracker: Any, progress: Any, scheduler: Any, *,
            out_dir: Path, ray_storage: str, elastic: bool,
            console: Console) -> tuple[ResourcePlan, list[str], dict[str, dict[str, float]]]:
    """Plan on the connected Ray's nodes and run `to_run` trials through Tune (stopped early by `scheduler`, if any)."""
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from raycl.sweep.failures import FailureRecorder
    from raycl.sweep.lease import heartbeats
    from raycl.sweep.plan import NodeCapacity, plan_resources
    from raycl.sweep.study import OptunaSearcher
    from raycl.sweep.tracking import TrackingCallback
    from raycl.sweep.trainable import TrialContext, tune_trainable

    nodes = [
        NodeCapacity(node["NodeID"], node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
        for node in ray.nodes() if node["Alive"]
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
    context = TrialContext(
        sweep=space.name,
        trials_dir=str(out_dir / "trials"),
        train_storage=f"{ray_storage}/train",
        tune_storage=f"{ray_storage}/tune/{space.name}",
        plan=plan,
        max_failures=space.budget.max_failures,
        seeds=space.budget.seeds,
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
            # A stopped trial's actor too (early stopping runs only under `tune`): Ray 2.60's function
            # trainable reports synchronously, so the engine waits in its stage-end `tune.report` while
            # the scheduler decides, and the reset releases it into Ray's `sys.exit(0)` there, a clean
            # end of the thread.
            reuse_actors=True,
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
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # Under `train` the worker group restarts inside the trial (Train's FailureConfig); under
            # `tune` Tune restarts the trial, which resumes from its last stage checkpoint.
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures if plan.executor == "tune" else 0),
        ),
    )
    # Tune's own progress output would duplicate the live table; its default loggers give way to
    # the JSON one above.
    with _scoped_env({"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}), progress.live(), \
            heartbeats(study, searcher.owned_trial_ids), _without_tunes_trial_error_logs():
        tuner.fit()
    return plan, progress.launched(), progress.trial_times()


def _tracking_failed(error: Exception, tracking_uri: str, study: Any) -> Exception:
    """MLflow's error (a page of traceback) as one line, password redacted; a study still without
    trials (just created) is deleted, so that a plain rerun does not find it in the way."""
    import optuna
    from mlflow.exceptions import MlflowException

    from raycl.sweep.redaction import redact_url

    if not isinstance(error, MlflowException):
        return error
    if not study.trials:
        optuna.delete_study(study_name=study.study_name, storage=study._storage)
    message = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if password := urlsplit(tracking_uri).password:
        message = message.replace(password, "***")
    return ConfigError(f"--tracking-uri {redact_url(tracking_uri)}: MLflow refused: {message}")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`kill`, a job scheduler, a container stop) handled as Ctrl-C is: Tune stops the trials,
    open MLflow runs are ended, Ray shuts down and its temp dir is deleted; --resume goes on from there."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    _route_sigterm_to_ctrl_c()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _route_sigterm_to_ctrl_c() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


class _TrialErrorLogs(logging.Filter):
    """Tune's logs of failed trials: a traceback pages long each, and a list of them at the end."""

    PREFIXES = ("Trial task failed for trial", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


@contextlib.contextmanager
def _without_tunes_trial_error_logs() -> Iterator[None]:
    """The FailureRecorder reports each failed trial in one line, its traceback in trials/KEY/error.txt."""
    loggers = [logging.getLogger(name) for name in ("ray.tune.execution.tune_controller", "ray.tune.tune")]
    drop = _TrialErrorLogs()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@contextlib.contextmanager
def _scoped_env(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _ray_connection(address: str | None, num_cpus: int | None, show_worker_logs: bool, out_dir: Path) -> Iterator[None]:
    """Joined to the cluster at `address`, or to a private local Ray; disconnected (and a local Ray
    stopped and its temp dir removed) on the way out."""
    import ray

    temp_dir = _connect_ray(address, num_cpus, show_worker_logs, out_dir)
    _route_sigterm_to_ctrl_c()  # again: ray.init installed its own handler, which aborts the driver
    try:
        yield
    finally:
        ray.shutdown()
        if temp_dir is not None:
            _stop_local_ray(temp_dir, out_dir)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = time.perf_counter() - started


def _connect_ray(address: str | None, num_cpus: int | None, show_worker_logs: bool, out_dir: Path) -> str | None:
    """Join the cluster at `address`, or start a private local Ray; returns the local Ray's temp dir.

    Ray writes a job's runtime env, env_vars included, in clear to runtime_env_agent.log, so no
    secret travels that way: a local Ray's workers inherit this process's environment, and on a
    cluster variables named like credentials (HF_TOKEN) are left out and must be set on the nodes.
    """
    import ray
    from ray._private import ray_constants

    knobs = TRAIN_ENV | ({} if address else LOCAL_ONLY_ENV)
    knobs = {key: os.environ.get(key, value) for key, value in knobs.items()}
    options: dict[str, Any] = {"log_to_driver": show_worker_logs, "logging_level": logging.WARNING}
    for name in ("ray.tune", "ray.train", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if address:
        forwarded = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}
        withheld = sorted(key for key, value in forwarded.items() if is_secret(key, value))
        if withheld:
            logging.getLogger(__name__).warning("not forwarded to the cluster (set them on its nodes): %s", ", ".join(withheld))
        env = knobs | {key: value for key, value in forwarded.items() if key not in withheld}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **options)
        except ConnectionError as error:
            # Ray's own message is a page long; the usual cause on a fresh `ray start` is token auth.
            raise ConfigError(
                f"--address {address}: cannot connect to Ray ({str(error).splitlines()[0]}); is the cluster up, and if it "
                "uses token auth, is RAY_AUTH_MODE=token set here as on the cluster?"
            ) from None
        return None
    # A short private temp dir: Unix socket paths must stay under ~107 characters, and a cluster of
    # our own must not become the one that another process's bare `ray.init()` attaches to. It is
    # recorded so that the next driver can clean up after this one if it is killed.
    temp_dir = tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX, dir="/tmp")
    (out_dir / RAY_TEMP_RECORD).write_text(temp_dir)
    # Loopback only: Ray turns a 127.0.0.1 node address into the machine's public one unless it
    # thinks clusters unsupported (as on macOS), and then every Ray process binds to 127.0.0.1. The
    # flag is read at import, so it is patched in this process and set for the processes Ray starts.
    with _scoped_env(knobs | {ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}), \
            mock.patch.object(ray_constants, "ENABLE_RAY_CLUSTER", False):
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir, **options)
    return temp_dir


def _stop_local_ray(temp_dir: str, out_dir: Path) -> None:
    """Delete a local Ray's temp dir (its logs) and its record, once it has shut down."""
    shutil.rmtree(temp_dir, ignore_errors=True)
    (out_dir / RAY_TEMP_RECORD).unlink(missing_ok=True)


def _clean_up_after_a_dead_driver(out_dir: Path) -> None:
    """Delete the local Ray temp dir (logs, session files) a killed driver of this sweep left behind.

    Called with the sweep's lock held, so that driver is gone; its Ray processes died with it.
    """
    record = out_dir / RAY_TEMP_RECORD
    if record.exists():
        temp_dir = record.read_text().strip()
        if Path(temp_dir).name.startswith(RAY_TEMP_PREFIX):
            shutil.rmtree(temp_dir, ignore_errors=True)
        record.unlink()
