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

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


@dataclass(frozen=True)
class LawSpec:
    """A law to fit to one target metric."""

    law: Law
    target: str


class LawEntry(StrictModel):
    """One law of a laws file (`raycl report --laws`) or of the protocol: a target metric and an expression in
    the SYMBOLS."""

    name: str
    target: str
    expression: str
    params: list[str]
    size_params: int | None = Field(
        default=None, ge=0, description="parameters only differences in N determine; default: all"
    )
    scale_starts: list[float] | None = Field(
        default=None, description="start values of the scale parameters (variables in reference units)"
    )
    source: str = Field(default="", description="where the law's form comes from")
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
        law = law_from_expression(self.name, self.expression, self.params, self.size_params)
        unknown = [v for v in law.variables if v not in SYMBOLS]
        if unknown:
            raise ValueError(f"unknown variable(s) {unknown}; known: {', '.join(SYMBOLS)}")
        starts = tuple(self.scale_starts) if self.scale_starts else None
        self._law = dataclasses.replace(law, scale_starts=starts)
        return self

    def spec(self) -> LawSpec:
        return LawSpec(self._law, self.target)


class BaselineEntry(StrictModel):
    """A trivial predictor of the protocol that a law must beat (see protocol.yaml)."""

    name: str
    kind: Literal["constant", "next_smaller", "law"]
    description: str
    target: str | None = Field(default=None, description="the target it predicts; default: every target")
    match: list[str] = Field(default=[], description="next_smaller: symbols a trial shares with the size's trials")
    expression: str | None = None
    params: list[str] = []
    scale_starts: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BaselineEntry:
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(f"target {self.target!r} is not one of {list(TARGETS)}")
        if (self.kind == "law") != (self.expression is not None) or (self.kind == "law") != (self.target is not None):
            raise ValueError("a baseline of kind 'law' (and only that kind) needs an expression and a target")
        unknown = [m for m in self.match if m not in SYMBOLS]
        if unknown:
            raise ValueError(f"match names unknown symbol(s) {unknown}")
        return self

    def symbols(self) -> list[str]:
        """The symbols it reads besides the objective and N."""
        form = self.law()
        return [*self.match, *(form.variables if form is not None else ())]

    def law(self) -> Law | None:
        """The fitted form of a `law` baseline; None for the others."""
        if self.expression is None or self.target is None:
            return None
        entry = LawEntry(
            name=self.name,
            target=self.target,
            expression=self.expression,
            params=self.params,
            scale_starts=self.scale_starts,
        )
        return entry.spec().law


class Scoring(StrictModel):
    """How laws and baselines are scored and compared (see protocol.yaml)."""

    folds: Literal["leave_one_size_out"]
    bootstrap: int = Field(ge=100)
    level: float = Field(gt=0, lt=1)
    seed: int
    uninformative_ratio: float = Field(gt=1)


class Protocol(StrictModel):
    """The registered protocol: candidate laws, baselines and the scoring rule, and the hash of its file."""

    scoring: Scoring
    laws: list[LawEntry]
    baselines: list[BaselineEntry]
    sha256: str = ""
    path: str = ""

    def specs(self) -> list[LawSpec]:
        return [entry.spec() for entry in self.laws]

    def baselines_of(self, target: str) -> list[BaselineEntry]:
        return [b for b in self.baselines if b.target in (None, target)]


PROTOCOL_PATH = Path(__file__).with_name("protocol.yaml")


def load_protocol(path: str | Path = PROTOCOL_PATH) -> Protocol:
    """The protocol of `path` with the sha256 of its bytes; one-line ValueError naming the file otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the protocol ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with keys scoring, laws, baselines")
    protocol = validate(Protocol, data, str(path))
    names = [(entry.target, entry.name) for entry in protocol.laws]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: laws: a (target, name) pair is given twice")
    return protocol.model_copy(update={"sha256": hashlib.sha256(raw).hexdigest(), "path": str(path)})


def default_laws() -> list[LawSpec]:
    """The registered candidate laws (protocol.yaml): Bethune et al.'s family, a saturating law,
    Kalajdzievski's and the D-CPT form for forgetting; power laws in size and tokens for learning."""
    return load_protocol().specs()


def registered_law(name: str, target: str = "forgetting") -> Law:
    """A registered law by name."""
    return next(spec.law for spec in default_laws() if spec.law.name == name and spec.target == target)


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
    laws: list[LawFit]  # in the order of the ranking, then those not scored by held-out error
    scores: Scoreboard | None = None  # None when no law could be fitted

    @property
    def best(self) -> LawFit | None:
        """The law the protocol's ranking puts first (lowest leave-one-size-out error); None when none is scored."""
        best = self.scores.best_law if self.scores is not None else None
        return next((law for law in self.laws if best is not None and law.law.name == best.name), None)


def number(value: Any) -> float:
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
    counts = np.array([number(row.get("num_params_non_embedding", row.get("num_params"))) for row in rows])
    names = [row.get("model.name") for row in rows]
    smallest: dict[Any, float] = {}
    for name, count in zip(names, counts):
        if name is not None and np.isfinite(count):
            smallest[name] = min(smallest.get(name, np.inf), count)
    return np.array([smallest.get(name, count) if name is not None else count for name, count in zip(names, counts)])


def target_values(rows: Sequence[Mapping[str, Any]], target: str) -> np.ndarray:
    """What the laws of `target` predict, per trial (see TARGETS): positive whatever the outcome."""
    if target == "forgetting":
        return np.array([number(row.get("base_loss_before")) + number(row.get("forgetting")) for row in rows])
    return np.array([1.0 - number(row.get("learning")) for row in rows])


def objective_of(target: str, fitted: np.ndarray, base_loss: Any) -> np.ndarray:
    """A target's objective from its fitted quantity (see TARGETS): forgetting = fitted - L0, learning = 1 - fitted."""
    return fitted - base_loss if target == "forgetting" else 1.0 - fitted


def interval_uninformative(low: float | None, high: float | None, ratio: float) -> bool | None:
    """Whether an interval of a positive quantity is too wide to check a measurement against: it reaches zero,
    or its high end exceeds its low end by more than `ratio`. None without an interval."""
    if low is None or high is None:
        return None
    return bool(low <= 0 or high > ratio * low)


@dataclass(frozen=True, eq=False)
class LosoScore:
    """One predictor's leave-one-size-out predictions of the objective, one per trial (NaN: none)."""

    name: str
    kind: str  # "law" or "baseline"
    predicted: np.ndarray
    observed: np.ndarray
    notes: list[str]

    @property
    def scored(self) -> np.ndarray:
        """The trials scored: those whose measured objective is not zero (a relative error needs it)."""
        return self.observed != 0

    @property
    def complete(self) -> bool:
        """Whether it predicted every scored trial (only then is it ranked)."""
        return bool(np.all(np.isfinite(self.predicted[self.scored])))

    @property
    def relative_errors(self) -> np.ndarray:
        """|predicted - measured| / |measured| per scored trial."""
        observed = self.observed[self.scored]
        return np.abs(self.predicted[self.scored] - observed) / np.abs(observed)

    @property
    def loso_error(self) -> float | None:
        """Mean |relative error| of the objective over the scored trials (None unless complete)."""
        return float(np.mean(self.relative_errors)) if self.complete else None

    @property
    def loso_abs_error(self) -> float | None:
        """Mean |error| in the objective's units over the scored trials (nats for forgetting; None unless complete)."""
        error = np.abs(self.predicted - self.observed)[self.scored]
        return float(np.mean(error)) if self.complete else None


@dataclass(frozen=True)
class PairedDifference:
    """Mean relative error of `law` minus that of `baseline`, with a paired bootstrap interval over trials."""

    law: str
    baseline: str
    mean: float
    ci_low: float
    ci_high: float
    level: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.ci_high < 0 or self.ci_low > 0


def paired_difference(law: LosoScore, baseline: LosoScore, resamples: int, level: float, seed: int) -> PairedDifference:
    """The difference of mean relative errors, resampling trials with the same indices for both predictors."""
    errors = law.relative_errors - baseline.relative_errors
    rng = np.random.default_rng(seed)
    means = errors[rng.integers(0, len(errors), (resamples, len(errors)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(law.name, baseline.name, float(errors.mean()), float(low), float(high), level, resamples)


@dataclass(frozen=True, eq=False)
class Scoreboard:
    """Laws and baselines scored by the protocol: ranked by loso_error, best law against best baseline."""

    protocol_sha256: str
    laws: list[LosoScore]
    baselines: list[LosoScore]
    comparison: PairedDifference | None  # None when no law or no baseline is complete

    @property
    def ranking(self) -> list[LosoScore]:
        """Complete predictors, lowest loso_error first."""
        return sorted((s for s in [*self.laws, *self.baselines] if s.complete), key=lambda s: s.loso_error or 0.0)

    @property
    def best_law(self) -> LosoScore | None:
        return next((s for s in self.ranking if s.kind == "law"), None)

    @property
    def best_baseline(self) -> LosoScore | None:
        return next((s for s in self.ranking if s.kind == "baseline"), None)

    def of(self, name: str) -> LosoScore | None:
        """The law's score (None: not scored)."""
        return next((s for s in self.laws if s.name == name), None)


def _neighbour(size: float, others: Sequence[float]) -> float:
    """The next-smaller size among `others`, or for the smallest the next larger."""
    smaller = [s for s in others if s < size]
    return max(smaller) if smaller else min(s for s in others if s > size)


def _baseline_predictions(
    baseline: BaselineEntry, data: dict[str, np.ndarray], observed: np.ndarray, held: np.ndarray
) -> np.ndarray:
    """A constant or next-smaller baseline's predictions for the `held` trials, from the others."""
    train = ~held
    if baseline.kind == "constant":
        return np.full(int(held.sum()), observed[train].mean())
    sizes = data[SIZE_SYMBOL]
    nearest = sizes == _neighbour(float(sizes[held][0]), sorted(set(sizes[train].tolist())))
    predictions = []
    for i in np.flatnonzero(held):
        same = nearest & np.all([data[m] == data[m][i] for m in baseline.match], axis=0)
        predictions.append(observed[same].mean() if same.any() else observed[nearest].mean())
    return np.array(predictions)


def _fold_fit(law: Law, data: dict[str, np.ndarray], values: np.ndarray, train: np.ndarray, seed: int) -> FitResult:
    """`law` fitted on the `train` trials without bootstrap; ValueError when those cannot determine it."""
    sizes = len(np.unique(data[SIZE_SYMBOL][train]))
    size_params = law.size_params if law.size_params is not None else len(law.params)
    if SIZE_SYMBOL in law.variables and sizes <= size_params:
        raise ValueError(f"{sizes} distinct size(s) for {size_params} size parameter(s)")
    if int(train.sum()) <= len(law.params):
        raise ValueError(f"{int(train.sum())} points for {len(law.params)} parameters")
    with np.errstate(over="ignore", invalid="ignore"):
        return fit_law(law, {v: data[v][train] for v in law.variables}, values[train], bootstrap=0, seed=seed)


def loso_score(
    name: str,
    kind: str,
    target: str,
    data: dict[str, np.ndarray],
    values: np.ndarray,
    *,
    law: Law | None = None,
    baseline: BaselineEntry | None = None,
    seed: int = 0,
) -> LosoScore:
    """Leave-one-size-out predictions of the objective by a law (fitted on the other sizes) or a baseline."""
    observed = objective_of(target, values, data.get("L0"))
    predicted = np.full(len(values), np.nan)
    reads = [*(law.variables if law is not None else ()), *(baseline.match if baseline is not None else ())]
    lacking = sorted({v for v in reads if not np.all(np.isfinite(data.get(v, np.array([np.nan]))))})
    if lacking:
        return LosoScore(
            name, kind, predicted, observed, [f"no prediction: {', '.join(lacking)} missing in some trials"]
        )
    notes = []
    for size in sorted(set(data[SIZE_SYMBOL].tolist())):
        held = data[SIZE_SYMBOL] == size
        if law is None:
            assert baseline is not None
            predicted[held] = _baseline_predictions(baseline, data, observed, held)
            continue
        try:
            fit = _fold_fit(law, data, values, ~held, seed)
        except ValueError as error:
            notes.append(f"no prediction for size {size:g}: {str(error).splitlines()[0]}")
            continue
        fitted = fit.predict({v: data[v][held] for v in law.variables})
        predicted[held] = objective_of(target, fitted, data["L0"][held] if "L0" in data else None)
    return LosoScore(name, kind, predicted, observed, notes)


def score_target(
    target: str,
    data: dict[str, np.ndarray],
    values: np.ndarray,
    laws: Sequence[Law],
    protocol: Protocol,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Scoreboard:
    """Every law and every baseline of `protocol` for `target`, scored leave-one-size-out (see protocol.yaml)."""
    baselines = []
    for entry in protocol.baselines_of(target):
        form = entry.law()
        if form is not None and progress is not None:
            progress(f"leave-one-size-out: baseline {entry.name} on {target}")
        baselines.append(loso_score(entry.name, "baseline", target, data, values, law=form, baseline=entry, seed=seed))
    scored = []
    for law in laws:
        if progress is not None:
            progress(f"leave-one-size-out: {law.name} on {target}")
        scored.append(loso_score(law.name, "law", target, data, values, law=law, seed=seed))
    board = Scoreboard(protocol.sha256, scored, baselines, None)
    best_law, best_baseline = board.best_law, board.best_baseline
    if best_law is None or best_baseline is None:
        return board
    scoring = protocol.scoring
    comparison = paired_difference(best_law, best_baseline, scoring.bootstrap, scoring.level, scoring.seed)
    return dataclasses.replace(board, comparison=comparison)


def _held_out_error(law: LawFit) -> float:
    return law.extrapolation.mean_abs_rel_error if law.extrapolation is not None else np.inf


def fit_target(
    rows: list[dict[str, Any]],
    target: str,
    laws: list[Law],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    protocol: Protocol | None = None,
    progress: Callable[[str], None] | None = None,
) -> TargetFits:
    """Fit each law to `target` over every complete trial of `rows` that has the columns the laws need, and
    score laws and baselines by `protocol` (default: the registered one) over the same trials.

    `progress` hears one line before each law's fits (seconds to minutes each on a large sweep).
    """
    protocol = protocol or load_protocol()
    needed = {v for law in laws for v in law.variables} | {SIZE_SYMBOL} | ({"L0"} if target == "forgetting" else set())
    # Columns only a baseline reads do not exclude trials; a baseline lacking one in some trial is not ranked.
    extra = {v for entry in protocol.baselines_of(target) for v in entry.symbols()} - needed
    complete = [row for row in rows if row.get("state", "COMPLETE") == "COMPLETE"]
    columns = {
        s: np.array([number(row.get(SYMBOLS[s])) for row in complete])
        for s in sorted(needed | extra)
        if s != SIZE_SYMBOL
    }
    columns[SIZE_SYMBOL] = model_sizes(complete)
    values = target_values(complete, target)
    used = (values > 0) & np.all([np.isfinite(columns[s]) for s in needed], axis=0)
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
    scores = None
    if len(sizes) >= 2:
        scorable = [law_fit.law for law_fit in fitted if law_fit.fit is not None]
        scores = score_target(target, data, values[used], scorable, protocol, seed=seed, progress=progress)
    rank = {score.name: i for i, score in enumerate(scores.ranking)} if scores is not None else {}
    return TargetFits(
        target=target,
        trials=len(rows),
        keys=[row.get("trial", str(i)) for i, row in enumerate(complete) if used[i]],
        data=data,
        values=values[used],
        excluded_incomplete=len(rows) - int(np.sum(used)),
        sizes=sizes,
        notes=notes,
        laws=sorted(fitted, key=lambda law: (rank.get(law.law.name, len(rank)), _held_out_error(law))),
        scores=scores,
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


def refit(result: TargetFits, law: Law, *, bootstrap: int, seed: int = 0) -> LawFit:
    """`law` fitted again on the trials of `result`, with `bootstrap` resamples (and its extrapolation check)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _fit_law(law, result.data, result.values, bootstrap, seed)


def fit_sweep(
    rows: list[dict[str, Any]],
    specs: list[LawSpec],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    protocol: Protocol | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, TargetFits]:
    """Fits of every target some law names, in the order of `TARGETS`, scored by `protocol` (default: registered)."""
    protocol = protocol or load_protocol()
    laws = {target: [s.law for s in specs if s.target == target] for target in TARGETS}
    return {
        target: fit_target(
            rows, target, laws[target], bootstrap=bootstrap, seed=seed, protocol=protocol, progress=progress
        )
        for target in TARGETS
        if laws[target]
    }


def _params(values: dict[str, float]) -> dict[str, float | None]:
    return {name: (value if np.isfinite(value) else None) for name, value in values.items()}


def _score_entry(score: LosoScore | None) -> dict[str, Any]:
    if score is None:
        return {"loso_error": None, "loso_abs_error": None}
    return {"loso_error": score.loso_error, "loso_abs_error": score.loso_abs_error, "loso_notes": score.notes}


def comparison_record(comparison: PairedDifference | None) -> dict[str, Any] | None:
    """The best law against the best baseline, JSON-ready (negative: the law's error is lower)."""
    if comparison is None:
        return None
    return {
        "law": comparison.law,
        "baseline": comparison.baseline,
        "difference": "mean relative error of the law minus that of the baseline, over the same trials",
        "mean": comparison.mean,
        "ci_low": comparison.ci_low,
        "ci_high": comparison.ci_high,
        "level": comparison.level,
        "resamples": comparison.resamples,
        "excludes_zero": comparison.excludes_zero,
        "law_better": comparison.ci_high < 0,
    }


def fits_record(fits: dict[str, TargetFits], protocol: Protocol | None = None) -> dict[str, Any]:
    """The fits as JSON-ready data (fits.json): parameters with 95% intervals, the protocol's scores and ranking
    of laws and baselines, the largest-size extrapolation check, exclusions."""
    protocol = protocol or load_protocol()
    registered = {(entry.target, entry.name) for entry in protocol.laws}
    record: dict[str, Any] = {
        "protocol_sha256": protocol.sha256,
        "protocol": "raycl/analysis/protocol.yaml",
        "scoring": protocol.scoring.model_dump(),
        "symbols": SYMBOLS,
        "baselines": [],
        "targets": {},
    }
    for target, result in fits.items():
        scores = result.scores
        for baseline in protocol.baselines_of(target):
            score = next((s for s in scores.baselines if s.name == baseline.name), None) if scores else None
            record["baselines"].append(
                {"target": target, "name": baseline.name, "kind": baseline.kind, "description": baseline.description}
                | ({"expression": baseline.expression} if baseline.expression else {})
                | _score_entry(score)
            )
        laws = []
        for law_fit in result.laws:
            entry: dict[str, Any] = {
                "name": law_fit.law.name,
                "expression": law_fit.law.expression,
                "registered": (target, law_fit.law.name) in registered,
                "notes": law_fit.notes,
            } | _score_entry(scores.of(law_fit.law.name) if scores else None)
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
            "ranking": [
                {"name": s.name, "kind": s.kind, "loso_error": s.loso_error, "loso_abs_error": s.loso_abs_error}
                for s in (scores.ranking if scores else [])
            ],
            "best_law_vs_best_baseline": comparison_record(scores.comparison if scores else None),
            "laws": laws,
        }
    return record
