"""Scaling-law fits of a sweep's objectives, from its table of finished trials.

A trial table is a list of dicts, one per trial, holding the trial's final metrics and its flattened
config (dotted keys). Law expressions name these symbols, each read from one column:

    N   model_size      parameters of the base model (see `model_sizes`)
    D   new_tokens      new-data tokens trained on (fewer with replay: replayed rows are not new)
    r   replay.ratio    share of each batch replayed from the base corpus
    lr  train.lr        peak learning rate
    T   train_tokens    all tokens trained on, replayed ones included

Fits are in log space (`raycl.analysis.fits`), so only trials with a positive target are fitted:
`forgetting <= 0` (the base loss did not rise) and `learning <= 0` (no gain) are excluded and
counted, as are failed trials and trials lacking a column the law needs. A fit needs at least two
distinct model sizes and more points than parameters; the extrapolation check (fit without the
largest size, predict it) needs three sizes. Short of that a record says why instead of failing.

User-defined laws come from a YAML list (`raycl report NAME --laws FILE`, by default
`search_spaces/laws/NAME.yaml` when it exists), each item naming the target, the law, its
expression in the symbols above and its fitted parameters (names starting with an uppercase
letter are positive scales, fitted in log space):

    - name: injection_sqrt_lr
      target: forgetting
      expression: "A * sqrt(lr) * D**b / ((1 + B*r) * N)**a"
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
from pydantic import PrivateAttr, field_validator, model_validator

from raycl.analysis.fits import (
    DATA_INJECTION,
    SHIFTED_POWER_N,
    ExtrapolationResult,
    FitResult,
    Law,
    extrapolation_check,
    fit_law,
    law_from_expression,
)
from raycl.config.base import StrictModel, validate

SYMBOLS = {"N": "model_size", "D": "new_tokens", "r": "replay.ratio", "lr": "train.lr", "T": "train_tokens"}
TARGETS = ("forgetting", "learning")
SIZE_SYMBOL = "N"
_LAW_NAME = re.compile(r"^[A-Za-z_][\w-]*$")  # also an MLflow metric-key segment

# Data injection with a learning-rate factor: the step size sets how far each update moves the model
# from its base, so at fixed tokens forgetting grows with it.
INJECTION_LR = Law(
    "data_injection_lr", "A * lr**c * D**b / ((1 + B*r) * N)**a", ("A", "a", "b", "B", "c"), ("lr", "D", "r", "N")
)
# learning = 1 - ppl_after / ppl_before, so a power law in the perplexity ratio: it saturates at 1,
# where the unbounded forms above overshoot the largest size.
RATIO_POWER_N = Law("ratio_power_n", "1 - A / N**a", ("A", "a"), ("N",))
# Beyond these a fitted parameter has run off towards a limit (0 or infinity): the optimum is not in the data.
_RUNAWAY_SCALE, _RUNAWAY_EXPONENT = 1e50, 10.0


@dataclass(frozen=True)
class LawSpec:
    """A law to fit to one target metric."""

    law: Law
    target: str


def default_laws() -> list[LawSpec]:
    """Three forms for both targets (exponent signs are free: learning may grow with N), a saturating one for learning."""
    shared = (DATA_INJECTION, INJECTION_LR, SHIFTED_POWER_N)
    return [LawSpec(law, target) for target in TARGETS for law in shared] + [LawSpec(RATIO_POWER_N, "learning")]


class LawEntry(StrictModel):
    """One law of a laws file (`raycl report --laws`): a target metric and an expression in the SYMBOLS."""

    name: str
    target: str
    expression: str
    params: list[str]
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
        self._law = law_from_expression(self.name, self.expression, self.params)
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
    values: np.ndarray  # the target over the fitted trials
    excluded_nonpositive: int
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
    """Base-model parameters per trial: the smallest `num_params` among the trials of its `model.name`.

    A trial's `num_params` counts LoRA adapters too, so without this the LoRA trials of one model
    would pose as a size of their own (and the largest "size" would be the largest rank). Trials
    without a model name keep their own count.
    """
    counts = np.array([_number(row.get("num_params")) for row in rows])
    names = [row.get("model.name") for row in rows]
    smallest: dict[Any, float] = {}
    for name, count in zip(names, counts):
        if name is not None and np.isfinite(count):
            smallest[name] = min(smallest.get(name, np.inf), count)
    return np.array([smallest.get(name, count) if name is not None else count for name, count in zip(names, counts)])


def runaway_notes(law: Law, params: Mapping[str, float]) -> list[str]:
    """Notes on fitted parameters that ran off towards 0 or infinity (scales past 1e+-50, exponents past +-10)."""
    notes = []
    for name in law.params:
        value = params[name]
        scale = name[:1].isupper()  # fitted in log space, as in `fit_law`
        runaway = not (1 / _RUNAWAY_SCALE < abs(value) < _RUNAWAY_SCALE) if scale else abs(value) > _RUNAWAY_EXPONENT
        if runaway:
            limit = "0" if scale and abs(value) < 1 else "infinity"
            notes.append(f"{name} = {value:.3g} ran off towards {limit}: the data do not pin this law down")
    return notes


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
    """Fit each law to `target` over the complete trials of `rows` with a positive target.

    `progress` hears one line before each law's fits (seconds to minutes each on a large sweep).
    """
    symbols = sorted({v for law in laws for v in law.variables} | {SIZE_SYMBOL})
    complete = [row for row in rows if row.get("state", "COMPLETE") == "COMPLETE"]
    columns = {s: np.array([_number(row.get(SYMBOLS[s])) for row in complete]) for s in symbols if s != SIZE_SYMBOL}
    columns[SIZE_SYMBOL] = model_sizes(complete)
    values = np.array([_number(row.get(target)) for row in complete])
    known = np.isfinite(values) & np.all([np.isfinite(c) for c in columns.values()], axis=0)
    used = known & (values > 0)
    data = {s: c[used] for s, c in columns.items()}
    sizes = sorted(set(data[SIZE_SYMBOL].tolist()))
    notes = []
    excluded_nonpositive = int(np.sum(known & ~used))
    if excluded_nonpositive:
        notes.append(f"{excluded_nonpositive} trial(s) with {target} <= 0 excluded: the fits are in log space, so they "
                     f"describe only the trials with a positive {target} (a selection on the outcome)")
    if len(sizes) < 2:
        notes.append(f"no fit: {len(sizes)} distinct model size(s) among the fitted trials, at least 2 needed")
    elif len(sizes) < 3:
        notes.append("no extrapolation check: it fits on all but the largest size, so needs at least 3 sizes")
    fitted = []
    for law in laws if len(sizes) >= 2 else []:
        if progress is not None:
            progress(f"fitting {law.name} to {target} over {int(np.sum(used))} trials")
        # Starts far from the optimum overflow on the way; the objective already scores those as penalties.
        with np.errstate(over="ignore", invalid="ignore"):
            fitted.append(_fit_law(law, data, values[used], len(sizes), bootstrap, seed))
    return TargetFits(
        target=target,
        trials=len(rows),
        keys=[row.get("trial", str(i)) for i, row in enumerate(complete) if used[i]],
        data=data,
        values=values[used],
        excluded_nonpositive=excluded_nonpositive,
        excluded_incomplete=len(rows) - int(np.sum(known)),
        sizes=sizes,
        notes=notes,
        laws=sorted(fitted, key=_held_out_error),
    )


def _fit_law(law: Law, data: dict[str, np.ndarray], target: np.ndarray, n_sizes: int, bootstrap: int, seed: int) -> LawFit:
    columns = {v: data[v] for v in (*law.variables, SIZE_SYMBOL)}
    notes = [f"{v} is the same in every fitted trial: its parameters are not identifiable" for v in law.variables
             if len(np.unique(columns[v])) == 1]
    if len(target) <= len(law.params):
        return LawFit(law, None, None, [*notes, f"no fit: {len(target)} points for {len(law.params)} parameters"])
    options = {"bootstrap": bootstrap, "seed": seed}
    try:
        fit = fit_law(law, columns, target, **options)
    except ValueError as error:
        return LawFit(law, None, None, [*notes, f"no fit: {error}"])
    notes += runaway_notes(law, fit.params)
    extrapolation = None
    train_points = int(np.sum(columns[SIZE_SYMBOL] < columns[SIZE_SYMBOL].max()))
    if n_sizes >= 3 and train_points > len(law.params):
        try:
            extrapolation = extrapolation_check(law, columns, target, SIZE_SYMBOL, **options)
        except ValueError as error:
            notes.append(f"no extrapolation check: {error}")
    elif n_sizes >= 3:
        notes.append(f"no extrapolation check: {train_points} points below the largest size for {len(law.params)} parameters")
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
            entry: dict[str, Any] = {"name": law_fit.law.name, "expression": law_fit.law.expression, "notes": law_fit.notes}
            if law_fit.fit is not None:
                entry |= {
                    "params": law_fit.fit.params,
                    "ci_low": _params(law_fit.fit.ci_low),
                    "ci_high": _params(law_fit.fit.ci_high),
                    "huber_loss": law_fit.fit.loss,
                    "points": law_fit.fit.n_points,
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
                }
            laws.append(entry)
        record["targets"][target] = {
            "trials": result.trials,
            "fitted_trials": result.keys,
            "excluded_nonpositive": result.excluded_nonpositive,
            "excluded_incomplete": result.excluded_incomplete,
            "model_sizes": result.sizes,
            "notes": result.notes,
            "best": result.best.law.name if result.best is not None else None,
            "laws": laws,
        }
    return record
