"""The Ray session a sweep runs in: joining a cluster or starting a private local Ray (its environment,
temp dir and loopback binding), signals, shutdown, the cleanup after a killed driver, and where Ray's and
MLflow's own log lines go."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raycl.adapters import ray_internals
from raycl.config import ConfigError
from raycl.sweep.redaction import is_secret

# Ray Train knobs that cut the fixed cost of a Train run inside a Tune trial (measured here: ~15 s ->
# 11-13 s per trial); a value already in the environment wins.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_METRICS_ENABLED": "0"}
LOCAL_ONLY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}  # spot preemption only exists on clouds
FORWARDED_ENV_PREFIXES = ("RAYCL_", "HF_", "MLFLOW_ALLOW_FILE_STORE")
RAY_TEMP_PREFIX = "raycl-ray-"
RAY_TEMP_RECORD = ".ray_temp_dir"  # in the sweep's folder: the temp dir of the local Ray it runs on
LOG_FILE = "sweep.log"  # in the sweep's folder: Ray's and MLflow's own log lines, unless --verbose
LIBRARY_LOGGERS = ("ray", "mlflow", "py.warnings")  # each library's root logger; Python warnings too


@contextlib.contextmanager
def ray_connection(address: str | None, num_cpus: int | None, show_worker_logs: bool, out_dir: Path) -> Iterator[None]:
    """Joined to the cluster at `address`, or to a private local Ray; disconnected (and a local Ray
    stopped and its temp dir removed) on the way out."""
    import ray

    temp_dir = connect(address, num_cpus, show_worker_logs, out_dir)
    _route_sigterm_to_ctrl_c()  # again: ray.init installed its own handler, which aborts the driver
    try:
        yield
    finally:
        ray.shutdown()
        if temp_dir is not None:
            _stop_local_ray(temp_dir, out_dir)


def connect(address: str | None, num_cpus: int | None, show_worker_logs: bool, out_dir: Path) -> str | None:
    """Join the cluster at `address`, or start a private local Ray; returns the local Ray's temp dir.

    Ray writes a job's runtime env, env_vars included, in clear to runtime_env_agent.log, so no
    secret travels that way: a local Ray's workers inherit this process's environment, and on a
    cluster variables named like credentials (HF_TOKEN) are left out and must be set on the nodes.
    """
    import ray

    knobs = TRAIN_ENV | ({} if address else LOCAL_ONLY_ENV)
    knobs = {key: os.environ.get(key, value) for key, value in knobs.items()}
    options: dict[str, Any] = {"log_to_driver": show_worker_logs, "logging_level": logging.WARNING}
    if address:
        forwarded = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}
        withheld = sorted(key for key, value in forwarded.items() if is_secret(key, value))
        if withheld:
            logging.getLogger(__name__).warning(
                "not forwarded to the cluster (set them on its nodes): %s", ", ".join(withheld)
            )
        env = knobs | {key: value for key, value in forwarded.items() if key not in withheld}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **options)
        except ConnectionError as error:
            # Ray's own message is a page long; the usual cause on a fresh `ray start` is token auth.
            raise ConfigError(
                f"--address {address}: cannot connect to Ray ({str(error).splitlines()[0]}); is the cluster up, "
                "and if it uses token auth, is RAY_AUTH_MODE=token set here as on the cluster?"
            ) from None
        return None
    # A short private temp dir: Unix socket paths must stay under ~107 characters, and a cluster of
    # our own must not become the one that another process's bare `ray.init()` attaches to. It is
    # recorded so that the next driver can clean up after this one if it is killed.
    temp_dir = tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX, dir="/tmp")
    (out_dir / RAY_TEMP_RECORD).write_text(temp_dir)
    with scoped_env(knobs), ray_internals.loopback_only():
        ray_internals.init_local(temp_dir, num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **options)
    return temp_dir


def _stop_local_ray(temp_dir: str, out_dir: Path) -> None:
    """Delete a local Ray's temp dir (its logs) and its record, once it has shut down."""
    shutil.rmtree(temp_dir, ignore_errors=True)
    (out_dir / RAY_TEMP_RECORD).unlink(missing_ok=True)


def clean_up_after_a_dead_driver(out_dir: Path) -> None:
    """Delete the local Ray temp dir (logs, session files) a killed driver of this sweep left behind.

    Called with the sweep's lock held, so that driver is gone; its Ray processes died with it.
    """
    record = out_dir / RAY_TEMP_RECORD
    if record.exists():
        temp_dir = record.read_text().strip()
        if Path(temp_dir).name.startswith(RAY_TEMP_PREFIX):
            shutil.rmtree(temp_dir, ignore_errors=True)
        record.unlink()


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
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


@contextlib.contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """`values` set in the environment for the block, the previous values back afterwards."""
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
def library_logs(log_file: Path, verbose: bool) -> Iterator[None]:
    """Ray's and MLflow's own log lines (Tune's snapshot warnings, Ray's token-authentication notice,
    MLflow's table creation, Python warnings) go to `log_file` during the block, not to the terminal,
    where the sweep prints its own lines; with `verbose` they stay on the terminal."""
    import ray  # noqa: F401  (sets up the "ray" logger's handler, which `_to_file` swaps)

    # Tune and Train at WARNING (their INFO lines are many); MLflow's notes kept in the file.
    levels = {
        "ray.tune": logging.WARNING,
        "ray.train": logging.WARNING,
        "mlflow": logging.WARNING if verbose else logging.INFO,
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(_logger_levels(levels))
        if not verbose:
            stack.enter_context(_to_file(log_file))
        yield


@contextlib.contextmanager
def _logger_levels(levels: dict[str, int]) -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _to_file(log_file: Path) -> Iterator[None]:
    """The library loggers' records, and Python warnings, to `log_file` alone during the block.

    Each library logs through its root logger's own handler (Ray's is set up at `import ray`, MLflow's
    at `import mlflow` unless MLFLOW_CONFIGURE_LOGGING is off), so those handlers are swapped for the
    file's and put back afterwards.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))  # until Ray sets its own
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers[:] = [handler]
        logger.propagate = False
    showwarning = warnings.showwarning
    logging.captureWarnings(True)
    try:
        with scoped_env({"MLFLOW_CONFIGURE_LOGGING": "false"}):  # an `import mlflow` in the block keeps the file
            yield
    finally:
        logging.captureWarnings(False)
        warnings.showwarning = showwarning
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers[:] = handlers
            logger.propagate = propagate
        handler.close()


class _TrialErrorLogs(logging.Filter):
    """Tune's logs of failed trials: a traceback pages long each, and a list of them at the end."""

    PREFIXES = ("Trial task failed for trial", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


@contextlib.contextmanager
def without_tunes_trial_error_logs() -> Iterator[None]:
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
