"""The data behind every report figure, computed by pure functions; `raycl.analysis.render` only draws it.

Inputs are plain data: a trial table (one dict per trial: final metrics and dotted config keys, see
`raycl.analysis.scaling`), MLflow curves as (step, value) pairs, a trial's stage-matrix record and the
scaling-law fits. Trials whose objectives are missing (failed) never appear in a front or a history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from raycl.analysis.fits import FitCurve, fit_curve
from raycl.analysis.frontier import Frontier
from raycl.analysis.pareto import Direction
from raycl.analysis.scaling import SIZE_SYMBOL, LawFit, TargetFits, model_sizes
from raycl.config.records import EVAL_PREFIX

CURVE_METRICS = (f"{EVAL_PREFIX}new_loss", f"{EVAL_PREFIX}base_loss")


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    values = [row.get(name) for row in rows]
    return np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in values])


@dataclass(frozen=True, eq=False)
class ParetoFigure:
    """The first two objectives of every trial, coloured by model size; the front is over all objectives."""

    x_name: str
    y_name: str
    directions: tuple[Direction, Direction]
    keys: list[str]
    x: np.ndarray
    y: np.ndarray
    sizes: np.ndarray  # base-model parameters (`model_sizes`), NaN where unknown
    feasible: np.ndarray
    pareto: np.ndarray
    front_order: np.ndarray  # indices of the Pareto trials by increasing x, to join them as a line


def pareto_figure(rows: Sequence[Mapping[str, Any]], data: Frontier) -> ParetoFigure:
    """Pareto data of `rows` (complete trials, sized by `model_sizes`) from their frontier `data`."""
    if len(data.objectives) < 2:
        raise ValueError(f"a Pareto figure needs two objectives, got {data.objectives}")
    front = np.flatnonzero(data.pareto)
    return ParetoFigure(
        x_name=data.objectives[0],
        y_name=data.objectives[1],
        directions=(data.directions[0], data.directions[1]),
        keys=data.keys,
        x=data.values[:, 0],
        y=data.values[:, 1],
        sizes=model_sizes(rows),
        feasible=data.feasible,
        pareto=data.pareto,
        front_order=front[np.argsort(data.values[front, 0], kind="stable")],
    )


@dataclass(frozen=True, eq=False)
class FitFigure:
    """One law's fit of one target against model size, with its bootstrap band and the held-out points.

    The fit drawn is the extrapolation fit (without the largest size) when there is one. Points are
    rescaled by the fitted law to the curve's fixed values of the other variables,
    ``observed * f(x_i, held) / f(x_i, own values)``, so that a law that fits puts them on the curve.
    """

    target: str
    law: str
    expression: str
    vary: str
    curve: FitCurve
    keys: list[str]
    x: np.ndarray
    observed: np.ndarray
    adjusted: np.ndarray
    held_out: np.ndarray  # the largest size, left out of the fit drawn
    held_out_size: float | None
    held_out_error: float | None  # mean |relative error| on the held-out points


def fit_figure(fits: TargetFits, law_fit: LawFit, num: int = 100) -> FitFigure:
    """Curve and points of `law_fit` (which must hold a fit) over the trials of `fits`."""
    if law_fit.fit is None:
        raise ValueError(f"{law_fit.law.name} has no fit to draw")
    extrapolation = law_fit.extrapolation
    fit = extrapolation.fit if extrapolation is not None else law_fit.fit
    variables = fit.law.variables
    vary = SIZE_SYMBOL if SIZE_SYMBOL in variables else variables[0]
    data = {v: fits.data[v] for v in variables}
    curve = fit_curve(fit, data, vary, num)
    at_held = {v: np.full(len(fits.values), curve.held[v]) for v in variables if v != vary} | {vary: data[vary]}
    adjusted = fits.values * fit.predict(at_held) / fit.predict(data)
    held_out = extrapolation.held_out if extrapolation is not None else np.zeros(len(fits.values), bool)
    return FitFigure(
        target=fits.target,
        law=fit.law.name,
        expression=fit.law.expression,
        vary=vary,
        curve=curve,
        keys=list(fits.keys),
        x=data[vary],
        observed=fits.values,
        adjusted=adjusted,
        held_out=held_out,
        held_out_size=extrapolation.held_out_size if extrapolation is not None else None,
        held_out_error=extrapolation.mean_abs_rel_error if extrapolation is not None else None,
    )


@dataclass(frozen=True, eq=False)
class Heatmap:
    """A trial's stage matrix: R[i][j] = held-out loss on stage j after training stage i (row 0: before)."""

    key: str
    row_labels: list[str]
    column_labels: list[str]
    values: np.ndarray
    retention: list[float]  # base-distribution loss per row: its rise is the forgetting


def stage_heatmap(key: str, record: Mapping[str, Any]) -> Heatmap:
    """Heatmap data of one `stage_matrix.json` record (stage_names, stage_matrix, retention_losses)."""
    names = list(record["stage_names"])
    values = np.array(record["stage_matrix"], dtype=float)
    if values.shape != (len(names) + 1, len(names)):
        raise ValueError(f"{key}: stage matrix has shape {values.shape}, expected {(len(names) + 1, len(names))}")
    return Heatmap(
        key=key,
        row_labels=["before", *(f"after {name}" for name in names)],
        column_labels=names,
        values=values,
        retention=[float(v) for v in record.get("retention_losses", [])],
    )


@dataclass(frozen=True, eq=False)
class CurveLine:
    key: str
    steps: np.ndarray
    values: np.ndarray
    size: float  # base-model parameters, NaN when unknown
    pareto: bool


@dataclass(frozen=True)
class CurvePanel:
    """One evaluation metric against training step, one line per trial."""

    metric: str
    lines: list[CurveLine]


def learning_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    sizes: Mapping[str, float],
    pareto: Sequence[str] = (),
    metrics: Sequence[str] = CURVE_METRICS,
) -> list[CurvePanel]:
    """Per metric, each trial's (step, value) history sorted by step; trials lacking the metric are left out."""
    panels = []
    for metric in metrics:
        lines = []
        for key, history in curves.items():
            points = sorted(history.get(metric, ()))
            if points:
                steps, values = (np.array(column, dtype=float) for column in zip(*points))
                lines.append(CurveLine(key, steps, values, float(sizes.get(key, np.nan)), key in pareto))
        panels.append(CurvePanel(metric, lines))
    return panels


@dataclass(frozen=True, eq=False)
class SensitivityPanel:
    """One objective against one searched parameter over the trials that set it.

    Numeric parameters carry Spearman's rank correlation (NaN with fewer than 3 trials or a constant
    column); categorical ones carry their categories, and `x` holds each trial's category index.
    """

    objective: str
    parameter: str
    keys: list[str]
    x: np.ndarray
    y: np.ndarray
    categories: list[str] | None
    log_x: bool
    rank_correlation: float


def sensitivity(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    parameters: Sequence[str],
    log_parameters: Sequence[str] = (),
    category_order: Mapping[str, Sequence[Any]] | None = None,
) -> list[SensitivityPanel]:
    """One panel per (objective, parameter), objectives major; trials without the parameter are skipped.

    Categories follow `category_order[parameter]` (e.g. a space's choices, model sizes ascending) where
    given, else sort alphabetically.
    """
    panels = []
    for objective in objectives:
        for parameter in parameters:
            chosen = [
                row for row in rows if row.get(parameter) is not None and isinstance(row.get(objective), (int, float))
            ]
            y = np.array([float(row[objective]) for row in chosen])
            raw = [row[parameter] for row in chosen]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
            present = {str(v) for v in raw}
            order = [str(v) for v in (category_order or {}).get(parameter, ())]
            categories = None if numeric else [v for v in order if v in present] + sorted(present - set(order))
            x = (
                np.array(raw, dtype=float)
                if categories is None
                else np.array([categories.index(str(v)) for v in raw], dtype=float)
            )
            rho = float("nan")
            if numeric and len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                # scipy's array-API decorator hides the SignificanceResult type.
                rho = float(spearmanr(x, y).statistic)  # pyright: ignore[reportAttributeAccessIssue]
            panels.append(
                SensitivityPanel(
                    objective=objective,
                    parameter=parameter,
                    keys=[str(row.get("trial", i)) for i, row in enumerate(chosen)],
                    x=x,
                    y=y,
                    categories=categories,
                    log_x=numeric and parameter in log_parameters and len(x) > 0 and bool(np.all(x > 0)),
                    rank_correlation=rho,
                )
            )
    return panels
