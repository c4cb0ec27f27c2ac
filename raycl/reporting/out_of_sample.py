"""Out-of-sample test of the registered laws and baselines on a rung larger than any the sweep ran.

Two steps, committed apart so that the predictions provably precede the measurement:

1. `predict_rung`: before the new rung exists, every registered law and baseline (raycl/analysis/protocol.yaml)
   is fitted on all the sweep's sizes and frozen; each predicts the objectives of the new rung at every distinct
   configuration the sweep ran on its largest rung (same budget, learning rate, replay ratio, stream length,
   tokens). The new rung's base loss L0 is extrapolated from the ladder by a Chinchilla-form law in N and
   pretraining tokens P N. The record carries the frozen parameters, a timestamp and the git commit.
2. `score_rung`: once the rung's trials ran, each frozen predictor predicts every measured trial from its measured
   inputs (its own L0 included) and is scored as the protocol scores (mean |relative error| of the objective,
   mean absolute error); beside it, the error of the numbers written in step 1 on the configurations that match.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raycl.analysis import scaling
from raycl.analysis.fits import fit_law, law_from_expression

MODEL = "model.name"
# The base model's loss against its size N and pretraining tokens P N (Hoffmann et al. 2022, eq. 2 form), in
# reference units; fitted on the median L0 of each (size, budget) the sweep ran.
BASE_LOSS_LAW = law_from_expression("base_loss", "E + A / (N/1e5)**a + B / (P*N/1e6)**b", ["E", "A", "a", "B", "b"])


def git_commit(directory: Path) -> dict[str, Any]:
    """The commit checked out in `directory` and whether the tree has uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _inputs(row: Mapping[str, Any], size: float, base_loss: float) -> dict[str, float]:
    """The law symbols of one trial row on a model of `size` with base loss `base_loss` (those it records)."""
    values = {symbol: scaling.number(row.get(column)) for symbol, column in scaling.SYMBOLS.items()}
    return {k: v for k, v in (values | {"N": size, "L0": base_loss}).items() if np.isfinite(v)}


def _columns(rows: Sequence[Mapping[str, Any]], symbols: Sequence[str]) -> dict[str, np.ndarray]:
    sizes = scaling.model_sizes(rows)
    return {
        s: sizes if s == scaling.SIZE_SYMBOL else np.array([scaling.number(r.get(scaling.SYMBOLS[s])) for r in rows])
        for s in symbols
    }


def _frozen_laws(complete: list[dict[str, Any]], target: str, protocol: scaling.Protocol, seed: int) -> list[dict]:
    """Every registered law and law baseline of `target`, fitted (no bootstrap) on the trials that have the
    columns all of them need, as `scaling.fit_target` selects them."""
    forms = [(spec.law, "law") for spec in protocol.specs() if spec.target == target]
    forms += [(form, "baseline") for entry in protocol.baselines_of(target) if (form := entry.law()) is not None]
    columns = _columns(complete, sorted({v for law, _ in forms for v in law.variables} | {scaling.SIZE_SYMBOL}))
    values = scaling.target_values(complete, target)
    used = (values > 0) & np.all([np.isfinite(c) for c in columns.values()], axis=0)
    frozen = []
    for law, kind in forms:
        entry: dict[str, Any] = {"name": law.name, "kind": kind, "expression": law.expression}
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                fit = fit_law(law, {v: columns[v][used] for v in law.variables}, values[used], bootstrap=0, seed=seed)
            entry["params"] = fit.params
        except ValueError as error:
            entry |= {"params": None, "note": f"no fit: {str(error).splitlines()[0]}"}
        frozen.append(entry)
    return frozen


def _frozen_baselines(rows: list[dict[str, Any]], target: str, protocol: scaling.Protocol) -> list[dict]:
    """The constant and next-smaller baselines of `target`, from all sizes (the next smaller: the largest)."""
    complete = [row for row in rows if row.get("state", "COMPLETE") == "COMPLETE"]
    sizes = scaling.model_sizes(complete)
    observed = np.array([scaling.number(row.get(target)) for row in complete])
    keep = np.isfinite(observed)
    largest = keep & (sizes == sizes[keep].max())
    frozen = []
    for entry in protocol.baselines_of(target):
        if entry.kind == "constant":
            frozen.append({"name": entry.name, "kind": "baseline", "value": float(observed[keep].mean())})
        elif entry.kind == "next_smaller":
            by: list[dict[str, Any]] = []
            columns = _columns(complete, entry.match)
            if entry.match:
                for key in sorted({tuple(columns[m][i] for m in entry.match) for i in np.flatnonzero(largest)}):
                    same = largest & np.all([columns[m] == value for m, value in zip(entry.match, key)], axis=0)
                    by.append(dict(zip(entry.match, key)) | {"value": float(observed[same].mean())})
            frozen.append(
                {
                    "name": entry.name,
                    "kind": "baseline",
                    "value": float(observed[largest].mean()),
                    "match": list(entry.match),
                    "by": by,
                }
            )
    return frozen


def frozen_prediction(predictor: Mapping[str, Any], target: str, inputs: Mapping[str, float]) -> float | None:
    """A frozen predictor's objective at `inputs` (None: it has no fit)."""
    if "expression" in predictor:
        if predictor.get("params") is None:
            return None
        params = predictor["params"]
        law = law_from_expression(predictor["name"], predictor["expression"], list(params))
        if not set(law.variables) <= set(inputs):
            return None
        theta = np.array([params[p] for p in law.params])
        fitted = law.predict(theta, {v: np.array([inputs[v]]) for v in law.variables})
        return float(scaling.objective_of(target, fitted, inputs.get("L0"))[0])
    for group in predictor.get("by", []):
        if all(group[m] == inputs.get(m) for m in predictor["match"]):
            return float(group["value"])
    return float(predictor["value"])


def _base_loss_fit(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """BASE_LOSS_LAW fitted on the median L0 of each (size, budget) of `rows`."""
    sizes = scaling.model_sizes(rows)
    groups: dict[tuple[float, float], list[float]] = {}
    for row, size in zip(rows, sizes):
        budget, loss = scaling.number(row.get(scaling.SYMBOLS["P"])), scaling.number(row.get("base_loss_before"))
        if np.isfinite(size) and np.isfinite(budget) and np.isfinite(loss):
            groups.setdefault((float(size), budget), []).append(loss)
    keys = sorted(groups)
    data = {"N": np.array([k[0] for k in keys]), "P": np.array([k[1] for k in keys])}
    fit = fit_law(BASE_LOSS_LAW, data, np.array([np.median(groups[k]) for k in keys]), bootstrap=0, seed=seed)
    return {"expression": BASE_LOSS_LAW.expression, "params": fit.params, "points": len(keys)}


def predict_rung(
    rows: list[dict[str, Any]],
    parameters: Sequence[str],
    rung: str,
    size: float,
    *,
    protocol: scaling.Protocol | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Step 1 (module doc): every registered predictor's objectives for rung `rung` of `size` non-embedding
    parameters, at each configuration (the searched `parameters` but the model) run on the largest rung."""
    protocol = protocol or scaling.load_protocol()
    complete = [row for row in rows if row.get("state", "COMPLETE") == "COMPLETE"]
    sizes = scaling.model_sizes(complete)
    largest = float(np.nanmax(sizes))
    if size <= largest:
        raise ValueError(f"--non-embedding-params {size:g}: not larger than the largest rung's {largest:g}")
    base_loss = _base_loss_fit(complete, seed)
    base_law = law_from_expression("base_loss", base_loss["expression"], list(base_loss["params"]))
    base_theta = np.array([base_loss["params"][p] for p in base_law.params])
    keys = [name for name in parameters if name != MODEL]
    configurations: dict[tuple, dict[str, Any]] = {}
    for row, n in zip(complete, sizes):
        if n == largest:
            configurations.setdefault(tuple(row.get(k) for k in keys), row)
    targets = {}
    for target in scaling.TARGETS:
        if progress is not None:
            progress(f"fitting the registered {target} predictors on all {len(set(sizes.tolist()))} sizes")
        predictors = _frozen_laws(complete, target, protocol, seed) + _frozen_baselines(complete, target, protocol)
        predicted = []
        for config, row in configurations.items():
            budget = scaling.number(row.get(scaling.SYMBOLS["P"]))
            l0 = float(base_law.predict(base_theta, {"N": np.array([size]), "P": np.array([budget])})[0])
            inputs = _inputs(row, size, l0)
            predicted.append(
                {
                    "configuration": dict(zip(keys, config)),
                    "inputs": inputs,
                    "predicted": {p["name"]: frozen_prediction(p, target, inputs) for p in predictors},
                }
            )
        targets[target] = {"predictors": predictors, "configurations": predicted}
    return {
        "rung": rung,
        "non_embedding_params": size,
        "predicted_at": _now(),
        "protocol_sha256": protocol.sha256,
        "fitted_sizes": sorted({float(n) for n in sizes if np.isfinite(n)}),
        "fitted_trials": len(complete),
        "largest_fitted_rung": largest,
        "base_loss": base_loss,
        "targets": targets,
    }


def score_rung(record: Mapping[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Step 2 (module doc): the record of step 1 with the rung's measured trials and each predictor's errors."""
    rung = record["rung"]
    measured = [r for r in rows if r.get(MODEL) == rung and r.get("state", "COMPLETE") == "COMPLETE"]
    if not measured:
        raise ValueError(f"no complete trial of {rung} among the {len(rows)} results")
    sizes = scaling.model_sizes(measured)
    scored: dict[str, Any] = {}
    for target, entry in record["targets"].items():
        trials = []
        for row, size in zip(measured, sizes):
            inputs = _inputs(row, float(size), scaling.number(row.get("base_loss_before")))
            config = entry["configurations"]
            match = next((c for c in config if all(_same(row.get(k), v) for k, v in c["configuration"].items())), None)
            trials.append(
                {
                    "trial": row.get("trial"),
                    "measured": scaling.number(row.get(target)),
                    "inputs": inputs,
                    "predicted": {p["name"]: frozen_prediction(p, target, inputs) for p in entry["predictors"]},
                    "preregistered": match["predicted"] if match else None,
                }
            )
        scored[target] = {"trials": trials, "errors": _errors(entry["predictors"], trials)}
    return dict(record) | {"measured_at": _now(), "measured_trials": len(measured), "measurements": scored}


def _same(a: Any, b: Any) -> bool:
    x, y = scaling.number(a), scaling.number(b)
    if np.isfinite(x) and np.isfinite(y):
        return bool(np.isclose(x, y, rtol=1e-9))
    return a == b


def _errors(predictors: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per predictor, lowest error first: mean |relative error| and mean |error| over the measured trials
    (frozen parameters at the measured inputs), and over those matching a step-1 configuration."""
    out = []
    for predictor in predictors:
        name = predictor["name"]
        pairs = [(t["predicted"][name], t["measured"]) for t in trials if t["measured"] != 0]
        pre = [(t["preregistered"][name], t["measured"]) for t in trials if t["preregistered"] and t["measured"] != 0]
        out.append(
            {"name": name, "kind": predictor["kind"]}
            | _summary(pairs, "")
            | _summary(pre, "preregistered_")
            | {"preregistered_trials": len(pre)}
        )
    return sorted(out, key=lambda e: np.inf if e["error"] is None else e["error"])


def _summary(pairs: Sequence[tuple[float | None, float]], prefix: str) -> dict[str, float | None]:
    if not pairs or any(p is None for p, _ in pairs):
        return {f"{prefix}error": None, f"{prefix}abs_error": None}
    predicted, measured = np.array([p for p, _ in pairs], dtype=float), np.array([m for _, m in pairs])
    return {
        f"{prefix}error": float(np.mean(np.abs(predicted - measured) / np.abs(measured))),
        f"{prefix}abs_error": float(np.mean(np.abs(predicted - measured))),
    }
