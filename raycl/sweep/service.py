"""`raycl sweep NAME`: one search space in, a finished (or resumed) distributed sweep out.

    raycl sweep smoke                                   # local Ray on this machine, results in runs/smoke/
    raycl sweep scaling_laws --address auto \\
        --storage postgresql://raycl@HEAD_IP/optuna --tracking-uri http://HEAD_IP:5000   # on a cluster
    raycl sweep smoke --resume                          # after the driver was killed

Order of work: validate the space (no Ray, MLflow or Optuna imported yet, so a bad file fails in
a second and leaves nothing behind), take the sweep's lock, open the Optuna study and the MLflow
parent run, connect to Ray, plan resources, run the remaining trials through Ray Tune, then put the
Pareto frontier and hypervolume history on the parent run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from rich.console import Console

from raycl.config import ConfigError
from raycl.config.space import SearchSpace, load_space
from raycl.sweep.plan import ResourcePlan

# Ray Train knobs that cut the fixed cost of a Train run inside a Tune trial (measured here: ~15 s ->
# 11-13 s per trial); a value already in the environment wins.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_METRICS_ENABLED": "0"}
LOCAL_ONLY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}  # spot preemption only exists on clouds
FORWARDED_ENV_PREFIXES = ("RAYCL_", "HF_", "MLFLOW_ALLOW_FILE_STORE")


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
) -> SweepOutcome:
    """Run (or with `resume`, finish) the sweep `name_or_path` (a name in search_spaces/ or a YAML path).

    address: a running Ray cluster ("auto", "ray://...", "HOST:PORT"); None starts a local Ray.
    tracking_uri: MLflow store; default sqlite `OUT_ROOT/NAME/mlflow.db`, artifacts beside it.
    storage: Optuna storage URL; default sqlite `OUT_ROOT/NAME/optuna.db`.
    ray_storage: where Ray Tune/Train keep state and stage checkpoints; default `OUT_ROOT/NAME/ray`.
        On a multi-node cluster this must be shared by every node (s3://..., NFS).
    num_cpus: CPUs of a local Ray (default: all).
    Raises `ConfigError` (one line naming the file and key) before creating anything.
    """
    started = time.perf_counter()
    console = console or Console()
    space = load_space(name_or_path)
    out_dir = (Path(out_root) / space.name).resolve()
    own_tracking = tracking_uri is None
    storage = storage or f"sqlite:///{out_dir / 'optuna.db'}"
    tracking_uri = tracking_uri or f"sqlite:///{out_dir / 'mlflow.db'}"
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / ".driver.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{out_dir}: another driver is running sweep {space.name!r} (lock {lock.lock_file})") from None
    try:
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
    from raycl.config.records import trial_key
    from raycl.sweep.progress import ProgressTable
    from raycl.sweep.redaction import redact_url
    from raycl.sweep.study import completed_metrics, finished_trials, interrupted_trials, open_study

    phases: dict[str, float] = {}
    with _timed(phases, "optuna"):
        study = open_study(space, storage, resume=resume)
    interrupted = interrupted_trials(study)
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
                    ray_session.enter_context(_ray_connection(address, num_cpus, show_worker_logs))
            tracker = opening.result()
        console.print(
            f"sweep {space.name}: {len(finished)} finished, {len(interrupted)} interrupted, {to_run} to run\n"
            f"  optuna: {redact_url(storage)} (study {space.name})\n  mlflow: {redact_url(tracking_uri)} "
            f"(experiment raycl-{space.name}, parent run {tracker.parent_id})",
            highlight=False,
        )
        progress = ProgressTable(space, console)
        for trial in finished:
            state = "done" if trial.state == TrialState.COMPLETE else "failed"
            progress.add_earlier(trial_key(trial.number), trial.params, completed_metrics(trial), state)
        for trial in interrupted:
            progress.add_earlier(trial_key(trial.number), trial.params, {}, "interrupted")

        if to_run:
            try:
                with _timed(phases, "trials"):
                    plan, launched, trial_times = _launch(
                        space, study, interrupted, to_run, tracker, progress, out_dir=out_dir, ray_storage=ray_storage,
                        elastic=address is not None, console=console,
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
        failed = len(finished_trials(study)) - len(complete)
        tracker.end_parent("FINISHED" if len(complete) + failed >= space.budget.trials else "KILLED")
    reference = ", ".join(f"{name} {value:.4g}" for name, value in zip(summary.objectives, summary.reference))
    wall = time.perf_counter() - started
    console.print(
        f"sweep {space.name}: {len(complete)} complete, {failed} failed; Pareto set {', '.join(summary.pareto_keys)}; "
        f"hypervolume {summary.hypervolume:.4g} (reference: {reference}; {summary.reference_source})\n"
        f"  {wall:.0f} s in all: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
        + (" (mlflow and ray in parallel)" if "ray" in phases else ""),
        highlight=False,
    )
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
    )


def _launch(space: SearchSpace, study: Any, interrupted: list, to_run: int, tracker: Any, progress: Any, *,
            out_dir: Path, ray_storage: str, elastic: bool,
            console: Console) -> tuple[ResourcePlan, list[str], dict[str, dict[str, float]]]:
    """Plan on the connected Ray's nodes and run `to_run` trials through Tune."""
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

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

    defaults = {} if space.fixes("train.cpu_threads") else {"train.cpu_threads": plan.threads_per_worker}
    searcher = OptunaSearcher(study, space, interrupted, defaults)
    context = TrialContext(
        sweep=space.name,
        trials_dir=str(out_dir / "trials"),
        train_storage=f"{ray_storage}/train",
        tune_storage=f"{ray_storage}/tune/{space.name}",
        plan=plan,
        max_failures=space.budget.max_failures,
    )
    tuner = tune.Tuner(
        tune_trainable(context),
        tune_config=tune.TuneConfig(
            num_samples=to_run,
            search_alg=searcher,
            max_concurrent_trials=plan.concurrency,
            # The next trial reuses a finished trial's Tune actor, with ray, torch and (under the
            # `tune` executor) the engine already imported; Train workers are new processes.
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
            callbacks=[TrackingCallback(tracker), progress, JsonLoggerCallback()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # Under `train` the worker group restarts inside the trial (Train's FailureConfig); under
            # `tune` Tune restarts the trial, which resumes from its last stage checkpoint.
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures if plan.executor == "tune" else 0),
        ),
    )
    # Tune's own progress output would duplicate the live table; its default loggers give way to
    # the JSON one above.
    with _scoped_env({"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}), progress.live():
        tuner.fit()
    return plan, progress.launched(), progress.trial_times()


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
def _ray_connection(address: str | None, num_cpus: int | None, show_worker_logs: bool) -> Iterator[None]:
    """Joined to the cluster at `address`, or to a private local Ray; disconnected (and a local Ray
    stopped and its temp dir removed) on the way out."""
    import ray

    temp_dir = _connect_ray(address, num_cpus, show_worker_logs)
    try:
        yield
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = time.perf_counter() - started


def _connect_ray(address: str | None, num_cpus: int | None, show_worker_logs: bool) -> str | None:
    """Join the cluster at `address`, or start a private local Ray; returns the local Ray's temp dir."""
    import ray

    env = dict(TRAIN_ENV) | ({} if address else LOCAL_ONLY_ENV)
    env |= {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES) or key in env}
    options: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "log_to_driver": show_worker_logs,
        "logging_level": logging.WARNING,
    }
    for name in ("ray.tune", "ray.train", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            # Ray's own message is a page long; the usual cause on a fresh `ray start` is token auth.
            raise ConfigError(
                f"--address {address}: cannot connect to Ray ({str(error).splitlines()[0]}); is the cluster up, and if it "
                "uses token auth, is RAY_AUTH_MODE=token set here as on the cluster?"
            ) from None
        return None
    # A short private temp dir: Unix socket paths must stay under ~107 characters, and a cluster of
    # our own must not become the one that another process's bare `ray.init()` attaches to.
    temp_dir = tempfile.mkdtemp(prefix="raycl-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir, **options)
    return temp_dir
