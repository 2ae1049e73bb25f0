"""Many maximum-likelihood fits in one compiled program: vmapped, bounded Newton or BFGS methods.

Toys (one model, many data sets) and signal grids (many models of one
structure, stacked leaf-wise) need thousands of fits of small models; a Python
optimiser loop per fit spends its time in dispatch. Here every item runs the
same iteration inside one ``lax.while_loop`` under ``vmap``:

* ``method="newton"``: exact Hessian of twice_nll (forward over reverse),
  Levenberg-Marquardt damping when a step does not decrease the objective or
  is not a descent direction; ``method="quasi-newton"``: BFGS on the inverse
  matrix from given start inverses (no factorisation per iteration);
* bounds by projection with an active set (a parameter on a bound whose
  gradient points outward is held there, Bertsekas' projected Newton);
* a convergence flag per item: the Newton decrement (EDM, twice_nll units)
  below ``tol`` (at least a tenth of twice_nll's round-off scale, :func:`roundoff_floor`) with a
  finite objective, within ``maxiter`` iterations.

The arrays of the model are a traced argument, so a new data set, a new
model of the same structure or a new fixed POI value never recompiles. With
several CPU devices a batch is split over them (one while loop per device).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.model import _expected_counts, _log_constraint, _logpdf

__all__ = ["BatchFitResult", "batch_minimize", "roundoff_floor", "start_inverse", "stack_models", "structure_key",
           "fit_setup"]


@dataclasses.dataclass(frozen=True)
class BatchFitResult:
    """Fits of a batch: ``bestfit`` (n, npars), ``twice_nll`` (n,), ``converged`` (n,) bool, ``edm``, ``iterations``."""

    bestfit: np.ndarray
    twice_nll: np.ndarray
    converged: np.ndarray
    edm: np.ndarray
    iterations: np.ndarray
    inverse: np.ndarray | None = None  # (n, npars, npars) final BFGS inverse matrices (quasi-Newton only)

    @property
    def n_failed(self) -> int:
        return int(np.sum(~self.converged))

    def _columns(self) -> list:
        return [getattr(self, field.name) for field in dataclasses.fields(self)]

    def take(self, index: Any) -> "BatchFitResult":
        """The items at ``index`` (an index array, mask or slice)."""
        return BatchFitResult(*(None if v is None else v[index] for v in self._columns()))

    def replace_items(self, index: np.ndarray, other: "BatchFitResult") -> "BatchFitResult":
        """A copy with the items at ``index`` taken from ``other`` (one row of ``other`` per index)."""
        columns = []
        for mine, theirs in zip(self._columns(), other._columns()):
            if mine is not None and theirs is not None:
                mine = np.array(mine)
                mine[index] = theirs
            columns.append(mine)
        return BatchFitResult(*columns)

    @staticmethod
    def concatenate(parts: Sequence["BatchFitResult"]) -> "BatchFitResult":
        """The items of ``parts`` one after the other."""
        columns = zip(*(part._columns() for part in parts))
        return BatchFitResult(*(None if any(v is None for v in col) else np.concatenate(col) for col in columns))


def structure_key(model: Any) -> tuple:
    """Models with equal keys can be stacked and fitted by one program (same static code, leaf shapes, parameters)."""
    leaves = tuple((tuple(np.shape(leaf)), str(np.asarray(leaf).dtype) if not hasattr(leaf, "dtype") else str(leaf.dtype))
                   for leaf in model.arrays)
    return (model._static, leaves, tuple(model.par_names), model.poi_index,
            np.asarray(model.bounds, float).tobytes(), np.asarray(model.fixed, bool).tobytes())


def stack_models(models: Sequence[Any]) -> Any:
    """The models' arrays stacked leaf-wise (leading axis = model), for :func:`batch_minimize`."""
    keys = {structure_key(m) for m in models}
    if len(keys) != 1:
        raise BayeshfError("stack_models needs models of one structure; group them by structure_key first.")
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack([jnp.asarray(x) for x in leaves]),
                                  *[m.arrays for m in models])


def fit_setup(model: Any, poi_value: float | None = None, bounds: np.ndarray | None = None):
    """(mask, fixed values, lo, hi) for a free fit (``poi_value`` None) or a fit with the POI fixed."""
    mask = np.array(model.fixed, dtype=bool, copy=True)
    values = np.array(model.init, dtype=float, copy=True)
    box = np.array(model.bounds if bounds is None else bounds, dtype=float)
    if poi_value is not None:
        mask[model.poi_index] = True
        values[model.poi_index] = float(poi_value)
    return mask, values, box[:, 0], box[:, 1]


#: step lengths tried at once along each Newton direction
_STEPS = jnp.array([1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.001])


def _twice_nll(arrays, static, x, observed, auxdata):
    return -2.0 * _logpdf(arrays, static, x, observed, auxdata)


def _solve(h, g, free, lam):
    """Newton step on the free set of the damped Hessian; other components 0. NaN if not positive definite."""
    keep = free[:, None] & free[None, :]
    n = g.shape[0]
    eye = jnp.eye(n, dtype=h.dtype)
    scale = jnp.where(free, jnp.maximum(jnp.abs(jnp.diag(h)), 1e-12), 1.0)
    hd = jnp.where(keep, h, 0.0) + eye * jnp.where(free, lam * scale, 1.0)
    chol = jnp.linalg.cholesky(hd)
    gf = jnp.where(free, g, 0.0)
    step = -jax.scipy.linalg.cho_solve((chol, True), gf)
    return jnp.where(free, step, 0.0)


def _active_sets(x, g, mask, lo, hi):
    """(free, at_lo, at_hi): a parameter on a bound (within round-off) whose gradient points outward is held there."""
    width = jnp.where(jnp.isfinite(hi - lo), hi - lo, 1.0)
    at_lo = ~mask & (x <= lo + 1e-10 * width) & (g > 0)
    at_hi = ~mask & (x >= hi - 1e-10 * width) & (g < 0)
    return ~mask & ~at_lo & ~at_hi, at_lo, at_hi


def _project(x, box):
    """``x`` clipped into the bounds, with held and fixed parameters put back on their bound or value."""
    at_lo, at_hi, mask, values, lo, hi = box
    x = jnp.clip(x, lo, hi)
    return jnp.where(at_lo, lo, jnp.where(at_hi, hi, jnp.where(mask, values, x)))


def _line_search(fun, x, f, gf, direction, box, observed, auxdata):
    """All step lengths along ``direction`` at once (function values only); the first Armijo step, else the lowest."""
    slope = jnp.dot(gf, direction)
    trials = _project(x[None, :] + _STEPS[:, None] * direction[None, :], box)
    values_t = jax.vmap(lambda xt: fun(xt, observed, auxdata))(trials)
    values_t = jnp.where(jnp.isfinite(values_t), values_t, jnp.inf)
    armijo = (values_t <= f + 1e-4 * _STEPS * slope) | ~jnp.isfinite(f)
    pick = jnp.where(jnp.any(armijo), jnp.argmax(armijo), jnp.argmin(values_t))
    return pick, values_t, trials


def _newton(arrays, static, x0, observed, auxdata, mask, values, lo, hi, maxiter, tol):
    """One bounded damped-Newton fit (vmapped by the caller)."""
    fun = functools.partial(_twice_nll, arrays, static)
    def grad_with_value(x):
        f, g = jax.value_and_grad(fun)(x, observed, auxdata)
        return g, (f, g)

    # value, gradient and Hessian from one forward-over-reverse pass (one trace: shorter compile)
    hessian = jax.jacfwd(grad_with_value, has_aux=True)

    def evaluate(x):
        h, (f, g) = hessian(x)
        return f, g, h

    def edm_of(x, g, h):
        free, _, _ = _active_sets(x, g, mask, lo, hi)
        step = _solve(h, g, free, 0.0)
        edm = -0.5 * jnp.dot(jnp.where(free, g, 0.0), step)
        return jnp.where(jnp.all(jnp.isfinite(step)), edm, jnp.inf)

    x = jnp.where(mask, values, jnp.clip(x0, lo, hi))
    n = x.shape[0]
    # the first iteration takes a zero step from an infinite objective: it evaluates x0 (one evaluate in the program)
    inf = jnp.full((), jnp.inf, x.dtype)
    state = (jnp.zeros((), jnp.int32), x, inf, jnp.zeros(n, x.dtype), jnp.eye(n, dtype=x.dtype),
             jnp.zeros((), x.dtype), inf, jnp.zeros((), bool))

    def cond(state):
        it, *_, done = state
        return (it < maxiter) & ~done

    def body(state):
        it, x, f, g, h, lam, edm, done = state
        free, at_lo, at_hi = _active_sets(x, g, mask, lo, hi)
        gf = jnp.where(free, g, 0.0)
        newton = _solve(h, g, free, lam)
        solved = jnp.all(jnp.isfinite(newton)) & (jnp.dot(gf, newton) <= 0.0)
        # not positive definite: a gradient step scaled by the curvature, and more damping next time
        direction = jnp.where(solved, newton, -gf / jnp.maximum(jnp.abs(jnp.diag(h)), 1.0))
        pick, values_t, trials = _line_search(fun, x, f, gf, direction, (at_lo, at_hi, mask, values, lo, hi),
                                              observed, auxdata)
        improves = jnp.isfinite(values_t[pick]) & ((values_t[pick] < f) | ~jnp.isfinite(f))
        x_new = jnp.where(improves, trials[pick], x)
        f_new, g_new, h_new = evaluate(x_new)
        lam = jnp.where(solved, jnp.where(pick == 0, jnp.where(lam < 1e-6, 0.0, 0.1 * lam), lam),
                        jnp.maximum(10.0 * lam, 1e-3))
        edm = edm_of(x_new, g_new, h_new)
        stalled = ~improves & jnp.isfinite(f)  # no step length lowers twice_nll: round-off floor or stuck
        done = (jnp.isfinite(f_new) & (edm < tol)) | stalled
        return it + 1, x_new, f_new, g_new, h_new, lam, edm, done

    it, x, f, g, h, lam, edm, done = jax.lax.while_loop(cond, body, state)
    # at the round-off floor (no step lowers twice_nll) the single-fit criterion EDM < 1e-8 applies
    converged = jnp.isfinite(f) & ((edm < tol) | (done & (edm < jnp.maximum(tol, 1e-8))))
    return x, f, converged, edm, it


def _quasi_newton(arrays, static, x0, observed, auxdata, mask, values, lo, hi, maxiter, tol, start):
    """One bounded BFGS fit on the inverse matrix, from the start inverse ``start`` (vmapped by the caller).

    An iteration costs one value and gradient and a few matrix-vector products: the direction is the
    inverse times the gradient on the free set, one trial point per iteration (accepted by Armijo's
    test, else the next iteration tries a shorter step from the same point), and BFGS updates the
    inverse itself, so no iteration factorises a matrix. A parameter held on a bound is decoupled from
    the others in the inverse (one per iteration), which makes the free block of the inverse the free
    block's inverse, as Newton's step needs. Convergence: the EDM (half the gradient's squared length
    in the inverse's metric) below ``tol``.
    """
    fun = functools.partial(_twice_nll, arrays, static)
    value_and_grad = jax.value_and_grad(fun)
    n = x0.shape[0]
    one_hot = jnp.eye(n, dtype=bool)
    zero = jnp.zeros(n, x0.dtype)

    def prepare(x, g, inv, decoupled, reset, bfgs):
        """The BFGS update, one newly held parameter decoupled, the next direction on the free set and the EDM.

        The update and the decoupling are low-rank terms added in one pass over the matrix (the held
        parameter's column of the updated inverse is formed from vectors); ``reset`` writes ``start``.
        """
        s, iy, rho, c = bfgs  # inverse + c s s^T - rho (s iy^T + iy s^T); zeros: no update
        free, at_lo, at_hi = _active_sets(x, g, mask, lo, hi)
        held = ~mask & ~free
        new = held & ~decoupled
        i = jnp.argmax(new)
        column = inv[:, i] - rho * (s * iy[i] + iy * s[i]) + c * s * s[i]
        pivot = column[i]
        cut = jnp.any(new) & (pivot > 0.0) & ~reset
        w = jnp.where(cut, 1.0 / jnp.where(cut, pivot, 1.0), 0.0)
        corner = one_hot[i][:, None] & one_hot[i][None, :]
        updated = (inv + c * jnp.outer(s, s) - rho * (jnp.outer(s, iy) + jnp.outer(iy, s))
                   - w * jnp.outer(column, column) + jnp.where(corner & cut, pivot, 0.0))
        inv = jnp.where(reset, start, updated)
        decoupled = (decoupled | (one_hot[i] & cut)) & held & ~reset
        gf = jnp.where(free, g, 0.0)
        direction = -jnp.where(free, inv @ gf, 0.0)
        slope = jnp.dot(gf, direction)
        descent = jnp.all(jnp.isfinite(direction)) & (slope < 0.0)
        edm = jnp.where(descent, -0.5 * slope, jnp.where(jnp.all(gf == 0.0), 0.0, jnp.inf))
        # the inverse lost positive definiteness to round-off: a diagonal step now, the start inverse next
        direction = jnp.where(descent, direction, -gf * jnp.abs(jnp.diagonal(start)))
        return inv, decoupled, ~descent, (free, at_lo, at_hi), direction, edm

    x = jnp.where(mask, values, jnp.clip(x0, lo, hi))
    f, g = value_and_grad(x, observed, auxdata)
    no_update = (zero, zero, jnp.zeros((), x.dtype), jnp.zeros((), x.dtype))
    inv, decoupled, reset, sets, direction, edm = prepare(x, g, start, jnp.zeros(n, bool), jnp.zeros((), bool),
                                                          no_update)
    converged = jnp.isfinite(f) & (edm < tol)
    one = jnp.ones((), x.dtype)
    state = (jnp.zeros((), jnp.int32), x, f, g, inv, decoupled, reset, sets, direction, one, edm, converged,
             converged)

    def cond(state):
        it, *_, done, _ = state
        return (it < maxiter) & ~done

    def body(state):
        it, x, f, g, inv, decoupled, reset, sets, direction, alpha, edm, _, _ = state
        free, at_lo, at_hi = sets
        trial = _project(x + alpha * direction, (at_lo, at_hi, mask, values, lo, hi))
        f_t, g_t = value_and_grad(trial, observed, auxdata)
        s = trial - x
        decrease = jnp.dot(g, s)
        accept = jnp.isfinite(f_t) & (f_t < f) & (f_t <= f + 1e-4 * jnp.minimum(decrease, 0.0))
        y = jnp.where(free, g_t - g, 0.0)
        sy = jnp.dot(s, y)
        iy = inv @ y
        update = accept & ~reset & (sy > 1e-10 * jnp.sqrt(jnp.dot(s, s) * jnp.dot(y, y)))
        rho = jnp.where(update, 1.0 / jnp.where(update, sy, 1.0), 0.0)
        bfgs = (s, iy, rho, rho * rho * jnp.dot(y, iy) + rho)
        # rejected: the minimiser of the quadratic through f, the slope and f_t, within [0.1, 0.5] of the step
        curvature = (f_t - f - decrease) / (alpha * alpha)
        shorter = jnp.where(jnp.isfinite(f_t) & (curvature > 0.0), -0.5 * decrease / (alpha * curvature), 0.1)
        alpha = jnp.where(accept, one, alpha * jnp.clip(shorter, 0.1, 0.5))
        x, f, g = (jnp.where(accept, a, b) for a, b in ((trial, x), (f_t, f), (g_t, g)))
        inv, decoupled, reset, sets, direction, edm = prepare(x, g, inv, decoupled, reset, bfgs)
        converged = jnp.isfinite(f) & (edm < tol)
        stalled = ~converged & (alpha < 1e-10)  # no step length lowers twice_nll: round-off floor or stuck
        # at the round-off floor the single-fit criterion EDM < 1e-8 applies
        ok = converged | (stalled & jnp.isfinite(f) & (edm < jnp.maximum(tol, 1e-8)))
        return it + 1, x, f, g, inv, decoupled, reset, sets, direction, alpha, edm, converged | stalled, ok

    it, x, f, g, inv, *_, edm, done, converged = jax.lax.while_loop(cond, body, state)
    return x, f, converged, edm, it, inv


def start_inverse(model: Any, x0: np.ndarray, mask: np.ndarray, *, arrays: Any = None) -> np.ndarray:
    """Inverse of Fisher scoring's matrix at each start ``x0`` (n, npars) on its free block (fixed: identity).

    The expected information J^T diag(2 / nu) J of the main bins plus the constraints' Hessian, positive
    semi-definite and far cheaper than the exact Hessian; inverted on the host (XLA's batched
    triangular solves with many right-hand sides are ~20x slower than LAPACK's on CPU).
    """
    x0 = np.atleast_2d(np.asarray(x0, dtype=np.float64))
    n = x0.shape[0]
    batched = arrays is not None
    arrays = model.arrays if arrays is None else arrays
    b = np.asarray(_scoring(model._static, batched, arrays, x0, jnp.broadcast_to(
        jnp.asarray(arrays.auxdata), (n, model.nauxdata)) if not batched else arrays.auxdata))
    free = ~np.broadcast_to(np.asarray(mask, bool), x0.shape)
    keep = free[:, :, None] & free[:, None, :]
    eye = np.eye(x0.shape[1])
    diagonal = np.abs(np.diagonal(b, axis1=1, axis2=2))
    # a relative 1e-10 on the free diagonal: a parameter the data do not constrain has a singular row
    b = np.where(keep, b, 0.0) + eye * np.where(free, 1e-10 * np.maximum(diagonal, 1e-12), 1.0)[:, None, :]
    try:
        return np.linalg.inv(b)
    except np.linalg.LinAlgError:  # one singular item: a scaled diagonal start for all (BFGS learns the rest)
        return eye / np.maximum(diagonal, 1e-12)[:, None, :]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scoring(static, batched_model, arrays, x, auxdata):
    def one(a, xi, aux):
        counts = functools.partial(_expected_counts, a, static)
        weight = 2.0 / jnp.maximum(counts(xi), 1e-12)
        jac = jax.jacrev(counts)(xi)  # (bins, npars)
        constraint = jax.hessian(lambda y: -2.0 * _log_constraint(a, static, y, aux))(xi)
        return (jac.T * weight) @ jac + constraint

    return jax.vmap(one, in_axes=(0 if batched_model else None, 0, 0))(arrays, x, auxdata)


_METHODS = {"newton": _newton, "quasi-newton": _quasi_newton}


def _vmapped(static, batched_model, method, arrays, x0, observed, auxdata, mask, values, lo, hi, maxiter, tol, start):
    axes = (0 if batched_model else None, None, 0, 0, 0, 0, 0, 0, 0, None, 0)
    if method == "newton":
        return jax.vmap(_newton, in_axes=axes)(arrays, static, x0, observed, auxdata, mask, values, lo, hi,
                                               maxiter, tol) + (None,)
    return jax.vmap(_quasi_newton, in_axes=axes + (0,))(arrays, static, x0, observed, auxdata, mask, values, lo, hi,
                                                        maxiter, tol, start)


_batched = jax.jit(_vmapped, static_argnums=(0, 1, 2))


@functools.lru_cache(maxsize=None)
def _sharded(static, batched_model, method, devices):
    """:func:`_vmapped` with the items split over ``devices``: each device runs its own while loop (one per core)."""
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(devices), ("items",))
    items, whole = PartitionSpec("items"), PartitionSpec()
    specs = (items if batched_model else whole, *[items] * 7, whole, items, None if method == "newton" else items)
    body = functools.partial(_vmapped, static, batched_model, method)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=items, check_vma=False))


#: the fraction of the round-off floor that bounds tol from below (docs/frequentist.md, Toys: ttbar's toys)
_FLOOR_FRACTION = 0.1


def roundoff_floor(observed: Any) -> np.ndarray:
    """Round-off scale of each item's twice_nll, 2 eps sum_b n_b (1 + |log n_b|): the size of its Poisson terms.

    Decreases below it cannot be verified, and BFGS stalls short of tol = 1e-10 there: ``batch_minimize``
    raises tol to _FLOOR_FRACTION of it (ATLAS ttbar's 6.7M events: 4e-8 -> tol 4e-9; sbottom's 7e-13
    leaves 1e-10 in charge, its fits unchanged).
    """
    n = np.atleast_2d(np.asarray(observed, dtype=np.float64))
    return 2.0 * np.finfo(np.float64).eps * np.sum(n * (1.0 + np.abs(np.log(np.maximum(n, 1.0)))), axis=1)


def batch_minimize(
    model: Any,
    x0: np.ndarray,
    data: np.ndarray | None,
    mask: np.ndarray,
    values: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    arrays: Any = None,
    maxiter: int = 100,
    tol: float = 1e-10,
    method: str = "newton",
    inverse: np.ndarray | None = None,
) -> BatchFitResult:
    """Fit a batch of items in one compiled program.

    ``model`` gives the static structure (and the arrays, unless ``arrays``
    holds a leaf-wise stack from :func:`stack_models`, one model per item).
    ``x0`` (n, npars) start points; ``data`` (n, nmain + naux) main + aux
    data per item, or None for each model's own data; ``mask``, ``values``,
    ``lo``, ``hi`` (npars,) or (n, npars): fixed mask and values and bounds.
    ``method``: ``"newton"`` (exact Hessian every iteration) or ``"quasi-newton"``
    (BFGS: cheaper iterations, more of them) from the start inverse matrices
    ``inverse`` ((npars, npars) or (n, npars, npars); default :func:`start_inverse`
    at each start); the result's ``inverse`` holds the final ones, a start for
    further fits of the same items.
    """
    if method not in _METHODS:
        raise BayeshfError(f"unknown batch fit method {method!r}; choose one of {', '.join(_METHODS)}.")
    x0 = np.atleast_2d(np.asarray(x0, dtype=np.float64))
    n, npars = x0.shape
    batched_model = arrays is not None
    if arrays is None:
        arrays = model.arrays
    if data is None:
        observed = arrays.observed if batched_model else jnp.broadcast_to(arrays.observed, (n, model.nmain))
        auxdata = arrays.auxdata if batched_model else jnp.broadcast_to(arrays.auxdata, (n, model.nauxdata))
    else:
        data = np.atleast_2d(np.asarray(data, dtype=np.float64))
        if data.shape != (n, model.nmain + model.nauxdata):
            raise BayeshfError(f"data have shape {data.shape}, the batch needs {(n, model.nmain + model.nauxdata)}.")
        observed, auxdata = data[:, :model.nmain], data[:, model.nmain:]

    def per_item(a, dtype):
        return np.broadcast_to(np.asarray(a, dtype=dtype), (n, npars)).copy()

    mask = per_item(mask, bool)
    start = None
    if method == "quasi-newton":
        at = np.where(mask, per_item(values, np.float64), np.clip(x0, lo, hi))
        start = (start_inverse(model, at, mask, arrays=arrays if batched_model else None) if inverse is None
                 else np.broadcast_to(np.asarray(inverse, np.float64), (n, npars, npars)))
    args = (arrays, x0, observed, auxdata, mask, per_item(values, np.float64), per_item(lo, np.float64),
            per_item(hi, np.float64), np.int32(maxiter), np.maximum(np.float64(tol), _FLOOR_FRACTION * roundoff_floor(observed)), start)
    devices = jax.devices("cpu")
    if len(devices) > 1 and n % len(devices) == 0 and n >= 64 * len(devices):
        out = _sharded(model._static, batched_model, method, tuple(devices))(*args)
    else:
        out = _batched(model._static, batched_model, method, *args)
    x, f, ok, edm, it, inv = (None if v is None else np.asarray(v) for v in out)
    return BatchFitResult(bestfit=x, twice_nll=f, converged=ok.astype(bool), edm=edm, iterations=it, inverse=inv)
