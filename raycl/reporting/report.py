"""`raycl report NAME`: a finished sweep's frontier, scaling-law fits and figures, written and logged.

    raycl sweep smoke && raycl report smoke              # runs/smoke/report/report.html, report.md, ...
    raycl report scaling_laws --bootstrap 500 --laws my_laws.yaml

The sweep is read where `raycl sweep` left it. MLflow (OUT_ROOT/NAME/mlflow.db) holds every trial's
config, final metrics, curves and stage matrix, whichever node the trial ran on; the Optuna study
(optuna.db beside it, when present) gives the trial states and the completion order that the sweep's
hypervolume history used, and fills any final metric a child run lacks. The trial folders
(OUT_ROOT/NAME/trials/) only stand in for stage matrices that MLflow's artifact store no longer has,
e.g. after the out-root was copied elsewhere.

Written to OUT_ROOT/NAME/report/ (or a folder of one's choice): report.html (self-contained), report.md with its
PNGs, pareto.csv
(every finished trial, with `feasible` and `pareto` columns) and fits.json; all of it is also logged
on the sweep's MLflow parent run under `report/`, and each fitted parameter as a metric
`fit.TARGET.LAW.PARAM` (plus `fit.TARGET.LAW.heldout_error`, the mean |relative error| on the
largest size, and `fit.TARGET.LAW.loso_error`, the registered protocol's leave-one-size-out score).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from raycl.analysis import figures, render, scaling
from raycl.analysis.fits import FitResult, parallel_fits
from raycl.analysis.frontier import Frontier, space_frontier
from raycl.analysis.render import Block, Code, Heading, Image, Table, Text
from raycl.analysis.reproduction import Comparison, compare_tables, read_table
from raycl.analysis.seeds import seed_intervals
from raycl.config import TrialConfig
from raycl.config.base import dotted
from raycl.config.records import EVAL_PREFIX, REPLICATES_ATTR, Artifacts, Tags
from raycl.config.result import BENCHMARK_PREFIX, StageRecord, is_reported_metric
from raycl.config.space import SHIPPED_DIR, SearchSpace, load_space

_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
CONVENTIONS = (
    "learning = 1 - ppl_after / ppl_before on held-out new data (higher is better; saturates near 1), learning_nats "
    "= loss_before - loss_after on it; forgetting = loss_after - loss_before on held-out base data, in nats (lower is "
    "better; <= 0 means the base loss did not rise), forgetting_fraction = forgetting / (L_init - loss_before), the "
    "share of pretraining progress undone (L_init = ln V, the untrained model's loss). Model size N counts "
    "non-embedding parameters."
)


@dataclass(frozen=True, eq=False)
class SweepData:
    """A sweep as read back: its space, the parent run and one row per finished trial."""

    name: str
    space: SearchSpace
    space_text: str  # the space's YAML as the sweep ran it
    parent_run_id: str
    recorded_pareto: list[str]  # the Pareto set the sweep put on its parent run
    # Complete trials in completion order, then stopped early and failed ones: config (dotted keys), final
    # metrics, under "sampled" the searched parameters as sampled (a conditional one only where its condition
    # held), and for a trial stopped early under "stopped" its PrunedRecord (stage, objectives there).
    rows: list[dict[str, Any]]
    curves: dict[str, dict[str, list[tuple[int, float]]]]  # trial -> metric -> (step, value)
    stage_records: dict[str, dict[str, Any]]  # trial -> stage_matrix.json

    @property
    def complete(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["state"] == "COMPLETE"]

    def count(self, state: str) -> int:
        return sum(row["state"] == state for row in self.rows)


@dataclass(frozen=True)
class ReportOutcome:
    directory: Path
    files: list[Path]
    parent_run_id: str
    pareto_keys: list[str]
    complete: int
    failed: int


@contextlib.contextmanager
def _quiet_artifacts() -> Iterator[None]:
    """No MLflow progress bar per artifact download (one per trial would flood the terminal)."""
    saved = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR)
        else:
            os.environ[_PROGRESS_BAR] = saved


def _study_trials(path: Path, name: str) -> dict[int, Any]:
    """Optuna trial number -> frozen trial, or {} without a study file."""
    if not path.is_file():
        return {}
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{path.resolve()}")
    return {trial.number: trial for trial in study.get_trials(deepcopy=False)}


def _artifact(client: Any, run_id: str, path: str, scratch: str) -> str | None:
    """A run's artifact as text, or None where the artifact store lacks it (e.g. a copied out-root)."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, scratch)).read_text()
    except (MlflowException, OSError):
        return None


def _space(client: Any, parent_id: str, name: str, scratch: str) -> tuple[SearchSpace, str]:
    """The space the sweep ran with (its copy on the parent run), else search_spaces/NAME.yaml; and its YAML."""
    text = _artifact(client, parent_id, Artifacts.SEARCH_SPACE, scratch)
    if text is None:
        space = load_space(name)
        return space, space.text
    return SearchSpace.model_validate(yaml.safe_load(text)), text


def _local_result(trial_dir: Path) -> dict[str, Any] | None:
    """The trial folder's result.json, when this machine has it (e.g. after MLflow's artifacts were lost)."""
    path = trial_dir / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _trial_config(client: Any, run_id: str, trial_dir: Path, scratch: str) -> TrialConfig:
    """The config a trial ran with, typed as it was (never guessed back from MLflow's string params)."""
    text = _artifact(client, run_id, Artifacts.TRIAL_CONFIG, scratch)
    if text is not None:
        return TrialConfig.model_validate_json(text)
    result = _local_result(trial_dir)
    if result is None:
        raise ValueError(f"MLflow run {run_id}: no {Artifacts.TRIAL_CONFIG}, and no {trial_dir / 'result.json'}")
    return TrialConfig.model_validate(result["config"])


def _stage_record(client: Any, run_id: str, trial_dir: Path, scratch: str) -> dict[str, Any] | None:
    """The trial's stage record: MLflow's copy, else its result.json."""
    text = _artifact(client, run_id, Artifacts.STAGE_RECORD, scratch)
    data = json.loads(text) if text is not None else _local_result(trial_dir)
    return None if data is None else StageRecord.model_validate(data).model_dump()


def _row(child: Any, trial: Any, config: TrialConfig) -> tuple[dict[str, Any], float]:
    """A child run (and its study trial, if any) as a table row, with its completion time."""
    settings = dotted(config.model_dump(mode="json"))
    if trial is not None:
        state = trial.state.name
        finished = trial.datetime_complete.timestamp() if trial.datetime_complete else 0.0
        sampled = dict(trial.params)
        study_metrics = {k: v for k, v in trial.user_attrs.items() if is_reported_metric(k)}
        stopped = trial.user_attrs.get(Tags.PRUNED)
    else:
        logged = child.info.status == "FINISHED" and child.data.tags.get(Tags.FINAL_LOGGED) == "true"
        state = "COMPLETE" if logged else {"FAILED": "FAIL"}.get(child.info.status, child.info.status)
        state = "PRUNED" if Tags.PRUNED in child.data.tags else state
        stopped = {"stage": int(child.data.tags[Tags.PRUNED])} if state == "PRUNED" else None
        finished = (child.info.end_time or 0) / 1000
        names = [n for n in child.data.tags.get(Tags.SEARCHED, "").split(",") if n]
        sampled = {n: settings[n] for n in names if n in settings}
        study_metrics = {}
    metrics = {k: v for k, v in child.data.metrics.items() if not k.startswith(EVAL_PREFIX)}
    row = {
        "trial": child.data.tags[Tags.TRIAL],
        "run_id": child.info.run_id,
        "state": state,
        **settings,
        **sampled,
        **study_metrics,
        **metrics,
    }
    if row.get("lr") is not None:
        # The LR it trained at: under train.lr_at_loss_drop the config's train.lr is only the default.
        row["train.lr"] = row["lr"]
    replicates = trial.user_attrs.get(REPLICATES_ATTR) if trial is not None else None
    return row | {"sampled": sampled, "replicates": replicates} | (
        {"stopped": stopped} if state == "PRUNED" else {}
    ), finished


def _prepend_start(curves: dict[str, list[tuple[int, float]]], record: dict[str, Any]) -> None:
    """Add step 0 from the stage matrix's first row, defined as the logged curves are (mean over stages)."""
    start = {
        f"{EVAL_PREFIX}new_loss": float(np.mean(record["stage_matrix"][0])),
        f"{EVAL_PREFIX}base_loss": record["retention_losses"][0],
    }
    for metric, value in start.items():
        if metric in curves and not any(step == 0 for step, _ in curves[metric]):
            curves[metric].insert(0, (0, float(value)))


def load_sweep(name: str, out_root: str | Path = "runs") -> SweepData:
    """Read sweep `name` from OUT_ROOT/NAME; a one-line ValueError when there is no such sweep."""
    from mlflow.tracking import MlflowClient

    sweep_dir = Path(out_root) / name
    db = sweep_dir / "mlflow.db"
    if not db.is_file():
        raise ValueError(f"{db}: no such sweep (run `raycl sweep {name}` first, or pass --out-root)")
    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    experiment = client.get_experiment_by_name(f"raycl-{name}")
    parent_filter = f"tags.`{Tags.ROLE}` = 'parent'"
    parents = client.search_runs([experiment.experiment_id], filter_string=parent_filter) if experiment else []
    if not parents:
        raise ValueError(f"{db}: no parent run of sweep {name!r} in MLflow experiment raycl-{name}")
    assert experiment is not None  # the parent run was found in it
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=50_000,
    )
    study = _study_trials(sweep_dir / "optuna.db", name)
    rows, completed_at, curves, stage_records = [], {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch, _quiet_artifacts():
        space, space_text = _space(client, parent.info.run_id, name, scratch)
        for child in children:
            key, run_id = child.data.tags[Tags.TRIAL], child.info.run_id
            trial_dir = sweep_dir / "trials" / key
            config = _trial_config(client, run_id, trial_dir, scratch)
            row, completed_at[key] = _row(child, study.get(int(child.data.tags[Tags.NUMBER])), config)
            if row["state"] not in FINISHED_STATES:
                continue  # interrupted: `raycl sweep --resume` finishes it
            if row["replicates"] is None and (text := _artifact(client, run_id, Artifacts.REPLICATES, scratch)):
                row["replicates"] = json.loads(text)
            rows.append(row)
            curves[key] = {
                m: [(p.step, p.value) for p in client.get_metric_history(run_id, m)] for m in figures.CURVE_METRICS
            }
            record = _stage_record(client, run_id, trial_dir, scratch) if row["state"] == "COMPLETE" else None
            if record is not None:
                stage_records[key] = record
                _prepend_start(curves[key], record)
    rows.sort(key=lambda row: (row["state"] != "COMPLETE", completed_at[row["trial"]], row["trial"]))
    recorded = parent.data.tags.get(Tags.PARETO_TRIALS, "")
    return SweepData(
        name=name,
        space=space,
        space_text=space_text,
        parent_run_id=parent.info.run_id,
        recorded_pareto=recorded.split(",") if recorded else [],
        rows=rows,
        curves=curves,
        stage_records=stage_records,
    )


def default_laws_file(name: str) -> Path | None:
    """search_spaces/laws/NAME.yaml (working directory first, then the repository's), if it exists.

    A subfolder, because every search_spaces/*.yaml is validated as a search space.
    """
    for directory in (Path.cwd() / "search_spaces", SHIPPED_DIR):
        candidate = directory / "laws" / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if np.isfinite(value) else ""
    return "" if value is None else str(value)


def pareto_csv(
    rows: list[dict[str, Any]],
    objectives: list[str],
    feasible: dict[str, bool],
    pareto: set[str],
    parameters: list[str],
) -> str:
    """Every finished trial: key, state, objectives (the mean over seeds, then the seeds and each objective's 95%
    interval over them), feasible, pareto, model size, the size-comparable metrics, parameter counts and tokens,
    sampled params."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    extra = [
        "learning_nats",
        "forgetting_fraction",
        "base_loss_before",
        "base_loss_after",
        "num_params",
        "num_params_non_embedding",
        "new_tokens",
        "train_tokens",
    ]
    spread = ["seeds", *(f"{name}_ci_{end}" for name in objectives for end in ("low", "high"))]
    writer.writerow(["trial", "state", *objectives, *spread, "feasible", "pareto", "model_size", *extra, *parameters])
    for row, size in zip(rows, scaling.model_sizes(rows).tolist()):
        key = row["trial"]
        intervals = seed_intervals(row.get("replicates"), objectives)
        cells = [
            *(row.get(name) for name in objectives),
            *(intervals.get(name) for name in spread),
            feasible.get(key, False),
            key in pareto,
            size,
            *(row.get(name) for name in extra),
            *(row["sampled"].get(p) for p in parameters),
        ]
        writer.writerow(
            [key, row["state"], *("" if c is None or (isinstance(c, float) and np.isnan(c)) else c for c in cells)]
        )
    return buffer.getvalue()


def _interval(fit: FitResult, name: str) -> str:
    low, high = fit.ci_low[name], fit.ci_high[name]
    band = f" [{low:.3g}, {high:.3g}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{name}={fit.params[name]:.4g}{band}"


def _ranking_blocks(scores: scaling.Scoreboard | None) -> list[Block]:
    """The protocol's ranking of laws and baselines, and the best law against the best baseline."""
    if scores is None:
        return []
    rows = [
        [str(rank), score.name, score.kind, f"{score.loso_error:.1%}", f"{score.loso_abs_error:.3g}"]
        for rank, score in enumerate(scores.ranking, 1)
    ]
    unscored = [s for s in [*scores.laws, *scores.baselines] if not s.complete]
    blocks: list[Block] = [
        Table(["rank", "predictor", "kind", "leave-one-size-out error", "absolute error"], rows),
        *(Text(f"Not ranked: {s.name}: {'; '.join(s.notes) or 'no prediction'}") for s in unscored),
    ]
    comparison = scores.comparison
    if comparison is not None:
        verdict = (
            "the law is better"
            if comparison.ci_high < 0
            else "the baseline is better"
            if comparison.ci_low > 0
            else "no difference is established"
        )
        blocks.append(
            Text(
                f"Best law {comparison.law} minus best baseline {comparison.baseline}: {comparison.mean:+.2%} "
                f"[{comparison.ci_low:+.2%}, {comparison.ci_high:+.2%}] ({comparison.level:.0%} paired bootstrap "
                f"over trials, {comparison.resamples} resamples): {verdict}."
            )
        )
    return blocks


def _fit_blocks(fits: dict[str, scaling.TargetFits], bootstrap: int) -> list[Block]:
    """The scaling-law section; none where no law could be fitted (one model size: fits.json says why)."""
    if not any(result.laws for result in fits.values()):
        return []
    sha = next((result.scores.protocol_sha256 for result in fits.values() if result.scores is not None), "")
    blocks: list[Block] = [
        Heading("Scaling laws"),
        Text(
            f"Symbols: {', '.join(f'{s} = {c}' for s, c in scaling.SYMBOLS.items())}. Each law is fitted by "
            "minimizing the summed Huber loss (delta 1e-3) of log-space residuals with bounded L-BFGS-B from a grid "
            f"of initial values; intervals are bootstrap 95% percentile intervals over {bootstrap} resamples of the "
            "trials, each refitted from the full-data optimum and from random grid points. Laws and the trivial "
            "baselines are ranked by the registered protocol (raycl/analysis/protocol.yaml, sha256 "
            f"{sha[:12]}...): each size held out in turn, the mean |relative error| of the "
            "objective per trial (forgetting or learning itself), beside it the mean absolute error; the best law "
            "is called better than the best baseline only when the paired bootstrap interval of their difference "
            "excludes zero. Extrapolation check: refit without the largest model size, predict it (mean |relative "
            "error| of the fitted quantity; beside it the mean absolute error in its units)."
        ),
    ]
    for target, result in fits.items():
        used = len(result.keys)
        blocks += [
            Heading(target, 3),
            Text(
                f"The laws predict {scaling.TARGETS[target]}. {used} of {result.trials} finished trials fitted "
                f"({result.excluded_incomplete} failed or lacking a variable); model sizes: "
                f"{', '.join(f'{s:.3g}' for s in result.sizes) or 'none'}."
            ),
        ]
        blocks += [Text(note) for note in result.notes]
        if not result.laws:
            continue
        blocks += _ranking_blocks(result.scores)
        table = []
        for law_fit in result.laws:
            extrapolation = law_fit.extrapolation
            table.append(
                [
                    law_fit.law.name,
                    law_fit.law.expression,
                    ", ".join(_interval(law_fit.fit, p) for p in law_fit.law.params) if law_fit.fit else "",
                    f"{extrapolation.held_out_size:.3g}" if extrapolation else "",
                    f"{extrapolation.mean_abs_rel_error:.1%} "
                    f"({np.mean(np.abs(extrapolation.predicted - extrapolation.observed)):.3g})"
                    if extrapolation
                    else "",
                    "; ".join(law_fit.notes),
                ]
            )
        header = [
            "law",
            "expression",
            "parameters (all trials) [95% CI]",
            "held-out N",
            "held-out error (absolute)",
            "notes",
        ]
        blocks.append(Table(header, table))
        panels = [figures.fit_figure(result, law_fit) for law_fit in result.laws if law_fit.fit is not None]
        if panels:
            blocks.append(
                Image(
                    f"fits_{target}",
                    render.png(render.draw_fits(panels)),
                    f"{target}: each law's fit without the largest size (with a held-out check; else on all "
                    "trials) and its 95% bootstrap band; points rescaled by the law to the other variables' "
                    "medians; stars: the held-out largest size.",
                )
            )
    return blocks


def _frontier_blocks(sweep: SweepData, front: Frontier) -> list[Block]:
    """Pareto figure and table (with two objectives or more) and the hypervolume history."""
    space, complete = sweep.space, sweep.complete
    objectives = dict(space.objectives)
    blocks: list[Block] = []
    pareto = set(front.pareto_keys)
    if len(objectives) >= 2:
        by_size = render.several_sizes(scaling.model_sizes(complete))
        blocks += [
            Heading("Pareto front"),
            Image(
                "pareto",
                render.png(render.draw_pareto(figures.pareto_figure(complete, front))),
                f"All complete trials{' coloured by model size' if by_size else ''}; circled: the Pareto set "
                f"({len(pareto)} of {len(complete)}).",
            ),
        ]
        if sweep.recorded_pareto and pareto != set(sweep.recorded_pareto):
            blocks.append(
                Text(
                    f"Note: the sweep recorded the Pareto set {', '.join(sweep.recorded_pareto)}; recomputed "
                    "from the stored metrics it differs (was the sweep resumed since?)."
                )
            )
    blocks += _trials_table(sweep, pareto)
    blocks += [
        Heading("Hypervolume"),
        Text(f"Final hypervolume {front.hypervolume:.4g} over {len(complete)} complete trials."),
        Image(
            "hypervolume",
            render.png(render.draw_hypervolume(front)),
            "Hypervolume of the first n complete trials, in completion order, against the reference point.",
        ),
    ]
    return blocks


def _trials_table(sweep: SweepData, pareto: set[str]) -> list[Block]:
    """Every finished trial: state, objectives, searched parameters, model size where sizes vary, MLflow run id."""
    objectives, parameters = list(sweep.space.objectives), list(sweep.space.parameters)
    sizes = scaling.model_sizes(sweep.rows)
    by_size = render.several_sizes(sizes)
    header = ["trial", "state", *objectives, *parameters, *(["model size"] if by_size else []), "Pareto", "MLflow run"]
    rows = [
        [
            row["trial"],
            row["state"],
            *(_format(row.get(o)) for o in objectives),
            *(_format(row["sampled"].get(p)) for p in parameters),
            *([_format(size)] if by_size else []),
            "yes" if row["trial"] in pareto else "",
            row["run_id"],
        ]
        for row, size in zip(sweep.rows, sizes.tolist())
    ]
    intro = f"Every finished trial, in completion order; each MLflow run is a child of run {sweep.parent_run_id}."
    return [Heading("Trials"), Text(intro), Table(header, rows)]


def _method_blocks(sweep: SweepData, pareto: set[str]) -> list[Block]:
    """Per update method: trials, Pareto trials, mean and best of each objective; none with a single method."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in sweep.complete:
        by_method.setdefault(str(row.get("method.name")), []).append(row)
    if len(by_method) < 2:
        return []
    directions = sweep.space.objectives
    header = ["method", "trials", "Pareto", *(f"{o} {stat}" for o in directions for stat in ("mean", "best"))]
    table = []
    for method, rows in by_method.items():
        cells = [method, str(len(rows)), str(sum(row["trial"] in pareto for row in rows))]
        for objective, direction in directions.items():
            values = [float(row[objective]) for row in rows if row.get(objective) is not None]
            best = max(values) if direction == "maximize" else min(values)
            cells += [_format(float(np.mean(values))), _format(best)]
        table.append(cells)
    return [Heading("Methods"), Text("The complete trials of each update method."), Table(header, table)]


def _benchmark_blocks(sweep: SweepData) -> list[Block]:
    """Each trial's lm-eval score changes over the stream, in points; none where no benchmark ran."""
    deltas = sorted(
        {key for row in sweep.complete for key in row if key.startswith(BENCHMARK_PREFIX) and key.endswith("_delta")}
    )
    if not deltas:
        return []
    tasks = [key.removeprefix(BENCHMARK_PREFIX).removesuffix("_delta") for key in deltas]
    rows = [[row["trial"], *(_format(row.get(key)) for key in deltas)] for row in sweep.complete]
    return [
        Heading("Benchmarks"),
        Text(
            "Change of each lm-eval task's accuracy from before the stream to after it, in points "
            "(100 x accuracy; eval.benchmarks.limit items per task, so small changes are noise)."
        ),
        Table(["trial", *tasks], rows),
    ]


def _space_blocks(sweep: SweepData) -> list[Block]:
    return [
        Heading("Search space"),
        Text("The space as the sweep ran it (command-line overrides applied)."),
        Code(sweep.space_text, "yaml"),
    ]


def _trial_blocks(sweep: SweepData, pareto: set[str], sizes: list[float]) -> list[Block]:
    """Stage matrices of the Pareto trials and every trial's learning curves."""
    blocks: list[Block] = [Heading("Stage matrices of the Pareto trials")]
    maps = [
        figures.stage_heatmap(key, sweep.stage_records[key]) for key in sorted(pareto) if key in sweep.stage_records
    ]
    if maps:
        blocks += [
            Text(
                "R[i][j]: held-out loss on stage j after training stage i (row 'before': the base model; beside "
                "each row, the held-out loss on the base data). Values rising down a column are forgetting of that "
                "stage; the diagonal is learning."
            ),
            Image("stage_matrices", render.png(render.draw_heatmaps(maps)), "Stage matrices, one per Pareto trial."),
        ]
    else:
        blocks.append(Text("No stage matrix available for the Pareto trials."))
    keys = [row["trial"] for row in sweep.complete]
    panels = figures.learning_curves(
        {key: sweep.curves.get(key, {}) for key in keys}, dict(zip(keys, sizes)), sorted(pareto)
    )
    return blocks + [
        Heading("Learning curves"),
        Image(
            "learning_curves",
            render.png(render.draw_curves(panels)),
            "Held-out loss on the new data and on the base data at each evaluation.",
        ),
    ]


def _stopped_blocks(sweep: SweepData) -> list[Block]:
    """The trials early stopping ended: where, among how many, their objectives there and their parameters."""
    stopped = [row for row in sweep.rows if row["state"] == "PRUNED"]
    if not stopped:
        return []
    objectives, parameters = list(sweep.space.objectives), list(sweep.space.parameters)
    table = [
        [
            row["trial"],
            str(row["stopped"].get("stage", "")),
            str(row["stopped"].get("at_rung", "")),
            *(_format(row["stopped"].get("values", {}).get(o)) for o in objectives),
            *(_format(row["sampled"].get(p)) for p in parameters),
        ]
        for row in stopped
    ]
    return [
        Heading("Stopped early"),
        Text(
            f"{len(stopped)} trials were stopped at a stage end (early_stopping, rungs "
            f"{sweep.space.early_stopping.rungs}, "
            f"reduction {sweep.space.early_stopping.reduction:g}): each ranked outside the top 1/reduction of the "
            "trials that had reached "
            "that stage, by non-dominated sorting of the objectives so far and crowding distance. They are PRUNED in "
            "Optuna and enter neither the Pareto front nor the fits."
        )
        if sweep.space.early_stopping
        else Text(
            f"{len(stopped)} trials were stopped at a stage end; they enter neither the Pareto front nor the fits."
        ),
        Table(
            ["trial", "stopped after stage", "trials at that stage", *(f"{o} there" for o in objectives), *parameters],
            table,
        ),
    ]


def _sensitivity_blocks(sweep: SweepData) -> list[Block]:
    space, objectives, parameters = sweep.space, list(sweep.space.objectives), list(sweep.space.parameters)
    log_parameters = [name for name, p in space.parameters.items() if p.log_scale]
    choices = {name: p.choices for name, p in space.parameters.items() if p.type == "categorical"}
    sampled = [
        {"trial": row["trial"], **row["sampled"], **{o: row.get(o) for o in objectives}} for row in sweep.complete
    ]
    panels = figures.sensitivity(sampled, objectives, parameters, log_parameters, choices)
    panels = [panel for panel in panels if len(panel.x)]
    if not panels:
        return []
    rho = {(p.objective, p.parameter): p.rank_correlation for p in panels}
    numeric = [p for p in parameters if all(np.isfinite(rho.get((o, p), np.nan)) for o in objectives)]
    intro = "Each objective against each searched parameter over the complete trials that set it"
    blocks: list[Block] = [
        Heading("Sensitivity"),
        Text(intro + ("; Spearman rank correlation for numeric parameters." if numeric else ".")),
    ]
    if numeric:
        blocks.append(
            Table(
                ["parameter", *(f"Spearman ρ with {o}" for o in objectives)],
                [[p, *(_format(rho[(o, p)]) for o in objectives)] for p in numeric],
            )
        )
    figure = render.png(render.draw_sensitivity(panels))
    return blocks + [Image("sensitivity", figure, "Objectives against searched parameters.")]


def build_blocks(
    sweep: SweepData, fits: dict[str, scaling.TargetFits], bootstrap: int
) -> tuple[list[Block], set[str], dict[str, bool]]:
    """The report's content, the Pareto set it found and each complete trial's feasibility."""
    space, complete = sweep.space, sweep.complete
    sizes = scaling.model_sizes(complete).tolist()
    blocks: list[Block] = [
        Text(
            f"{space.description} {len(complete)} complete, {sweep.count('PRUNED')} stopped early and "
            f"{sweep.count('FAIL')} failed trials; model sizes "
            f"{', '.join(f'{s:.3g}' for s in sorted(set(sizes)) if np.isfinite(s)) or 'unknown'}; objectives "
            f"{', '.join(f'{k} ({v})' for k, v in space.objectives.items())}."
        ),
        Text(CONVENTIONS),
    ]
    if not complete:
        return [*blocks, Text("No complete trial: nothing to draw.")], set(), {}
    front = space_frontier(space, [row["trial"] for row in complete], complete)
    pareto = set(front.pareto_keys) if len(space.objectives) >= 2 else set()
    blocks += [
        *_frontier_blocks(sweep, front),
        *_method_blocks(sweep, pareto),
        *_benchmark_blocks(sweep),
        *_stopped_blocks(sweep),
        *_fit_blocks(fits, bootstrap),
        *_trial_blocks(sweep, pareto, sizes),
        *_sensitivity_blocks(sweep),
        *_space_blocks(sweep),
    ]
    return blocks, pareto, dict(zip(front.keys, front.feasible.tolist()))


def _fit_metrics(fits: dict[str, scaling.TargetFits]) -> dict[str, float]:
    metrics = {}
    for target, result in fits.items():
        for law_fit in result.laws:
            prefix = f"fit.{target}.{law_fit.law.name}"
            if law_fit.fit is not None:
                metrics |= {f"{prefix}.{name}": value for name, value in law_fit.fit.params.items()}
            if law_fit.extrapolation is not None:
                metrics[f"{prefix}.heldout_error"] = law_fit.extrapolation.mean_abs_rel_error
            score = result.scores.of(law_fit.law.name) if result.scores is not None else None
            if score is not None and score.loso_error is not None:
                metrics[f"{prefix}.loso_error"] = score.loso_error
    return {name: value for name, value in metrics.items() if np.isfinite(value)}


def log_report(tracking_uri: str, parent_run_id: str, directory: Path, metrics: dict[str, float]) -> None:
    """The report's files under `report/` on the parent run, and the fitted parameters as metrics."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_artifacts(parent_run_id, str(directory), "report")
    now = int(time.time() * 1000)
    client.log_batch(parent_run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()])


def build_report(
    name: str,
    *,
    out_root: str | Path = "runs",
    out: str | Path | None = None,
    reports_dir: str | Path | None = None,
    laws_file: str | Path | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReportOutcome:
    """Read sweep `name`, fit its laws, write the report and log it on the parent run.

    The report goes to `out`, else REPORTS_DIR/NAME/ with `reports_dir`, else OUT_ROOT/NAME/report/.

    Laws: the defaults of `raycl.analysis.scaling` plus those of `laws_file` (default
    search_spaces/laws/NAME.yaml when it exists), fitted on `workers` processes (default: every CPU this process
    may use; the fits do not depend on the count). Raises a one-line ValueError for a missing sweep or
    a malformed laws file, before writing anything.
    """
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {bootstrap}")
    laws_file = laws_file or default_laws_file(name)
    protocol = scaling.load_protocol()
    specs = protocol.specs() + (scaling.load_laws(laws_file) if laws_file else [])
    sweep = load_sweep(name, out_root)
    with parallel_fits(workers):
        fits = scaling.fit_sweep(
            sweep.rows, specs, bootstrap=bootstrap, seed=seed, protocol=protocol, progress=progress
        )
    blocks, pareto_keys, feasible = build_blocks(sweep, fits, bootstrap)
    directory = Path(out) if out else Path(reports_dir) / name if reports_dir else Path(out_root) / name / "report"
    files = render.write_report(directory, f"Sweep report: {name}", blocks)
    csv_path, fits_path = directory / "pareto.csv", directory / "fits.json"
    csv_path.write_text(
        pareto_csv(sweep.rows, list(sweep.space.objectives), feasible, pareto_keys, list(sweep.space.parameters))
    )
    record = {"sweep": name, "bootstrap": bootstrap, "seed": seed, "laws_file": str(laws_file) if laws_file else None}
    fits_path.write_text(json.dumps(record | scaling.fits_record(fits, protocol), indent=2))
    tracking_uri = f"sqlite:///{(Path(out_root) / name / 'mlflow.db').resolve()}"
    log_report(tracking_uri, sweep.parent_run_id, directory, _fit_metrics(fits))
    complete = len(sweep.complete)
    return ReportOutcome(
        directory=directory,
        files=[*files, csv_path, fits_path],
        parent_run_id=sweep.parent_run_id,
        pareto_keys=sorted(pareto_keys),
        complete=complete,
        failed=sweep.count("FAIL"),
    )


def read_committed(directory: str | Path) -> tuple[Path, str]:
    """DIRECTORY/pareto.csv and its text, read before a report that may overwrite it; a one-line ValueError without."""
    path = Path(directory) / "pareto.csv"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (--compare takes a report's folder, e.g. reports/scaling_laws)")
    return path, path.read_text()


def compare_reports(fresh: Path, committed: tuple[Path, str], tolerance: float) -> Comparison:
    """The fresh report's pareto.csv against a committed one (see `raycl.analysis.reproduction`)."""
    committed_path, committed_text = committed
    return compare_tables(
        read_table(fresh.read_text(), str(fresh)),
        read_table(committed_text, str(committed_path)),
        tolerance=tolerance,
        fresh_source=str(fresh),
        committed_source=str(committed_path),
    )
