"""Scaling-law fits of a sweep's objectives, from its table of finished trials.

A trial table is a list of dicts, one per trial, holding the trial's final metrics and its flattened
config (dotted keys). Law expressions name these symbols, each read from one column:

    N   model_size                       non-embedding parameters of the base model (see `model_sizes`)
    D   new_tokens                       new-data tokens trained on (fewer with replay: replayed rows are not new)
    r   replay.ratio                     share of each batch replayed from the base corpus
    lr  train.lr                         peak learning rate
    T   train_tokens                     all tokens trained on, replayed ones included
    P   model.pretrain_tokens_per_param  the base model's pretraining budget
    L0  base_loss_before                 the base model's held-out loss on its own distribution

Every fitted quantity stays positive, so every complete trial is fitted, whatever its outcome:
forgetting is fitted as the base loss after the stream, `L_after = L0 + forgetting` (the form in which
Bethune et al. 2025 state their law), and learning as the perplexity ratio `1 - learning`. Failed
trials and trials lacking a column a law needs are counted. A law is not fitted when two of its
variables move together (collinear: their effects cannot be told apart); parameters are bounded and a
fit on a bound says so. The extrapolation check (fit without the largest size, predict it) runs only
with more distinct sizes in its fit set than the law has size parameters; its error is reported
relative to the fitted quantity and absolute in its units (for forgetting: nats).

User-defined laws come from a YAML list (`raycl report NAME --laws FILE`, by default
`search_spaces/laws/NAME.yaml` when it exists), each item naming the target, the law, its
expression in the symbols above and its fitted parameters (names starting with an uppercase
letter are positive scales, fitted in log space):

    - name: injection_sqrt_lr
      target: forgetting
      expression: "L0 * (1 + A * sqrt(lr) * D**b / ((1 + B*r) * N)**a)"
      params: [A, a, b, B]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field, PrivateAttr, field_validator, model_validator

from raycl.analysis.fits import (
    ExtrapolationResult,
    FitResult,
    Law,
    collinear_pairs,
    extrapolation_check,
    fit_law,
    law_from_expression,
)
from raycl.config.base import StrictModel, validate

SYMBOLS = {
    "N": "model_size",
    "D": "new_tokens",
    "r": "replay.ratio",
    "lr": "train.lr",
    "T": "train_tokens",
    "P": "model.pretrain_tokens_per_param",
    "L0": "base_loss_before",
}
# What each target's laws predict: a quantity that is positive in every trial.
TARGETS = {
    "forgetting": "the base loss after the stream, L0 + forgetting, in nats",
    "learning": "the perplexity ratio on the new data, 1 - learning",
}
# Axis labels of the fitted quantities.
FITTED_LABELS = {"forgetting": "base loss after (L0 + forgetting, nats)", "learning": "perplexity ratio (1 - learning)"}
SIZE_SYMBOL = "N"
# Measured baselines a law scales by, with no parameter of their own: that they move with model size
# (a larger model's base loss is lower) takes nothing from the fit, so they are left out of the
# collinearity check.
BASELINES = {"L0"}
_LAW_NAME = re.compile(r"^[A-Za-z_][\w-]*$")  # also an MLflow metric-key segment

# Forgetting with pretraining-data injection (Bethune et al. 2025, arXiv:2502.06042): the base loss
# rises by a factor that grows with new tokens D and shrinks with the effective capacity (1 + B r) N.
BETHUNE = Law(
    "bethune", "L0 * (1 + A * D**b / ((1 + B*r) * N)**a)", ("A", "a", "b", "B"), ("L0", "D", "r", "N"), size_params=1
)
# The same with a learning-rate factor: at fixed tokens a larger step moves the model further from its base.
BETHUNE_LR = Law(
    "bethune_lr",
    "L0 * (1 + A * lr**c * D**b / ((1 + B*r) * N)**a)",
    ("A", "a", "b", "B", "c"),
    ("L0", "lr", "D", "r", "N"),
    size_params=1,
)
# And with the base model's pretraining budget P (tokens per parameter), the axis of overtraining.
BETHUNE_BUDGET = Law(
    "bethune_budget",
    "L0 * (1 + A * lr**c * P**p * D**b / ((1 + B*r) * N)**a)",
    ("A", "a", "b", "B", "c", "p"),
    ("L0", "lr", "P", "D", "r", "N"),
    size_params=1,
)
# Forgetting that levels off: the base loss rises towards a ceiling A * exp(-B r) / N**a (in nats at the
# reference scales), reached faster with a larger step, more new tokens and, with exponent e, a larger
# model (which learns faster at the same step). Measured on the offline world's ladder: with replay the
# largest rung's forgetting stops growing (about 0.25 nats at 12.5% replay whether a stage has 30 or 90
# steps), and its ceiling without replay is about half the small rungs'; the power laws in lr and D
# above keep growing there and overshoot the largest size. Variables are in reference units (lr 1e-4,
# D and N 1e5), so three start values per scale parameter cover them.
SATURATING = Law(
    "saturating",
    "L0 + A * (1 - exp(-C * (lr/1e-4)**c * (D/1e5)**b * (N/1e5)**e)) * exp(-B*r) / (N/1e5)**a",
    ("A", "a", "b", "B", "c", "C", "e"),
    ("L0", "lr", "D", "r", "N"),
    size_params=2,
    scale_starts=(0.1, 1.0, 10.0),
)
# The perplexity ratio on new data falls as a power of model size and new tokens.
RATIO_POWER = Law("ratio_power", "A / (N**a * D**b)", ("A", "a", "b"), ("N", "D"), size_params=1)
RATIO_POWER_LR = Law(
    "ratio_power_lr", "A / (N**a * D**b * lr**c)", ("A", "a", "b", "c"), ("N", "D", "lr"), size_params=1
)


@dataclass(frozen=True)
class LawSpec:
    """A law to fit to one target metric."""

    law: Law
    target: str


def default_laws() -> list[LawSpec]:
    """The data-injection family and a saturating law for forgetting; power laws in size and tokens for learning."""
    forgetting = [LawSpec(law, "forgetting") for law in (BETHUNE, BETHUNE_LR, BETHUNE_BUDGET, SATURATING)]
    return forgetting + [LawSpec(law, "learning") for law in (RATIO_POWER, RATIO_POWER_LR)]


class LawEntry(StrictModel):
    """One law of a laws file (`raycl report --laws`): a target metric and an expression in the SYMBOLS."""

    name: str
    target: str
    expression: str
    params: list[str]
    size_params: int | None = Field(
        default=None, ge=0, description="parameters only differences in N determine; default: all"
    )
    _law: Law = PrivateAttr()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _LAW_NAME.match(name):
            raise ValueError(f"name {name!r} must be letters, digits, '_' or '-'")
        return name

    @field_validator("target")
    @classmethod
    def _target(cls, target: str) -> str:
        if target not in TARGETS:
            raise ValueError(f"target {target!r} is not one of {list(TARGETS)}")
        return target

    @model_validator(mode="after")
    def _law_of_known_symbols(self) -> LawEntry:
        self._law = law_from_expression(self.name, self.expression, self.params, self.size_params)
        unknown = [v for v in self._law.variables if v not in SYMBOLS]
        if unknown:
            raise ValueError(f"unknown variable(s) {unknown}; known: {', '.join(SYMBOLS)}")
        return self

    def spec(self) -> LawSpec:
        return LawSpec(self._law, self.target)


def load_laws(path: str | Path) -> list[LawSpec]:
    """User-defined laws from a YAML list of {name, target, expression, params}; one-line ValueError otherwise."""
    path = Path(path)
    try:
        items = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read laws ({str(error).splitlines()[0]})") from None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a YAML list of laws, each with keys name, target, expression, params")
    taken = {(spec.target, spec.law.name) for spec in default_laws()}
    specs = []
    for index, item in enumerate(items):
        spec = validate(LawEntry, item, f"{path}: law {index}").spec()
        if (spec.target, spec.law.name) in taken:
            raise ValueError(f"{path}: law {index}: {spec.law.name}: a {spec.target} law of that name exists already")
        taken.add((spec.target, spec.law.name))
        specs.append(spec)
    return specs


@dataclass(frozen=True, eq=False)
class LawFit:
    """One law fitted to one target: on all points, and without the largest size (None when impossible)."""

    law: Law
    fit: FitResult | None
    extrapolation: ExtrapolationResult | None
    notes: list[str]


@dataclass(frozen=True, eq=False)
class TargetFits:
    """Every law fitted to one target, best extrapolation first, and which trials the fits used."""

    target: str
    trials: int
    keys: list[str]  # trials fitted
    data: dict[str, np.ndarray]  # symbol -> column over the fitted trials
    values: np.ndarray  # the fitted quantity (see TARGETS) over the fitted trials
    excluded_incomplete: int  # failed, or lacking a column a law needs
    sizes: list[float]
    notes: list[str]
    laws: list[LawFit]

    @property
    def best(self) -> LawFit | None:
        """The law with the lowest held-out error (None without an extrapolation check)."""
        checked = [law for law in self.laws if law.extrapolation is not None]
        return checked[0] if checked else None


def _number(value: Any) -> float:
    """A finite float, or NaN for anything else (None, text, a failed trial's missing metric)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number if np.isfinite(number) else float("nan")


def model_sizes(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Base-model parameters per trial, non-embedding where the trial reports them (as published laws
    count them), else all; the smallest count among the trials of one `model.name`.

    Older results counted LoRA adapters in `num_params`, so without the minimum the LoRA trials of one
    model would pose as a size of their own. Trials without a model name keep their own count.
    """
    counts = np.array([_number(row.get("num_params_non_embedding", row.get("num_params"))) for row in rows])
    names = [row.get("model.name") for row in rows]
    smallest: dict[Any, float] = {}
    for name, count in zip(names, counts):
        if name is not None and np.isfinite(count):
            smallest[name] = min(smallest.get(name, np.inf), count)
    return np.array([smallest.get(name, count) if name is not None else count for name, count in zip(names, counts)])


def target_values(rows: Sequence[Mapping[str, Any]], target: str) -> np.ndarray:
    """What the laws of `target` predict, per trial (see TARGETS): positive whatever the outcome."""
    if target == "forgetting":
        return np.array([_number(row.get("base_loss_before")) + _number(row.get("forgetting")) for row in rows])
    return np.array([1.0 - _number(row.get("learning")) for row in rows])


def _held_out_error(law: LawFit) -> float:
    return law.extrapolation.mean_abs_rel_error if law.extrapolation is not None else np.inf


def fit_target(
    rows: list[dict[str, Any]],
    target: str,
    laws: list[Law],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TargetFits:
    """Fit each law to `target` over every complete trial of `rows` that has the columns the laws need.

    `progress` hears one line before each law's fits (seconds to minutes each on a large sweep).
    """
    symbols = sorted({v for law in laws for v in law.variables} | {SIZE_SYMBOL})
    complete = [row for row in rows if row.get("state", "COMPLETE") == "COMPLETE"]
    columns = {s: np.array([_number(row.get(SYMBOLS[s])) for row in complete]) for s in symbols if s != SIZE_SYMBOL}
    columns[SIZE_SYMBOL] = model_sizes(complete)
    values = target_values(complete, target)
    used = (values > 0) & np.all([np.isfinite(c) for c in columns.values()], axis=0)
    data = {s: c[used] for s, c in columns.items()}
    sizes = sorted(set(data[SIZE_SYMBOL].tolist()))
    notes = []
    if len(sizes) < 2:
        notes.append(f"no fit: {len(sizes)} distinct model size(s) among the fitted trials, at least 2 needed")
    fitted = []
    for law in laws if len(sizes) >= 2 else []:
        if progress is not None:
            progress(f"fitting {law.name} to {target} over {int(np.sum(used))} trials")
        # Starts far from the optimum overflow on the way; the objective already scores those as penalties.
        with np.errstate(over="ignore", invalid="ignore"):
            fitted.append(_fit_law(law, data, values[used], bootstrap, seed))
    return TargetFits(
        target=target,
        trials=len(rows),
        keys=[row.get("trial", str(i)) for i, row in enumerate(complete) if used[i]],
        data=data,
        values=values[used],
        excluded_incomplete=len(rows) - int(np.sum(used)),
        sizes=sizes,
        notes=notes,
        laws=sorted(fitted, key=_held_out_error),
    )


def _fit_law(law: Law, data: dict[str, np.ndarray], target: np.ndarray, bootstrap: int, seed: int) -> LawFit:
    columns = {v: data[v] for v in (*law.variables, SIZE_SYMBOL)}
    collinear = collinear_pairs(columns, [v for v in law.variables if v not in BASELINES])
    if collinear:
        a, b, r = collinear[0]
        return LawFit(
            law,
            None,
            None,
            [
                f"no fit: {a} and {b} move together over the fitted trials (r = {r:+.3f}), "
                "so the law cannot tell their effects apart; vary them independently"
            ],
        )
    notes = [
        f"{v} is the same in every fitted trial: its parameters are not identifiable"
        for v in law.variables
        if len(np.unique(columns[v])) == 1
    ]
    if len(target) <= len(law.params):
        return LawFit(law, None, None, [*notes, f"no fit: {len(target)} points for {len(law.params)} parameters"])
    try:
        fit = fit_law(law, columns, target, bootstrap=bootstrap, seed=seed)
    except ValueError as error:
        return LawFit(law, None, None, [*notes, f"no fit: {error}"])
    notes += [f"{p} = {fit.params[p]:.3g} sits on its bound: the data do not pin it down" for p in fit.at_bound]
    extrapolation = None
    sizes = columns[SIZE_SYMBOL]
    fit_sizes = len(np.unique(sizes[sizes < sizes.max()]))
    size_params = law.size_params if law.size_params is not None else len(law.params)
    train_points = int(np.sum(sizes < sizes.max()))
    if fit_sizes <= size_params:
        notes.append(
            f"no extrapolation check: {fit_sizes} distinct size(s) "
            f"below the largest for {size_params} size parameter(s)"
        )
    elif train_points <= len(law.params):
        notes.append(
            f"no extrapolation check: {train_points} points below the largest size for {len(law.params)} parameters"
        )
    else:
        try:
            extrapolation = extrapolation_check(law, columns, target, SIZE_SYMBOL, bootstrap=bootstrap, seed=seed)
        except ValueError as error:
            notes.append(f"no extrapolation check: {error}")
    return LawFit(law, fit, extrapolation, notes)


def fit_sweep(
    rows: list[dict[str, Any]],
    specs: list[LawSpec],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, TargetFits]:
    """Fits of every target some law names, in the order of `TARGETS`."""
    laws = {target: [s.law for s in specs if s.target == target] for target in TARGETS}
    return {
        target: fit_target(rows, target, laws[target], bootstrap=bootstrap, seed=seed, progress=progress)
        for target in TARGETS
        if laws[target]
    }


def _params(values: dict[str, float]) -> dict[str, float | None]:
    return {name: (value if np.isfinite(value) else None) for name, value in values.items()}


def fits_record(fits: dict[str, TargetFits]) -> dict[str, Any]:
    """The fits as JSON-ready data (fits.json): parameters with 95% intervals, held-out errors, exclusions."""
    record: dict[str, Any] = {"symbols": SYMBOLS, "targets": {}}
    for target, result in fits.items():
        laws = []
        for law_fit in result.laws:
            entry: dict[str, Any] = {
                "name": law_fit.law.name,
                "expression": law_fit.law.expression,
                "notes": law_fit.notes,
            }
            if law_fit.fit is not None:
                entry |= {
                    "params": law_fit.fit.params,
                    "ci_low": _params(law_fit.fit.ci_low),
                    "ci_high": _params(law_fit.fit.ci_high),
                    "huber_loss": law_fit.fit.loss,
                    "points": law_fit.fit.n_points,
                    "at_bound": list(law_fit.fit.at_bound),
                }
            extrapolation = law_fit.extrapolation
            if extrapolation is not None:
                entry["extrapolation"] = {
                    "held_out_size": extrapolation.held_out_size,
                    "held_out_trials": [k for k, held in zip(result.keys, extrapolation.held_out) if held],
                    "fit_points": int(np.sum(~extrapolation.held_out)),
                    "params": extrapolation.fit.params,
                    "predicted": extrapolation.predicted.tolist(),
                    "observed": extrapolation.observed.tolist(),
                    "relative_errors": extrapolation.relative_errors.tolist(),
                    "mean_abs_rel_error": extrapolation.mean_abs_rel_error,
                    # In the target's units: for forgetting, nats of the predicted base loss (= of forgetting).
                    "mean_abs_error": float(np.mean(np.abs(extrapolation.predicted - extrapolation.observed))),
                }
            laws.append(entry)
        record["targets"][target] = {
            "fitted_quantity": TARGETS[target],
            "trials": result.trials,
            "fitted_trials": result.keys,
            "excluded_incomplete": result.excluded_incomplete,
            "model_sizes": result.sizes,
            "notes": result.notes,
            "best": result.best.law.name if result.best is not None else None,
            "laws": laws,
        }
    return record
