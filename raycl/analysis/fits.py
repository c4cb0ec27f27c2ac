"""Scaling-law fitting for sweep results, the way careful Chinchilla replications do it.

Method (Hoffmann et al. 2022, "Approach 3", as re-done by Besiroglu et al. 2024,
"Chinchilla Scaling: A replication attempt"):

* a law is a parametric expression, parsed safely with ``ast`` (numbers, names, ``+ - * /
  **``, unary minus and ``exp``/``log``/``sqrt`` only); exact gradients come from
  forward-mode differentiation of the parsed tree, so tight optimizer tolerances are
  meaningful;
* the objective is the Huber loss (delta 1e-3) of the log-space residuals
  ``log(pred) - log(target)``, *summed* over points: log space weighs small and large
  losses equally, and Huber makes the fit robust to outlying runs;
* it is minimized with L-BFGS-B from every point of a grid of initial values, keeping the
  best, because the landscape has many poor local minima; scale parameters (names
  starting with an uppercase letter, e.g. ``E``, ``A``, ``B``) are optimized as log-values,
  which keeps them positive and lets them span orders of magnitude;
* parameters are bounded (scales within 1e+-12, others within +-5), and a fit that ends on a
  bound says so: the data do not pin that parameter down;
* uncertainty comes from a bootstrap over points (percentile 95% intervals); each refit starts
  from the full-data optimum *and* from random points of the start grid, so a parameter the data
  do not determine gets a wide interval instead of staying where the full-data fit left it;
* inside a `parallel_fits` block the starts and the bootstrap refits run in worker processes; every
  resample and start is drawn up front from the one seeded generator, so the results are the same
  bit for bit whatever the number of workers;
* a law is judged by extrapolation: fit without the largest model size, predict it.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import multiprocessing
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

_PENALTY = 1e12  # objective value where the prediction is non-positive or non-finite
_OPTIONS = {"ftol": 1e-12, "gtol": 1e-12, "maxiter": 10_000, "maxfun": 20_000}
_DEFAULT_SCALE_GRID = (1e-2, 1.0, 1e2, 1e4)
_DEFAULT_EXPONENT_GRID = (0.1, 0.5, 1.0)
_SCALE_BOUND, _EXPONENT_BOUND = 1e12, 5.0  # |log| of scale parameters, |value| of the others
_BOOTSTRAP_STARTS = 8  # starts per bootstrap refit: the full-data optimum and random grid points
# Grid starts optimized in full: those whose loss is lowest where they start. The grids hold 1,296 to 2,187
# starts per law, and on the scaling_laws sweep the best of the 32 lowest reached the best fit of them all.
_SCREENED_STARTS = 32
_TASKS_PER_WORKER = 8  # chunks of starts or refits per worker and phase: small enough to balance the load
_pool: tuple[Executor, int] | None = None  # the process pool of the enclosing `parallel_fits` block, its workers

# A value and its gradient w.r.t. the parameter vector, shape (n_params, 1 or n_points),
# or None when the value does not depend on any parameter.
_Dual = tuple[Any, "np.ndarray | None"]


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a + b


def _scale(g: np.ndarray | None, factor: Any) -> np.ndarray | None:
    return None if g is None else g * factor


# Forward-mode rules: (value, gradient) of each operation from those of its operands.
def _negate(v: Any, g: np.ndarray | None) -> _Dual:
    return -v, _scale(g, -1.0)


def _exp(v: Any, g: np.ndarray | None) -> _Dual:
    out = np.exp(v)
    return out, _scale(g, out)


def _log(v: Any, g: np.ndarray | None) -> _Dual:
    return np.log(v), _scale(g, 1.0 / v)


def _sqrt(v: Any, g: np.ndarray | None) -> _Dual:
    out = np.sqrt(v)
    return out, _scale(g, 0.5 / out)


def _pow(a: Any, ga: np.ndarray | None, b: Any, gb: np.ndarray | None) -> _Dual:
    out = a**b
    d_base = None if ga is None else ga * (b * a ** (b - 1))
    d_exponent = None if gb is None else gb * (out * np.log(a))
    return out, _add(d_base, d_exponent)


def _div(a: Any, ga: np.ndarray | None, b: Any, gb: np.ndarray | None) -> _Dual:
    out = a / b
    return out, _add(_scale(ga, 1.0 / b), _scale(gb, -out / b))


_FUNCTIONS: dict[str, Callable[[Any, np.ndarray | None], _Dual]] = {
    "exp": _exp,
    "log": _log,
    "sqrt": _sqrt,
}
_BINARY_RULES: dict[type, Callable[..., _Dual]] = {
    ast.Add: lambda a, ga, b, gb: (a + b, _add(ga, gb)),
    ast.Sub: lambda a, ga, b, gb: (a - b, _add(ga, _scale(gb, -1.0))),
    ast.Mult: lambda a, ga, b, gb: (a * b, _add(_scale(ga, b), _scale(gb, a))),
    ast.Div: _div,
    ast.Pow: _pow,
}


def _reject(node: ast.AST, expression: str, what: str) -> ValueError:
    token = ast.get_source_segment(expression, node) or type(node).__name__
    return ValueError(f"{what} {token!r} in expression {expression!r}")


def _validate(node: ast.AST, expression: str) -> None:
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise _reject(node, expression, "unsupported constant")
    elif isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise _reject(node, expression, "function used as a name")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY_RULES:
            raise _reject(node, expression, f"unsupported operator {type(node.op).__name__} in")
        _validate(node.left, expression)
        _validate(node.right, expression)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub):
            raise _reject(node, expression, f"unsupported operator {type(node.op).__name__} in")
        _validate(node.operand, expression)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _reject(node.func, expression, "unsupported callee")
        if node.func.id not in _FUNCTIONS:
            raise _reject(node.func, expression, "unsupported function")
        if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
            raise _reject(node, expression, "functions take exactly one argument:")
        _validate(node.args[0], expression)
    else:
        raise _reject(node, expression, f"unsupported syntax ({type(node).__name__})")


@functools.cache
def _parse(expression: str) -> ast.expr:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse expression {expression!r}: {exc.msg}") from None
    _validate(tree.body, expression)
    return tree.body


def _names(tree: ast.expr) -> tuple[str, ...]:
    """Names in the expression (functions excluded), in order of first appearance."""
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in callees]
    nodes.sort(key=lambda n: n.col_offset)
    return tuple(dict.fromkeys(n.id for n in nodes))


def _compile(node: ast.expr) -> Callable[[Mapping[str, _Dual]], _Dual]:
    """Turn a validated tree into closures computing the value and its gradient."""
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))  # validated: numeric constants only
        constant = (float(node.value), None)
        return lambda env: constant
    if isinstance(node, ast.Name):
        name = node.id
        return lambda env: env[name]
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        return lambda env: _negate(*operand(env))
    if isinstance(node, ast.Call):
        argument, function = _compile(node.args[0]), _FUNCTIONS[node.func.id]  # type: ignore
        return lambda env: function(*argument(env))
    assert isinstance(node, ast.BinOp)
    left, right, rule = _compile(node.left), _compile(node.right), _BINARY_RULES[type(node.op)]
    return lambda env: rule(*left(env), *right(env))


@functools.cache
def _unit_columns(size: int) -> tuple[np.ndarray, ...]:
    """The gradient of each parameter w.r.t. the parameter vector: the columns of the identity, shape (size, 1)."""
    eye = np.eye(size)
    return tuple(eye[:, j : j + 1] for j in range(size))


@functools.cache
def _program(expression: str) -> Callable[[Mapping[str, _Dual]], _Dual]:
    return _compile(_parse(expression))


class _Emitter:
    """Straight-line Python source for the value and gradient of a validated tree: the operations of `_compile`'s
    rules in the same order, so the same floats, without a call per node. Which nodes have a gradient is known
    when emitting (those that contain a parameter), so no line tests for None."""

    def __init__(self, params: Sequence[str]) -> None:
        self.params, self.lines, self.count = list(params), [], 0
        self.constants: dict[str, float] = {}

    def _new(self, value: str, gradient: str | None) -> tuple[str, str | None]:
        self.count += 1
        v = f"v{self.count}"
        self.lines.append(f"{v} = {value}")
        if gradient is None:
            return v, None
        self.lines.append(f"g{self.count} = {gradient}")
        return v, f"g{self.count}"

    @staticmethod
    def _sum(a: str | None, b: str | None) -> str | None:
        if a is None:
            return b
        return a if b is None else f"{a} + {b}"

    def emit(self, node: ast.expr) -> tuple[str, str | None]:
        if isinstance(node, ast.Constant):
            name = f"c{len(self.constants)}"
            self.constants[name] = float(node.value)  # type: ignore[arg-type]  # validated: numeric constants only
            return name, None
        if isinstance(node, ast.Name):
            if node.id in self.params:
                j = self.params.index(node.id)
                return f"theta[{j}]", f"units[{j}]"
            return f"columns[{node.id!r}]", None
        if isinstance(node, ast.UnaryOp):
            v, g = self.emit(node.operand)
            return self._new(f"-{v}", None if g is None else f"{g} * -1.0")
        if isinstance(node, ast.Call):
            v, g = self.emit(node.args[0])
            name = node.func.id  # type: ignore[attr-defined]  # validated: a Name
            if name == "exp":
                out = self._new(f"np.exp({v})", None)[0]
                return self._new(out, None if g is None else f"{g} * {out}")
            if name == "log":
                return self._new(f"np.log({v})", None if g is None else f"{g} * (1.0 / {v})")
            out = self._new(f"np.sqrt({v})", None)[0]
            return self._new(out, None if g is None else f"{g} * (0.5 / {out})")
        assert isinstance(node, ast.BinOp)
        (a, ga), (b, gb) = self.emit(node.left), self.emit(node.right)
        op = type(node.op)
        if op is ast.Add:
            return self._new(f"{a} + {b}", self._sum(ga, gb))
        if op is ast.Sub:
            return self._new(f"{a} - {b}", self._sum(ga, None if gb is None else f"{gb} * -1.0"))
        if op is ast.Mult:
            return self._new(
                f"{a} * {b}", self._sum(None if ga is None else f"{ga} * {b}", None if gb is None else f"{gb} * {a}")
            )
        out = self._new(f"{a} / {b}" if op is ast.Div else f"{a} ** {b}", None)[0]
        if op is ast.Div:
            gradient = self._sum(
                None if ga is None else f"{ga} * (1.0 / {b})", None if gb is None else f"{gb} * (-{out} / {b})"
            )
        else:
            gradient = self._sum(
                None if ga is None else f"{ga} * ({b} * {a} ** ({b} - 1))",
                None if gb is None else f"{gb} * ({out} * np.log({a}))",
            )
        return self._new(out, gradient)


@functools.cache
def _straight_line(expression: str, params: tuple[str, ...]) -> Callable[..., tuple[Any, np.ndarray | None]]:
    """`f(theta, columns, units)`: value and gradient of `expression`, as `_program` computes them."""
    emitter = _Emitter(params)
    value, gradient = emitter.emit(_parse(expression))
    body = "".join(f"    {line}\n" for line in emitter.lines)
    source = f"def f(theta, columns, units):\n{body}    return {value}, {gradient}\n"
    namespace: dict[str, Any] = {"np": np, **emitter.constants}
    exec(compile(source, f"<law {expression}>", "exec"), namespace)  # noqa: S102  # built from a validated tree
    return namespace["f"]


def _columns(data: Mapping[str, Any], variables: Sequence[str]) -> tuple[dict[str, np.ndarray], int]:
    missing = [v for v in variables if v not in data]
    if missing:
        raise ValueError(f"data lacks variable(s) {missing}")
    columns = {v: np.asarray(data[v], dtype=float) for v in variables}
    lengths = {c.shape for c in columns.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"variables must be 1-D arrays of equal length, got shapes {lengths}")
    return columns, len(next(iter(columns.values())))


@dataclass(frozen=True)
class Law:
    """A named parametric form ``expression`` in ``params`` (fitted) and ``variables`` (data)."""

    name: str
    expression: str
    params: tuple[str, ...]
    variables: tuple[str, ...]
    # Parameters that only differences between model sizes determine: an extrapolation check needs
    # more distinct sizes than this in its fit set. None: every parameter (the safe default).
    size_params: int | None = None
    # Start values of the scale parameters (see `fit_law`), for a law whose variables are already in
    # reference units: fewer starts make a many-parameter law affordable. None: the default grid.
    scale_starts: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "variables", tuple(self.variables))
        used = set(_names(_parse(self.expression)))
        declared = set(self.params) | set(self.variables)
        if not self.variables:
            raise ValueError(f"{self.name}: a law needs at least one variable")
        if len(declared) != len(self.params) + len(self.variables):
            raise ValueError(f"{self.name}: a name is repeated or both a param and a variable")
        if used != declared:
            raise ValueError(
                f"{self.name}: undeclared names {sorted(used - declared)}, unused names {sorted(declared - used)}"
            )

    def _evaluate(
        self, theta: np.ndarray, columns: Mapping[str, np.ndarray], n: int, gradient: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        with np.errstate(all="ignore"):
            if gradient:
                units = _unit_columns(len(self.params))
                value, grad = _straight_line(self.expression, self.params)(theta, columns, units)
            else:
                env: dict[str, _Dual] = {v: (columns[v], None) for v in self.variables}
                env |= {p: (theta[j], None) for j, p in enumerate(self.params)}
                value, grad = _program(self.expression)(env)
        value = np.asarray(value, dtype=float)
        if value.shape != (n,):
            value = np.broadcast_to(value, (n,))
        if grad is not None and grad.shape != (len(self.params), n):
            grad = np.broadcast_to(grad, (len(self.params), n))
        return value, grad

    def predict(self, theta: np.ndarray, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate the law at parameter vector ``theta`` (ordered as ``params``)."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (len(self.params),):
            raise ValueError(f"{self.name}: theta must have shape ({len(self.params)},)")
        columns, n = _columns(data, self.variables)
        return self._evaluate(theta, columns, n, gradient=False)[0].copy()


def collinear_pairs(
    data: Mapping[str, np.ndarray], variables: Sequence[str], threshold: float = 0.98
) -> list[tuple[str, str, float]]:
    """Pairs of variables whose columns move together (|Pearson r| >= `threshold`, on logs of positive
    variables): a law cannot tell their effects apart, e.g. new tokens D = D_total * (1 - r) and the
    replay ratio r when every trial trains on the same total."""
    columns = {}
    for v in variables:
        column = np.asarray(data[v], dtype=float)
        if np.ptp(column) > 0:
            columns[v] = np.log(column) if np.all(column > 0) else column
    pairs = []
    names = list(columns)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            r = float(np.corrcoef(columns[a], columns[b])[0, 1])
            if abs(r) >= threshold:
                pairs.append((a, b, r))
    return pairs


def law_from_expression(name: str, expression: str, params: Sequence[str], size_params: int | None = None) -> Law:
    """User-defined law: every name of ``expression`` not in ``params`` is a variable."""
    variables = tuple(n for n in _names(_parse(expression)) if n not in set(params))
    return Law(name, expression, tuple(params), variables, size_params)


# Forgetting with pretraining-data injection (Bethune et al. 2025, "Scaling Laws for
# Forgetting during Finetuning with Pretraining Data Injection", arXiv:2502.06042): the
# loss increase on old data grows with new-data tokens D and shrinks with the effective
# capacity (1 + B r) N, where r is the replay (injection) ratio.
DATA_INJECTION = Law("data_injection", "A * D**b / ((1 + B*r) * N)**a", ("A", "a", "b", "B"), ("D", "r", "N"))
# Shifted power law in model size (Kaplan et al. 2020; Hoffmann et al. 2022 at fixed D).
SHIFTED_POWER_N = Law("shifted_power_n", "E + A / N**a", ("E", "A", "a"), ("N",))
# Chinchilla parametric loss (Hoffmann et al. 2022, eq. 2).
POWER_N_D = Law("power_n_d", "E + A / N**a + B / D**b", ("E", "A", "a", "B", "b"), ("N", "D"))


@dataclass(frozen=True, eq=False)
class FitResult:
    """Best fit of ``law``; intervals are bootstrap percentile 95% intervals."""

    law: Law
    params: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    loss: float
    n_points: int
    samples: np.ndarray = field(repr=False)  # (bootstrap, n_params), columns = law.params
    at_bound: tuple[str, ...] = ()  # parameters whose best fit sits on a bound

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.params[p] for p in self.law.params])

    def predict(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.law.predict(self.theta, data)


class _Objective:
    """Summed Huber loss of log residuals as a function of the optimization vector ``z``.

    ``z`` holds log-values for the scale parameters and raw values for the others.
    """

    def __init__(
        self,
        law: Law,
        columns: Mapping[str, np.ndarray],
        target: np.ndarray,
        log_mask: np.ndarray,
        delta: float,
    ) -> None:
        self.law, self.columns, self.target, self.log_mask, self.delta = law, columns, target, log_mask, delta
        self.log_target = np.log(target)
        self.n = len(target)

    def theta(self, z: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.where(self.log_mask, np.exp(z), z)

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        theta = self.theta(z)
        pred, grad = self.law._evaluate(theta, self.columns, self.n, gradient=True)
        assert grad is not None
        # min() is NaN when any prediction is; a sum is non-finite when any term is.
        if not (pred.min() > 0 and np.isfinite(pred.sum() + grad.sum())):
            return _PENALTY, np.zeros_like(z)
        residual = np.log(pred) - self.log_target
        size = np.abs(residual)
        linear = self.delta * (size - 0.5 * self.delta)
        huber = np.where(size <= self.delta, 0.5 * residual**2, linear)
        d_theta = grad @ (np.clip(residual, -self.delta, self.delta) / pred)
        return float(huber.sum()), np.where(self.log_mask, d_theta * theta, d_theta)

    def minimize(self, z0: np.ndarray, bounds: list[tuple[float, float]]) -> tuple[float, np.ndarray]:
        result = minimize(self, z0, jac=True, method="L-BFGS-B", bounds=bounds, options=_OPTIONS)
        return float(result.fun), result.x

    def best_of(self, starts: Sequence[np.ndarray], bounds: list[tuple[float, float]]) -> tuple[float, np.ndarray]:
        """The lowest minimum over `starts`; the first of equal ones."""
        return min((self.minimize(z0, bounds) for z0 in starts), key=lambda result: result[0])

    def resampled(self, idx: np.ndarray) -> _Objective:
        """The objective over the points `idx` (a bootstrap resample)."""
        columns = {v: c[idx] for v, c in self.columns.items()}
        return _Objective(self.law, columns, self.target[idx], self.log_mask, self.delta)


def _best_of(
    objective: _Objective, starts: list[np.ndarray], bounds: list[tuple[float, float]]
) -> tuple[float, np.ndarray]:
    with threadpool_limits(limits=1, user_api="blas"):
        return objective.best_of(starts, bounds)


def _refits(
    objective: _Objective, resamples: list[tuple[np.ndarray, list[np.ndarray]]], bounds: list[tuple[float, float]]
) -> list[np.ndarray]:
    """The best parameters (natural units) of each bootstrap resample: (point indices, starts)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return [objective.theta(objective.resampled(idx).best_of(starts, bounds)[1]) for idx, starts in resamples]


def _screened(objective: _Objective, starts: list[np.ndarray]) -> list[np.ndarray]:
    """The `_SCREENED_STARTS` starts with the lowest loss, in grid order among equals."""
    if len(starts) <= _SCREENED_STARTS:
        return starts
    with threadpool_limits(limits=1, user_api="blas"):
        losses = np.array([objective(z)[0] for z in starts])
    return [starts[i] for i in np.argsort(losses, kind="stable")[:_SCREENED_STARTS]]


def _chunks(items: list[Any]) -> list[list[Any]]:
    """`items` in order, cut into about `_TASKS_PER_WORKER` chunks per worker of the pool (one chunk without)."""
    workers = _pool[1] if _pool is not None else 1
    if workers <= 1:
        return [items] if items else []
    size = max(1, -(-len(items) // (workers * _TASKS_PER_WORKER)))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run(function: Callable[..., Any], objective: _Objective, chunks: list[list[Any]], bounds: list[Any]) -> list[Any]:
    """`function(objective, chunk, bounds)` per chunk, in order: on the pool of `parallel_fits`, else here."""
    if _pool is None or len(chunks) <= 1:
        return [function(objective, chunk, bounds) for chunk in chunks]
    pool = _pool[0]
    return [future.result() for future in [pool.submit(function, objective, chunk, bounds) for chunk in chunks]]


def _limit_blas() -> None:
    threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def parallel_fits(workers: int | None = None) -> Iterator[None]:
    """Run the starts and bootstrap refits of every `fit_law` inside the block on `workers` processes (default:
    the CPUs this process may use). The fits are the same whatever the count; 1 runs them here."""
    global _pool
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or _pool is not None:
        yield
        return
    # spawn: a forked child of a process with threads (MLflow's, Ray's) can inherit a held lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_blas) as pool:
        _pool = (pool, workers)
        try:
            yield
        finally:
            _pool = None


def _start_grid(law: Law, log_mask: np.ndarray, grid: Mapping[str, Sequence[float]] | None) -> list[np.ndarray]:
    grid = dict(grid or {})
    unknown = set(grid) - set(law.params)
    if unknown:
        raise ValueError(f"grid names unknown params {sorted(unknown)}")
    axes = []
    for p, is_log in zip(law.params, log_mask):
        default = _DEFAULT_SCALE_GRID if is_log else _DEFAULT_EXPONENT_GRID
        values = np.asarray(grid.get(p, default), dtype=float)
        if is_log:
            if np.any(values <= 0):
                raise ValueError(f"grid for scale parameter {p!r} must be positive")
            values = np.log(values)
        axes.append(values)
    return [np.array(z) for z in product(*axes)]


def fit_law(
    law: Law,
    data: Mapping[str, np.ndarray],
    target: np.ndarray,
    *,
    huber_delta: float = 1e-3,
    grid: Mapping[str, Sequence[float]] | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    log_params: Collection[str] | None = None,
) -> FitResult:
    """Fit ``law`` to positive ``target`` values by multi-start L-BFGS-B (see module doc).

    ``grid`` overrides the initial values of some parameters (natural units); the
    default is the law's ``scale_starts`` or {0.01, 1, 100, 1e4} for scale parameters, and
    {0.1, 0.5, 1} for the others.
    ``log_params`` are the parameters optimized in log space (hence positive); by default
    those whose name starts with an uppercase letter. With ``bootstrap=0`` the intervals
    are NaN and ``samples`` is empty.
    """
    columns, n = _columns(data, law.variables)
    target = np.asarray(target, dtype=float)
    if target.shape != (n,) or not np.all(np.isfinite(target) & (target > 0)):
        raise ValueError(f"target must hold {n} positive finite values")
    if log_params is None:
        log_params = [p for p in law.params if p[:1].isupper()]
    log_mask = np.array([p in set(log_params) for p in law.params])
    if grid is None and law.scale_starts is not None:
        grid = {p: law.scale_starts for p in log_params}

    bounds = [
        (-np.log(_SCALE_BOUND), np.log(_SCALE_BOUND)) if is_log else (-_EXPONENT_BOUND, _EXPONENT_BOUND)
        for is_log in log_mask
    ]
    objective = _Objective(law, columns, target, log_mask, huber_delta)
    grid_starts = _start_grid(law, log_mask, grid)
    starts = _screened(objective, grid_starts)
    # L-BFGS-B calls BLAS on tiny arrays thousands of times; multi-threaded BLAS makes that several times slower,
    # worst on a busy machine: `_best_of` and `_refits` limit it to one thread.
    best_loss, best_z = min(_run(_best_of, objective, _chunks(starts), bounds), key=lambda result: result[0])
    if best_loss >= _PENALTY:
        raise ValueError(f"{law.name}: no initial value gives positive finite predictions")
    rng = np.random.default_rng(seed)
    resamples = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        # From the whole grid: refits started only near the full-data optimum make the intervals too narrow.
        picks = rng.choice(len(grid_starts), size=min(_BOOTSTRAP_STARTS - 1, len(grid_starts)), replace=False)
        resamples.append((idx, [best_z, *(grid_starts[j] for j in picks)]))
    refits = [theta for chunk in _run(_refits, objective, _chunks(resamples), bounds) for theta in chunk]
    samples = np.array(refits).reshape(bootstrap, len(law.params))
    if bootstrap:
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    else:
        low = high = np.full(len(law.params), np.nan)
    at_bound = tuple(p for p, z, (lo, hi) in zip(law.params, best_z, bounds) if min(z - lo, hi - z) < 1e-6 * (hi - lo))

    theta = objective.theta(best_z)
    return FitResult(
        law=law,
        params=dict(zip(law.params, theta.tolist())),
        ci_low=dict(zip(law.params, low.tolist())),
        ci_high=dict(zip(law.params, high.tolist())),
        loss=best_loss,
        n_points=n,
        samples=samples,
        at_bound=at_bound,
    )


@dataclass(frozen=True, eq=False)
class ExtrapolationResult:
    """Fit without the largest ``size_variable`` value, evaluated on those held-out points."""

    fit: FitResult
    size_variable: str
    held_out_size: float
    held_out: np.ndarray  # boolean mask over the input points
    predicted: np.ndarray
    observed: np.ndarray
    relative_errors: np.ndarray  # (predicted - observed) / observed, per held-out point
    mean_abs_rel_error: float

    @property
    def law(self) -> Law:
        return self.fit.law


def extrapolation_check(
    law: Law,
    data: Mapping[str, np.ndarray],
    target: np.ndarray,
    size_variable: str = "N",
    **fit_kwargs: Any,
) -> ExtrapolationResult:
    """Fit ``law`` on all but the largest size and report its error on the largest size."""
    columns, n = _columns(data, tuple(dict.fromkeys((*law.variables, size_variable))))
    target = np.asarray(target, dtype=float)
    if target.shape != (n,):
        raise ValueError(f"target must hold {n} values, got shape {target.shape}")
    size = columns[size_variable]
    if len(np.unique(size)) < 2:
        raise ValueError(f"need at least 2 distinct values of {size_variable!r}")
    held_out = size == size.max()
    fit = fit_law(law, {v: c[~held_out] for v, c in columns.items()}, target[~held_out], **fit_kwargs)
    predicted = fit.predict({v: c[held_out] for v, c in columns.items()})
    observed = target[held_out]
    errors = (predicted - observed) / observed
    return ExtrapolationResult(
        fit=fit,
        size_variable=size_variable,
        held_out_size=float(size.max()),
        held_out=held_out,
        predicted=predicted,
        observed=observed,
        relative_errors=errors,
        mean_abs_rel_error=float(np.mean(np.abs(errors))),
    )


@dataclass(frozen=True, eq=False)
class FitCurve:
    """Data for plotting a fit against one variable, with a bootstrap 95% band."""

    vary: str
    x: np.ndarray
    held: dict[str, float]  # the other variables, fixed at their median
    prediction: np.ndarray
    low: np.ndarray
    high: np.ndarray


def fit_curve(fit: FitResult, data: Mapping[str, np.ndarray], vary: str, num: int = 100) -> FitCurve:
    """Prediction of ``fit`` along ``vary`` (log-spaced when positive, else linear).

    The band is the pointwise 2.5-97.5 percentile of the predictions of the bootstrap
    parameter samples (NaN without samples).
    """
    if vary not in fit.law.variables:
        raise ValueError(f"{vary!r} is not a variable of {fit.law.name}")
    columns, _ = _columns(data, fit.law.variables)
    lo, hi = columns[vary].min(), columns[vary].max()
    x = np.geomspace(lo, hi, num) if lo > 0 else np.linspace(lo, hi, num)
    held = {v: float(np.median(c)) for v, c in columns.items() if v != vary}
    grid = {vary: x, **{v: np.full(num, m) for v, m in held.items()}}
    if len(fit.samples):
        curves = np.array([fit.law.predict(theta, grid) for theta in fit.samples])
        low, high = np.percentile(curves, [2.5, 97.5], axis=0)
    else:
        low = high = np.full(num, np.nan)
    return FitCurve(vary, x, held, fit.predict(grid), low, high)
