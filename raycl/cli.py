"""The `raycl` command line: one function per subcommand; its signature is the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()


@app.callback()
def main() -> None:
    """Distributed hyperparameter sweeps for continual learning of language models."""


def fail(message: str) -> None:
    """Print one red line and exit with status 2."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def result_table(result: dict[str, Any]) -> Table:
    """The headline metrics of one trial."""
    table = Table(title="trial result", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("learning (1 - ppl_after/ppl_before)", f"{result['learning']:.4f}"),
        ("forgetting (nats)", f"{result['forgetting']:+.4f}"),
        ("backward transfer (nats)", f"{result['bwt']:+.4f}"),
        ("forward transfer (nats)", f"{result['fwt']:+.4f}"),
        ("average final loss (nats)", f"{result['average_final_loss']:.4f}"),
        ("layer drift spread", f"{result['drift_spread']:.4f}"),
        ("tokens/s", f"{result['tokens_per_s']:,.0f}"),
        ("optimizer state", f"{result['optimizer_state_bytes'] / 2**20:.2f} MiB"),
        ("peak memory", f"{result['peak_memory_bytes'] / 2**20:.0f} MiB"),
        ("evaluation share of time", f"{result['eval_time_fraction']:.1%}"),
        ("wall time", f"{result['wall_time_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def matrix_table(result: dict[str, Any]) -> Table:
    """The stage matrix R[i][j] with the retention probe beside it."""
    table = Table(title="held-out loss R[i][j] (row i: after stage i; row 0: before training)")
    table.add_column("row")
    for name in result["stage_names"]:
        table.add_column(name, justify="right")
    table.add_column("base (retention)", justify="right")
    for index, (row, retention) in enumerate(zip(result["stage_matrix"], result["retention_losses"])):
        table.add_row(str(index), *(f"{value:.3f}" for value in row), f"{retention:.3f}")
    return table


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="trial YAML (sections world/model/method/train/eval); default: the offline-world trial"),
    out: Path = typer.Option(Path("runs/trial"), "--out", help="directory for checkpoints and result.json"),
) -> None:
    """Run one continual-learning trial locally, without Ray (resumes if OUT has checkpoints)."""
    from raycl.config import ConfigError, load_config
    from raycl.hub import HubUnavailableError

    try:
        trial_config = load_config(config)
    except ConfigError as error:
        fail(str(error))
    from raycl.training.trial import run_trial

    try:
        result = run_trial(trial_config, out)
    except (HubUnavailableError, ValueError) as error:
        fail(str(error))
    console.print(matrix_table(result))
    console.print(result_table(result))
    console.print(f"result: {out / 'result.json'}")


if __name__ == "__main__":
    app()
