"""The `raycl` command line: one function per subcommand; its signature is the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from raycl.config.result import TrialResult

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()


@app.callback()
def main() -> None:
    """Distributed hyperparameter sweeps for continual learning of language models."""


def fail(message: str) -> NoReturn:
    """Print one red line and exit with status 2."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def note(message: str) -> None:
    """Print one yellow line: something the user should know, that stops nothing."""
    console.print(f"[yellow]note:[/yellow] {message}", highlight=False, soft_wrap=True)


def result_table(result: TrialResult) -> Table:
    """The headline metrics of one trial."""
    table = Table(title="trial result", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("learning (1 - ppl_after/ppl_before)", f"{result.learning:.4f}"),
        ("forgetting (nats)", f"{result.forgetting:+.4f}"),
        ("backward transfer (nats)", f"{result.bwt:+.4f}"),
        ("forward transfer (nats)", f"{result.fwt:+.4f}"),
        ("average final loss (nats)", f"{result.average_final_loss:.4f}"),
        ("layer drift spread", f"{result.drift_spread:.4f}"),
        ("tokens/s", f"{result.tokens_per_s:,.0f}"),
        ("optimizer state", f"{result.optimizer_state_bytes / 2**20:.2f} MiB"),
        ("peak memory", f"{result.peak_memory_bytes / 2**20:.0f} MiB"),
        ("evaluation share of time", f"{result.eval_time_fraction:.1%}"),
        ("wall time", f"{result.wall_time_s:.1f} s"),
    ]
    info = result.method_info
    if "galore_projected_matrices" in info:
        rows.append((
            "GaLore projection",
            f"{info['galore_saving_matrices']} of {info['galore_projected_matrices']} matrices compressed "
            f"({info['galore_projected_params']:,} params projected)",
        ))
    rows.append(("trainable parameters", f"{info['trainable_params']:,}"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def matrix_table(result: TrialResult) -> Table:
    """The stage matrix R[i][j] with the retention probe beside it."""
    table = Table(title="held-out loss R[i][j] (row i: after stage i; row 0: before training)")
    table.add_column("row")
    for name in result.stage_names:
        table.add_column(name, justify="right")
    table.add_column("base (retention)", justify="right")
    for index, (row, retention) in enumerate(zip(result.stage_matrix, result.retention_losses)):
        table.add_row(str(index), *(f"{value:.3f}" for value in row), f"{retention:.3f}")
    return table


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="trial YAML (sections world/model/method/train/eval); default: the offline-world trial"),
    out: Path = typer.Option(Path("runs/trial"), "--out", help="directory for checkpoints and result.json"),
) -> None:
    """Run one continual-learning trial locally, without Ray (resumes if OUT has checkpoints)."""
    from raycl.artifacts.hub import HubUnavailableError
    from raycl.config import ConfigError, load_config
    from raycl.config.result import TrialDiverged

    try:
        trial_config = load_config(config)
    except ConfigError as error:
        fail(str(error))
    from raycl.data.check import original_note
    from raycl.training.trial import run_trial

    if message := original_note(trial_config):
        note(message)

    try:
        result = run_trial(trial_config, out)
    except (HubUnavailableError, ValueError) as error:
        fail(str(error))
    except TrialDiverged as diverged:
        console.print(f"[red]error:[/red] {diverged}; training stopped (record: {out / 'result.json'})", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(matrix_table(result))
    console.print(result_table(result))
    if result.method_info.get("galore_saving_matrices") == 0:
        console.print("[yellow]warning:[/yellow] method.galore_rank is at or above every projected matrix's smaller side: GaLore saved no memory")
    console.print(f"result: {out / 'result.json'}")


@app.command("lr-range")
def lr_range(
    config: Optional[Path] = typer.Argument(None, help="trial YAML: its model, method, batch and first stage; default: the offline-world trial"),
    out: Path = typer.Option(Path("runs/lr_range"), "--out", help="directory for lr_range.json and lr_range.png"),
    mode: str = typer.Option("restart", "--mode", help="restart: every LR from the base weights; single: one run whose LR rises"),
) -> None:
    """LR range test: the LRs at which the first stage's held-out loss falls by 1%, 5% and 10% (cached per model and stage)."""
    from raycl.artifacts.hub import HubUnavailableError
    from raycl.config import ConfigError, load_config

    if mode not in ("restart", "single"):
        fail(f"--mode: {mode!r} is not one of restart, single")
    try:
        trial_config = load_config(config)
    except ConfigError as error:
        fail(str(error))
    from raycl.training.lr_range import FIGURE_FILE, RECORD_FILE, RangeSettings, write_range_test

    try:
        record = write_range_test(trial_config, out, RangeSettings(mode=mode))
    except (HubUnavailableError, ValueError) as error:
        fail(str(error))
    table = Table(title=f"LR range test of {record.model} on {record.stage} (baseline loss {record.baseline_loss:.3f})")
    table.add_column("loss drop")
    table.add_column("lr", justify="right")
    for drop, lr in record.targets.items():
        table.add_row(f"{float(drop):.0%}", "not reached" if lr is None else f"{lr:.3g}")
    table.add_row(f"best ({record.best_drop:.1%})", f"{record.best_lr:.3g}")
    console.print(table)
    if record.diverged_at_lr is not None:
        console.print(f"the ramp stopped at lr {record.diverged_at_lr:.3g}, where the loss diverged", highlight=False)
    console.print(f"record: {out / RECORD_FILE}, figure: {out / FIGURE_FILE}", highlight=False)


@app.command()
def sweep(
    name: str = typer.Argument(..., help="search space: a name in search_spaces/ (smoke, methods, scaling_laws) or a YAML path"),
    address: Optional[str] = typer.Option(None, "--address", help="join a running Ray cluster ('auto', HOST:PORT); default: start a local Ray"),
    resume: bool = typer.Option(False, "--resume", help="finish a sweep whose driver died: finished trials kept, interrupted ones continued"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI; default sqlite OUT_ROOT/NAME/mlflow.db"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL; default sqlite OUT_ROOT/NAME/optuna.db"),
    ray_storage: Optional[str] = typer.Option(None, "--ray-storage", help="Ray Tune/Train state and checkpoints, shared by all nodes on a cluster (s3://...); default OUT_ROOT/NAME/ray"),
    out_root: Path = typer.Option(Path("runs"), "--out-root", help="where sweeps keep their files, one folder per sweep"),
    worker_logs: bool = typer.Option(False, "--worker-logs", help="stream Ray worker output into this terminal"),
    verbose: bool = typer.Option(False, "--verbose", help="show Ray's and MLflow's own log lines here instead of in OUT_ROOT/NAME/sweep.log"),
) -> None:
    """Run a sweep: Optuna proposes trials, Ray Tune schedules them, Ray Train runs them, MLflow records them."""
    from raycl.config import ConfigError
    from raycl.sweep import run_sweep

    try:
        outcome = run_sweep(
            name,
            address=address,
            resume=resume,
            tracking_uri=tracking_uri,
            storage=storage,
            ray_storage=ray_storage,
            out_root=out_root,
            show_worker_logs=worker_logs,
            verbose=verbose,
            console=console,
        )
    except ConfigError as error:
        fail(str(error))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/yellow] `raycl sweep {name} --resume` goes on from here", highlight=False)
        raise typer.Exit(130) from None
    if outcome.unfinished:
        console.print(
            f"[yellow]stopped:[/yellow] {outcome.unfinished} trials of the budget unfinished; "
            f"`raycl sweep {name} --resume` goes on from here",
            highlight=False,
        )
        raise typer.Exit(130)
    if outcome.failed and not outcome.completed:
        console.print(f"[red]error:[/red] no trial completed ({outcome.failed} failed; reasons above)", highlight=False)
        raise typer.Exit(1)


@app.command()
def validate(
    paths: Optional[list[Path]] = typer.Argument(None, help="search-space or trial-config YAML files; default: every space in search_spaces/"),
) -> None:
    """Check search spaces and trial configs without running anything: every key and value, and for a
    trial config its data files too (each exists, its first rows parse). Exit status 2 if any is malformed."""
    from raycl.config import ConfigError
    from raycl.config.space import SearchSpace, load_space_or_config, shipped_spaces
    from raycl.data.check import check_data, original_note

    def check(name: Path) -> tuple[str, list[str]]:
        """The `ok` line of a space or a trial config, and the lines under it (what its data holds)."""
        path, config = load_space_or_config(name)
        if isinstance(config, SearchSpace):
            return f"ok {path}", []
        lines = [f"  {line}" for line in check_data(config)]
        if message := original_note(config):
            lines.append(f"[yellow]note:[/yellow] {message}")
        return f"ok {path} (trial config)", lines

    malformed = False
    for name in paths or shipped_spaces():
        try:
            ok, lines = check(name)
        except ConfigError as error:
            problem = str(error)
        except (ValueError, FileNotFoundError) as error:  # a DataError is a ValueError
            problem = f"{name}: {error}"
        else:
            for line in [ok.replace("ok", "[green]ok[/green]", 1), *lines]:
                console.print(line, highlight=False, soft_wrap=True)
            continue
        malformed = True
        console.print(f"[red]error:[/red] {problem}", highlight=False, soft_wrap=True)
    if malformed:
        raise typer.Exit(2)


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="a stage checkpoint directory (OUT/checkpoints/stage_NNN)"),
    tasks: str = typer.Option("raycl_retention,raycl_acquisition", "--tasks", help="comma-separated lm-eval task names"),
    limit: Optional[int] = typer.Option(None, "--limit", help="first N examples of each task"),
    batch_size: int = typer.Option(64, "--batch-size"),
    task_path: Optional[list[str]] = typer.Option(
        None, "--task-path", help="TASK=FILE for a shipped real benchmark, or NAME=TEMPLATE:FILE for a shipped template under another name"
    ),
    include_path: Optional[Path] = typer.Option(None, "--include-path", help="a directory of your own lm-eval task YAMLs"),
    include_defaults: bool = typer.Option(False, "--include-defaults", help="also offer lm-eval's own tasks (needs the hub)"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="run the model's own Python code (never taken from the checkpoint)"),
) -> None:
    """Score a saved stage checkpoint on lm-eval tasks (also exported to CHECKPOINT/eval/hf for lm_eval)."""
    from raycl.config.benchmarks import REAL_TASKS
    from raycl.reporting.checkpoints import evaluate_checkpoint

    def task_file(pair: str) -> tuple[str, str | dict[str, str]]:
        name, _, value = pair.partition("=")
        template, colon, path = value.partition(":")
        return name, {"template": template, "path": path} if colon and template in REAL_TASKS else value

    try:
        scores = evaluate_checkpoint(
            checkpoint,
            tasks.split(","),
            limit,
            batch_size=batch_size,
            task_paths=dict(map(task_file, task_path or [])),
            include_path=str(include_path) if include_path else None,
            include_defaults=include_defaults,
            trust_remote_code=trust_remote_code,
        )
    except (ValueError, FileNotFoundError) as error:
        fail(str(error).splitlines()[0])
    table = Table(title=f"lm-eval scores of {checkpoint}")
    table.add_column("task")
    table.add_column("score", justify="right")
    for name, value in scores.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)


@app.command()
def report(
    name: str = typer.Argument(..., help="the sweep's name: its folder under OUT_ROOT"),
    out_root: Path = typer.Option(Path("runs"), "--out-root", help="where sweeps keep their files, one folder per sweep"),
    reports_dir: Path = typer.Option(Path("reports"), "--reports-dir", help="the report goes to REPORTS_DIR/NAME/"),
    laws: Optional[Path] = typer.Option(None, "--laws", help="YAML list of extra laws {name, target, expression, params}; default search_spaces/laws/NAME.yaml if present"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="bootstrap resamples per fit (0: no intervals)"),
) -> None:
    """Report a finished sweep: Pareto front, hypervolume, scaling-law fits, figures (also logged on its MLflow parent run)."""
    from raycl.reporting.report import build_report

    try:
        outcome = build_report(
            name, out_root=out_root, reports_dir=reports_dir, laws_file=laws, bootstrap=bootstrap,
            progress=lambda line: console.print(line, highlight=False),
        )
    except ValueError as error:
        fail(str(error))
    console.print(
        f"report of {name}: {outcome.complete} complete, {outcome.failed} failed trials; Pareto set {', '.join(outcome.pareto_keys)}\n"
        f"  {outcome.directory / 'report.html'} (and report.md, pareto.csv, fits.json)\n"
        f"  logged on MLflow parent run {outcome.parent_run_id} under report/",
        highlight=False,
    )

@app.command()
def predict(
    name: str = typer.Argument(..., help="a finished sweep over model sizes (e.g. scaling_laws): its folder under OUT_ROOT"),
    model: str = typer.Option(..., "--model", help="the larger model to transfer to: a ladder rung such as raycl-tiny-xl"),
    verify: bool = typer.Option(False, "--verify", help="run the picked trial and a random search at that size, and compare"),
    min_learning: Optional[float] = typer.Option(None, "--min-learning", help="required learning; default: the median of the fitted trials"),
    setting: list[str] = typer.Option([], "--set", help="KEY=VALUE fixing another searched setting (default: its most common value)"),
    search_trials: int = typer.Option(6, "--search-trials", help="trials of the random search --verify runs"),
    bootstrap: int = typer.Option(50, "--bootstrap", help="bootstrap resamples of the chosen laws (the interval)"),
    out_root: Path = typer.Option(Path("runs"), "--out-root", help="where sweeps keep their files; --verify runs go to NAME/transfer/"),
    reports_dir: Path = typer.Option(Path("reports"), "--reports-dir", help="where to read NAME/pareto.csv when the sweep's store is absent"),
    output: Optional[Path] = typer.Option(None, "--output", help="also write the record as JSON here"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and of the random search"),
) -> None:
    """Predict the learning rate and replay ratio for a larger model from a sweep's scaling-law fits over smaller ones.

    The best forgetting and learning laws (lowest held-out error), fitted on the sweep's trials of models smaller than MODEL, predict both objectives over the sweep's learning-rate x replay-ratio ranges.

    The pick is the least predicted forgetting among the points predicted to reach --min-learning, with the 95% interval of the bootstrap refits.

    --verify runs the pick and a random search at MODEL, and reports predicted vs measured (inside the interval or not) and what a full search at MODEL would cost.

    Logged on the sweep's MLflow parent run: transfer/MODEL.json and transfer.MODEL.* metrics.
    """
    import json

    from raycl.reporting import transfer
    from raycl.sweep import run_sweep

    overrides = {}
    for item in setting:
        key, separator, value = item.partition("=")
        if not separator:
            fail(f"--set {item}: expected KEY=VALUE")
        overrides[key] = yaml_value(value)
    options = {"min_learning": min_learning, "bootstrap": bootstrap, "progress": lambda line: console.print(line, highlight=False)}
    try:
        source = transfer.load_source(name, out_root, reports_dir)
        console.print(f"fitting on {source.origin}", highlight=False)
        try:
            record = transfer.predict(source, model, overrides=overrides, seed=seed, **options)
        except ValueError:
            if not verify:
                raise
            record = None  # the size and base loss of MODEL come from the verification runs
        if verify:
            record = transfer.verify(source, model, record, overrides=overrides, search_trials=search_trials, out_root=out_root,
                                     seed=seed, run=lambda path, root: run_sweep(path, out_root=root, console=console), **options)
    except ValueError as error:
        fail(str(error))
    assert record is not None  # left None only when verifying, which replaces it
    logged = transfer.log_on_parent(source, record)
    console.print(transfer.describe(record) + (f"\n  logged on MLflow parent run {source.parent_run_id}" if logged else ""),
                  highlight=False, markup=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(record, indent=2))


def yaml_value(text: str) -> Any:
    """A --set value as YAML reads it (40 -> int, 0.25 -> float, full -> str)."""
    import yaml

    return yaml.safe_load(text)


@app.command()
def ui(
    name: str = typer.Argument(..., help="the sweep's name: its folder under OUT_ROOT"),
    out_root: Path = typer.Option(Path("runs"), "--out-root", help="where sweeps keep their files, one folder per sweep"),
    host: str = typer.Option("127.0.0.1", "--host", help="address both UIs listen on; any other than 127.0.0.1 opens them to that network"),
    mlflow_port: int = typer.Option(5000, "--mlflow-port"),
    optuna_port: int = typer.Option(8080, "--optuna-port"),
) -> None:
    """Serve a local sweep's MLflow UI and Optuna dashboard until Ctrl-C (logs in OUT_ROOT/NAME/ui/)."""
    from raycl.config import ConfigError
    from raycl.sweep.ui import serve, servers

    sweep_dir = out_root / name
    try:
        found = servers(sweep_dir, host, mlflow_port, optuna_port)
        console.print("starting " + ", ".join(f"{server.name} on {server.host} port {server.port}" for server in found), highlight=False, soft_wrap=True)
        serve(found, sweep_dir / "ui", lambda server: console.print(f"{server.name}: {server.url}  (Ctrl-C stops)", highlight=False, soft_wrap=True))
    except (ConfigError, RuntimeError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)


if __name__ == "__main__":
    app()
