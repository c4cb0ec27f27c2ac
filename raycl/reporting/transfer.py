"""Scaling-law-guided transfer: from a finished sweep's fits over smaller models, the learning rate and
replay ratio to use on a larger one, with the fits' bootstrap interval; optionally verified by running them.

The registered laws of each target (raycl/analysis/protocol.yaml) are scored leave-one-size-out on the
sweep's complete trials of models smaller than the target, and the ranking's best law predicts the
target's objectives over a grid of learning rate x replay ratio (the sweep's own ranges), every other
setting held at the context (`context_config`). The pick is the
grid point with the least predicted forgetting among those predicted to learn at least the required
amount (default: the median learning of the fitted trials); its interval is the 2.5-97.5 percentile of
the predictions of the bootstrap refits, flagged uninformative (and not counted as a hit) when its high
end exceeds its low end by more than the protocol's ratio. The model's own inputs (size N, base loss L0) come from the
sweep's trials of that model at the context's pretraining budget, or, with `--verify`, from the runs
at that size (their objectives are not used for the prediction).
"""

from __future__ import annotations

import csv
import hashlib
import json
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from raycl.analysis import scaling
from raycl.config.space import Categorical, SearchSpace, load_space
from raycl.config.trial import TrialConfig

if TYPE_CHECKING:
    from raycl.analysis.fits import FitResult
    from raycl.analysis.pareto import Direction

LR, REPLAY, MODEL, BUDGET = "train.lr", "replay.ratio", "model.name", "model.pretrain_tokens_per_param"
OBJECTIVES: dict[str, Direction] = {"learning": "maximize", "forgetting": "minimize"}
GRID_POINTS = 25


@dataclass(frozen=True)
class Source:
    """A finished sweep's trials as rows, its space, and its MLflow parent run (None when read from a CSV)."""

    name: str
    rows: list[dict[str, Any]]
    space: SearchSpace
    origin: str
    tracking_uri: str | None
    parent_run_id: str | None


def load_source(name: str, out_root: str | Path = "runs", reports_dir: str | Path = "reports") -> Source:
    """The sweep's store under OUT_ROOT/NAME, else the table its report wrote (REPORTS_DIR/NAME/pareto.csv)."""
    from raycl.reporting.report import load_sweep

    db = Path(out_root) / name / "mlflow.db"
    if db.is_file():
        sweep = load_sweep(name, out_root)
        return Source(name, sweep.rows, sweep.space, f"{db.parent}", f"sqlite:///{db.resolve()}", sweep.parent_run_id)
    table = Path(reports_dir) / name / "pareto.csv"
    if not table.is_file():
        raise ValueError(
            f"{db}: no such sweep, and no {table} from its report (run `raycl sweep {name}` and `raycl report {name}`)"
        )
    return Source(name, read_table(table), load_space(name), f"{table} (the sweep's store is absent)", None, None)


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a report's pareto.csv, numbers as floats."""
    with path.open() as handle:
        return [{key: _cell(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _cell(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _mode(values: Sequence[Any]) -> Any:
    """The most common value (the first seen among ties)."""
    return Counter(values).most_common(1)[0][0]


def context_config(source: Source, model: str, overrides: Mapping[str, Any]) -> TrialConfig:
    """The trial config predictions and runs share: the space's fixed settings, `model`, `overrides`, and
    for every other searched setting its most common value among the sweep's trials of `model` (else all)."""
    complete = [row for row in source.rows if row.get("state") == "COMPLETE"]
    own = [row for row in complete if row.get(MODEL) == model] or complete
    params: dict[str, Any] = {MODEL: model}
    for name in source.space.parameters:
        if name not in (MODEL, LR, REPLAY):
            params[name] = overrides.get(name, _mode([row.get(name) for row in own if row.get(name) not in (None, "")]))
    try:
        return source.space.trial_config({**params, **overrides})
    except Exception as error:
        raise ValueError(f"--set: {str(error).splitlines()[0]}") from None


def law_inputs(config: TrialConfig, size: float, base_loss: float) -> dict[str, float]:
    """The law symbols of one trial config on a model of `size` non-embedding parameters and base loss `base_loss`."""
    train = config.train
    steps = config.world.num_stages * train.steps_per_stage
    return {
        "N": size,
        "L0": base_loss,
        "lr": train.lr,
        "r": config.replay.ratio,
        "P": config.model.pretrain_tokens_per_param,
        "T": float(steps * train.batch_size * train.seq_len),
        "D": float(steps * (train.batch_size - config.replay_rows) * train.seq_len),
    }


def model_facts(rows: Sequence[Mapping[str, Any]], config: TrialConfig) -> tuple[float, float] | None:
    """(N, L0) of the context's model at its pretraining budget, from complete trials that ran it."""
    same = [
        row
        for row in rows
        if row.get("state") == "COMPLETE"
        and row.get(MODEL) == config.model.name
        and float(row.get(BUDGET, config.model.pretrain_tokens_per_param)) == config.model.pretrain_tokens_per_param
    ]
    if not same:
        return None
    return float(scaling.model_sizes(same)[0]), statistics.median(float(row["base_loss_before"]) for row in same)


RANKED = (
    "the registered protocol's best law (raycl/analysis/protocol.yaml): lowest leave-one-size-out error over the "
    "fitted sizes; a law rather than a baseline because the pick needs predictions that vary with learning rate and "
    "replay ratio"
)


@dataclass(frozen=True)
class Chosen:
    """The law chosen for one target, and the registered ranking it was chosen by."""

    fit: scaling.LawFit
    scores: scaling.Scoreboard | None
    selection: str


def fit_smaller(
    rows: list[dict[str, Any]], size: float, bootstrap: int, seed: int, progress: Callable[[str], None] | None = None
) -> dict[str, Chosen]:
    """Per target, the registered ranking's best law (protocol.yaml: lowest leave-one-size-out error over the
    sizes below `size`), fitted on the complete trials of those sizes with `bootstrap` resamples.

    A law, not a baseline, because the pick needs predictions that vary with learning rate and replay ratio; the
    record says whether that law beats the best baseline."""
    smaller = [row for row, n in zip(rows, scaling.model_sizes(rows)) if n < size]
    protocol = scaling.load_protocol()
    chosen = {}
    for target in scaling.TARGETS:
        laws = [spec.law for spec in protocol.specs() if spec.target == target]
        ranked = scaling.fit_target(smaller, target, laws, bootstrap=0, seed=seed, protocol=protocol, progress=progress)
        best, selection = ranked.best, RANKED
        if best is None:
            best = next((law for law in ranked.laws if law.fit is not None), None)
            selection = (
                f"the first registered law that fits: with {len(ranked.sizes)} size(s) below {size:g} no law "
                "predicts every held-out size, so the protocol ranks none"
            )
        if best is None:
            raise ValueError(
                f"no {target} law fits the {len(smaller)} trials below {size:g} parameters: "
                f"{'; '.join(ranked.notes) or 'see raycl report'}"
            )
        refitted = scaling.refit(ranked, best.law, bootstrap=bootstrap, seed=seed)
        chosen[target] = Chosen(refitted, ranked.scores, selection)
    return chosen


def _fitted(law_fit: scaling.LawFit) -> FitResult:
    """The fit of a law that `fit_smaller` chose: it chooses only laws that fit."""
    assert law_fit.fit is not None
    return law_fit.fit


def predict_objectives(fits: Mapping[str, scaling.LawFit], inputs: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Each objective at `inputs`: the best fit's value and the 95% interval of its bootstrap refits, flagged
    `uninformative` when the interval spans more than the protocol's ratio (or reaches zero)."""
    ratio = scaling.load_protocol().scoring.uninformative_ratio
    data = {symbol: np.array([value]) for symbol, value in inputs.items()}
    out = {}
    for target, law_fit in fits.items():
        fit = _fitted(law_fit)
        value = float(scaling.objective_of(target, fit.predict(data), inputs["L0"])[0])
        with np.errstate(all="ignore"):
            samples = (
                np.array([law_fit.law.predict(theta, data)[0] for theta in fit.samples])
                if len(fit.samples)
                else np.array([])
            )
        samples = scaling.objective_of(target, samples[np.isfinite(samples)], inputs["L0"])
        low, high = np.percentile(samples, [2.5, 97.5]).tolist() if len(samples) else (None, None)  # None: no bootstrap
        uninformative = scaling.interval_uninformative(low, high, ratio)
        out[target] = {"predicted": value, "low": low, "high": high, "uninformative": uninformative}
    return out


def compare(interval: Mapping[str, Any], measured: float) -> dict[str, Any]:
    """A prediction against its measurement: `inside` the interval, or None without an interval or with an
    uninformative one (a hit there says nothing)."""
    low, high = interval["low"], interval["high"]
    inside = None
    if low is not None and high is not None and not interval.get("uninformative"):
        inside = bool(low <= measured <= high)
    return {**interval, "measured": measured, "inside": inside}


def _axis(space: SearchSpace, name: str, fallback: float) -> list[float]:
    parameter = space.parameters.get(name)
    if parameter is None:
        return [fallback]
    if isinstance(parameter, Categorical):
        return [float(value) for value in parameter.choices]
    if parameter.log_scale:
        return np.geomspace(parameter.low, parameter.high, GRID_POINTS).tolist()
    return np.linspace(parameter.low, parameter.high, GRID_POINTS).tolist()


def predict(
    source: Source,
    model: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    min_learning: float | None = None,
    facts: tuple[float, float] | None = None,
    bootstrap: int = 100,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The learning rate and replay ratio for `model` (see the module doc), as a JSON-ready record."""
    context = context_config(source, model, overrides or {})
    facts = facts or model_facts(source.rows, context)
    if facts is None:
        raise ValueError(
            f"sweep {source.name} ran no complete trial of {model} at pretraining budget "
            f"{context.model.pretrain_tokens_per_param:g}: its size and base loss are unknown; pass --verify to "
            "measure them"
        )
    size, base_loss = facts
    choices = fit_smaller(source.rows, size, bootstrap, seed, progress)
    fits = {target: choice.fit for target, choice in choices.items()}
    sizes = scaling.model_sizes(source.rows)
    complete = [row for row, n in zip(source.rows, sizes) if row.get("state") == "COMPLETE" and n < size]
    required = (
        min_learning if min_learning is not None else statistics.median(float(row["learning"]) for row in complete)
    )
    grid = []
    for lr in _axis(source.space, LR, context.train.lr):
        for ratio in _axis(source.space, REPLAY, context.replay.ratio):
            config = context.with_overrides({LR: lr, REPLAY: ratio})
            inputs = law_inputs(config, size, base_loss)
            point = {
                name: float(
                    scaling.objective_of(
                        name, _fitted(fit).predict({k: np.array([v]) for k, v in inputs.items()}), base_loss
                    )[0]
                )
                for name, fit in fits.items()
            }
            grid.append({LR: lr, REPLAY: ratio, **point})
    meeting = [point for point in grid if point["learning"] >= required]
    pick = (
        min(meeting, key=lambda p: (p["forgetting"], -p["learning"]))
        if meeting
        else max(grid, key=lambda p: p["learning"])
    )
    chosen = context.with_overrides({LR: pick[LR], REPLAY: pick[REPLAY]})
    return {
        "sweep": source.name,
        "source": source.origin,
        "model": model,
        "model_size": size,
        "base_loss_before": base_loss,
        "fitted_sizes": sorted(
            {float(n) for row, n in zip(source.rows, sizes) if row.get("state") == "COMPLETE" and n < size}
        ),
        "fitted_trials": len(complete),
        "context": {
            name: chosen.model_dump(mode="json")[name.split(".")[0]][name.split(".")[1]]
            for name in source.space.parameters
            if name not in (LR, REPLAY)
        },
        "laws": {target: _law_record(choice) for target, choice in choices.items()},
        "bootstrap": bootstrap,
        "required_learning": required,
        "meets_requirement": bool(meeting),
        "pick": {LR: pick[LR], REPLAY: pick[REPLAY]},
        "predicted": predict_objectives(fits, law_inputs(chosen, size, base_loss)),
        "predicted_front": _front(grid),
    }


def _law_record(choice: Chosen) -> dict[str, Any]:
    """The chosen law, the rule that chose it and its score against the best baseline."""
    fit, scores = choice.fit, choice.scores
    score = scores.of(fit.law.name) if scores else None
    baseline = scores.best_baseline if scores else None
    return {
        "name": fit.law.name,
        "expression": fit.law.expression,
        "params": _fitted(fit).params,
        "selection": choice.selection,
        "protocol_sha256": scaling.load_protocol().sha256,
        "loso_error": score.loso_error if score else None,
        "loso_abs_error": score.loso_abs_error if score else None,
        "best_baseline": {"name": baseline.name, "loso_error": baseline.loso_error} if baseline else None,
        "best_law_vs_best_baseline": scaling.comparison_record(scores.comparison if scores else None),
        "heldout_error": fit.extrapolation.mean_abs_rel_error if fit.extrapolation else None,
    }


def _front(grid: list[dict[str, float]]) -> list[dict[str, float]]:
    from raycl.analysis.pareto import pareto_mask

    values = np.array([[point[name] for name in OBJECTIVES] for point in grid])
    return [point for point, on in zip(grid, pareto_mask(values, list(OBJECTIVES.values()))) if on]


def _space_file(
    directory: Path,
    source: Source,
    context: TrialConfig,
    parameters: dict[str, Any],
    trials: int,
    seed: int,
    label: str,
) -> Path:
    """A search space over `parameters` with every context setting fixed, named by its content."""
    fixed = context.model_dump(mode="json", exclude_none=True)
    for name in parameters:
        section, key = name.split(".")
        fixed[section].pop(key, None)
    space = {
        "description": f"transfer check of sweep {source.name}: {label}",
        "objectives": dict(OBJECTIVES),
        "parameters": parameters,
        "fixed": fixed,
        "budget": {"trials": trials, "concurrency": 2, "cpus_per_worker": 1},
        "sampler": {"name": "random"},
        "seed": seed,
    }
    text = yaml.safe_dump(space, sort_keys=False)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{label}_{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"
    path.write_text(text)
    return path


def _measured(outcome: Any) -> list[dict[str, Any]]:
    import optuna

    from raycl.sweep.study import completed_metrics

    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    return [
        {**trial.params, **completed_metrics(trial)}
        for trial in study.get_trials(deepcopy=False)
        if trial.state.name == "COMPLETE"
    ]


def verify(
    source: Source,
    model: str,
    record: dict[str, Any] | None,
    *,
    overrides: Mapping[str, Any],
    search_trials: int,
    out_root: Path,
    seed: int,
    run: Callable[[Path, Path], Any],
    **predict_options: Any,
) -> dict[str, Any]:
    """Run the picked trial and a random search of `search_trials` at `model`; compare with the prediction.

    `record` None: the model's size and base loss were unknown, so the search runs first and the
    prediction uses those two facts from it. `run(space_path, out_root)` runs one sweep.
    """
    context = context_config(source, model, overrides)
    directory = out_root / source.name / "transfer" / model
    search = {
        name: source.space.parameters[name].model_dump(mode="json", exclude_defaults=True)
        | {"type": source.space.parameters[name].type}
        for name in (LR, REPLAY)
        if name in source.space.parameters
    }
    searched = _measured(run(_space_file(directory, source, context, search, search_trials, seed, "search"), directory))
    if not searched:
        raise ValueError(f"no trial of the random search at {model} completed")
    if record is None:
        facts = (float(searched[0]["num_params_non_embedding"]), float(searched[0]["base_loss_before"]))
        record = predict(source, model, overrides=overrides, facts=facts, seed=seed, **predict_options)
    pick = {name: {"type": "categorical", "choices": [value]} for name, value in record["pick"].items()}
    measured = _measured(run(_space_file(directory, source, context, pick, 1, seed, "picked"), directory))
    if not measured:
        raise ValueError(f"the picked trial at {model} did not complete")
    trial = measured[0]
    comparison = {name: compare(interval, trial[name]) for name, interval in record["predicted"].items()}
    meeting = [row for row in searched if row["learning"] >= record["required_learning"]]
    trial_seconds = statistics.fmean(row["wall_time_s"] for row in [*searched, trial])
    flops = 6 * record["model_size"] * trial["train_tokens"]
    return record | {
        "comparison": comparison,
        "picked_trial": {name: trial[name] for name in ("learning", "forgetting", "wall_time_s", "train_tokens")},
        "random_search": {
            "trials": len(searched),
            "results": [{name: row.get(name) for name in (LR, REPLAY, "learning", "forgetting")} for row in searched],
            "meeting_requirement": len(meeting),
            "least_forgetting_meeting_requirement": min((row["forgetting"] for row in meeting), default=None),
            "picked_dominated_by": sum(
                row["learning"] >= trial["learning"]
                and row["forgetting"] <= trial["forgetting"]
                and (row["learning"], row["forgetting"]) != (trial["learning"], trial["forgetting"])
                for row in searched
            ),
        },
        "compute": {
            "trial_seconds_at_target": trial_seconds,
            "trial_flops_at_target": flops,
            "search_at_target_trials": source.space.budget.trials,
            "search_at_target_seconds": trial_seconds * source.space.budget.trials,
            "search_at_target_flops": flops * source.space.budget.trials,
            "transfer_trials_at_target": 1,
            "transfer_flops_at_target": flops,
        },
    }


def log_on_parent(source: Source, record: dict[str, Any]) -> bool:
    """The record as an artifact and its numbers as metrics on the sweep's MLflow parent run (False without one)."""
    if source.tracking_uri is None or source.parent_run_id is None:
        return False
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=source.tracking_uri)
    prefix = f"transfer.{record['model']}"
    values = {f"{prefix}.{LR}": record["pick"][LR], f"{prefix}.{REPLAY}": record["pick"][REPLAY]}
    for name, entry in (record.get("comparison") or record["predicted"]).items():
        values |= {
            f"{prefix}.{name}.{key}": float(value)
            for key, value in entry.items()
            if key not in ("inside", "uninformative") and value is not None
        }
    client.log_batch(source.parent_run_id, metrics=[Metric(key, value, 0, 0) for key, value in values.items()])
    client.log_text(source.parent_run_id, json.dumps(record, indent=2), f"transfer/{record['model']}.json")
    return True


def describe(record: dict[str, Any]) -> str:
    """The record in a few lines: the pick, each objective predicted [interval], and measured when verified."""
    lines = [
        f"transfer of {record['sweep']} to {record['model']} (N = {record['model_size']:.3g}; fitted on sizes "
        f"{', '.join(f'{n:.3g}' for n in record['fitted_sizes'])}): lr {record['pick'][LR]:.3g}, replay ratio "
        f"{record['pick'][REPLAY]:g} (least predicted forgetting at learning >= {record['required_learning']:.3g}"
        + ("" if record["meets_requirement"] else "; no point predicted to reach it, so the most learning")
        + ")"
    ]
    for name, entry in (record.get("comparison") or record["predicted"]).items():
        interval = (
            "no interval (no bootstrap)" if entry["low"] is None else f"[{entry['low']:.4g}, {entry['high']:.4g}]"
        )
        if entry.get("uninformative"):
            interval += " uninformative (wider than the protocol's ratio)"
        law = record["laws"][name]
        loso = law.get("loso_error")
        line = f"  {name}: predicted {entry['predicted']:.4g} {interval} ({law['name']}" + (
            f", leave-one-size-out error {loso:.1%})" if loso is not None else ")"
        )
        if "measured" in entry:
            where = "" if entry["inside"] is None else f": {'inside' if entry['inside'] else 'outside'} the interval"
            line += f", measured {entry['measured']:.4g}{where}"
        lines.append(line)
    if "compute" in record:
        compute, search = record["compute"], record["random_search"]
        lines.append(
            f"  random search at {record['model']}: {search['meeting_requirement']} of {search['trials']} trials "
            f"reached the required learning; {search['picked_dominated_by']} dominate the pick"
        )
        lines.append(
            f"  a {compute['search_at_target_trials']}-trial search at {record['model']} would cost about "
            f"{compute['search_at_target_seconds']:.0f} s ({compute['search_at_target_flops']:.3g} FLOPs); the "
            "transfer ran 1 trial there"
        )
    return "\n".join(lines)
