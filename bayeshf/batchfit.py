"""Many maximum-likelihood fits in one compiled program: a vmapped, bounded Newton method.

Toys (one model, many data sets) and signal grids (many models of one
structure, stacked leaf-wise) need thousands of fits of small models; a Python
optimiser loop per fit spends its time in dispatch. Here every item runs the
same damped Newton iteration inside one ``lax.while_loop`` under ``vmap``:

* exact Hessian of twice_nll (``jax.hessian``), Levenberg-Marquardt damping
  when a step does not decrease the objective or is not a descent direction;
* bounds by projection with an active set (a parameter on a bound whose
  gradient points outward is held there, Bertsekas' projected Newton);
* a convergence flag per item: the Newton decrement (EDM, twice_nll units)
  below ``tol`` with a finite objective, within ``maxiter`` iterations.

The arrays of the model are a traced argument, so a new data set, a new
model of the same structure or a new fixed POI value never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.model import _logpdf

__all__ = ["BatchFitResult", "batch_minimize", "stack_models", "structure_key", "fit_setup"]


@dataclasses.dataclass(frozen=True)
class BatchFitResult:
    """Fits of a batch: ``bestfit`` (n, npars), ``twice_nll`` (n,), ``converged`` (n,) bool, ``edm``, ``iterations``."""

    bestfit: np.ndarray
    twice_nll: np.ndarray
    converged: np.ndarray
    edm: np.ndarray
    iterations: np.ndarray

    @property
    def n_failed(self) -> int:
        return int(np.sum(~self.converged))


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


def _newton(arrays, static, x0, observed, auxdata, mask, values, lo, hi, maxiter, tol):
    """One bounded damped-Newton fit (vmapped by the caller)."""
    fun = functools.partial(_twice_nll, arrays, static)
    def grad_with_value(x):
        f, g = jax.value_and_grad(fun)(x, observed, auxdata)
        return g, (f, g)

    # value, gradient and Hessian from one forward-over-reverse pass (one trace: shorter compile)
    hessian = jax.jacfwd(grad_with_value, has_aux=True)
    width = jnp.where(jnp.isfinite(hi - lo), hi - lo, 1.0)

    def evaluate(x):
        h, (f, g) = hessian(x)
        return f, g, h

    def active(x, g):
        at_lo = ~mask & (x <= lo + 1e-10 * width) & (g > 0)
        at_hi = ~mask & (x >= hi - 1e-10 * width) & (g < 0)
        return at_lo, at_hi

    def edm_of(x, g, h):
        at_lo, at_hi = active(x, g)
        free = ~mask & ~at_lo & ~at_hi
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
        at_lo, at_hi = active(x, g)
        free = ~mask & ~at_lo & ~at_hi
        gf = jnp.where(free, g, 0.0)
        newton = _solve(h, g, free, lam)
        solved = jnp.all(jnp.isfinite(newton)) & (jnp.dot(gf, newton) <= 0.0)
        # not positive definite: a gradient step scaled by the curvature, and more damping next time
        direction = jnp.where(solved, newton, -gf / jnp.maximum(jnp.abs(jnp.diag(h)), 1.0))
        slope = jnp.dot(gf, direction)
        # all step lengths of the line search at once (function values only: cheap next to the Hessian)
        trials = jnp.clip(x[None, :] + _STEPS[:, None] * direction[None, :], lo, hi)
        trials = jnp.where(at_lo, lo, jnp.where(at_hi, hi, jnp.where(mask, values, trials)))
        values_t = jax.vmap(lambda xt: fun(xt, observed, auxdata))(trials)
        values_t = jnp.where(jnp.isfinite(values_t), values_t, jnp.inf)
        armijo = (values_t <= f + 1e-4 * _STEPS * slope) | ~jnp.isfinite(f)
        best = jnp.argmin(values_t)
        pick = jnp.where(jnp.any(armijo), jnp.argmax(armijo), best)
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
    converged = jnp.isfinite(f) & ((edm < tol) | (done & (edm < 1e-8)))
    return x, f, converged, edm, it


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _batched(static, batched_model, batched_data, arrays, x0, observed, auxdata, mask, values, lo, hi, maxiter, tol):
    axes_model = 0 if batched_model else None
    axes_data = 0 if batched_data else None
    fn = jax.vmap(_newton, in_axes=(axes_model, None, 0, axes_data, axes_data, 0, 0, 0, 0, None, None))
    return fn(arrays, static, x0, observed, auxdata, mask, values, lo, hi, maxiter, tol)


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
) -> BatchFitResult:
    """Fit a batch of items in one compiled program.

    ``model`` gives the static structure (and the arrays, unless ``arrays``
    holds a leaf-wise stack from :func:`stack_models`, one model per item).
    ``x0`` (n, npars) start points; ``data`` (n, nmain + naux) main + aux
    data per item, or None for each model's own data; ``mask``, ``values``,
    ``lo``, ``hi`` (npars,) or (n, npars): fixed mask and values and bounds.
    """
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

    out = _batched(model._static, batched_model, True, arrays, x0, observed, auxdata,
                   per_item(mask, bool), per_item(values, np.float64), per_item(lo, np.float64),
                   per_item(hi, np.float64), int(maxiter), float(tol))
    x, f, ok, edm, it = (np.asarray(v) for v in out)
    return BatchFitResult(bestfit=x, twice_nll=f, converged=ok.astype(bool), edm=edm, iterations=it)
