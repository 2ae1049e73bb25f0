"""Maximum-likelihood fit of a HistFactory model with a trust-region Newton method.

The minimiser is SciPy's ``trust-krylov`` (or ``trust-exact`` / ``trust-ncg``)
driven by JAX: value and gradient from ``jax.value_and_grad``, curvature from
Hessian-vector products (forward-over-reverse) or the full ``jax.hessian``.
Bounds are honoured by a smooth map to an unconstrained space (scaled logistic
for a finite box, ``exp`` for a half line); parameters that end on a bound are
pinned there and the free ones are polished with exact Newton steps in the
original space, so the reported minimum is the bounded one to machine
precision. Fixed parameters travel as traced mask/value arrays, so conditional
fits (the POI fixed at any value) reuse the functions compiled for the model
(:mod:`bayeshf.objective` holds the compiled objective).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import scipy.linalg
import scipy.optimize

from bayeshf.errors import BayeshfError
from bayeshf.objective import DenseProducts, _Compiled, _from_unit, compiled_functions, fit_arguments

__all__ = ["FitResult", "fit", "minimize", "compiled_functions", "default_data"]

_METHODS = ("trust-krylov", "trust-exact", "trust-ncg", "auto")
#: models with at most this many parameters use trust-exact under method="auto"
_EXACT_MAX_PARS = 400



@dataclasses.dataclass(frozen=True)
class FitResult:
    """Result of :func:`fit`.

    ``bestfit`` is in the model's parameter order (``par_names``);
    ``uncertainties`` and ``correlation`` come from the inverse Hessian of
    twice_nll at the minimum (covariance = 2 H^-1), zero for fixed parameters.
    ``twice_nll`` is -2 log L at the minimum. ``edm`` is the estimated distance
    to the minimum in twice_nll units, g^T H^-1 g / 2 at the returned point.
    ``at_bound`` marks free parameters that ended on a bound.
    """

    bestfit: np.ndarray
    uncertainties: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    twice_nll: float
    success: bool
    status: int
    message: str
    iterations: int
    edm: float
    par_names: tuple[str, ...]
    fixed: np.ndarray
    at_bound: np.ndarray
    poi_index: int | None = None
    method: str = "trust-krylov"

    @property
    def values(self) -> dict[str, float]:
        """Best-fit value by parameter name."""
        return {name: float(v) for name, v in zip(self.par_names, self.bestfit)}

    @property
    def errors(self) -> dict[str, float]:
        """Hessian uncertainty by parameter name (0 for fixed parameters)."""
        return {name: float(v) for name, v in zip(self.par_names, self.uncertainties)}

    @property
    def poi(self) -> float | None:
        """Best-fit value of the parameter of interest, if the model has one."""
        return None if self.poi_index is None else float(self.bestfit[self.poi_index])

    @property
    def poi_uncertainty(self) -> float | None:
        return None if self.poi_index is None else float(self.uncertainties[self.poi_index])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (names, values, uncertainties, correlation, status)."""
        return {
            "twice_nll": float(self.twice_nll),
            "success": bool(self.success),
            "status": int(self.status),
            "message": self.message,
            "iterations": int(self.iterations),
            "edm": float(self.edm),
            "method": self.method,
            "par_names": list(self.par_names),
            "bestfit": [float(v) for v in self.bestfit],
            "uncertainties": [_finite_or_none(v) for v in self.uncertainties],
            "fixed": [bool(v) for v in self.fixed],
            "at_bound": [bool(v) for v in self.at_bound],
            "correlation": [[_finite_or_none(v) for v in row] for row in self.correlation],
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: undetermined uncertainties are written as null."""
    return float(value) if np.isfinite(value) else None


# ---------------------------------------------------------------------------
# argument handling


def _index_of(model: Any, key: str | int) -> int:
    if isinstance(key, (int, np.integer)):
        if not 0 <= int(key) < model.npars:
            raise BayeshfError(f"parameter index {key} is outside 0..{model.npars - 1}.")
        return int(key)
    try:
        return list(model.par_names).index(key)
    except ValueError:
        raise BayeshfError(f"the model has no parameter named {key!r}.") from None


def _vector(model: Any, values: Any, default: np.ndarray, what: str) -> np.ndarray:
    out = np.array(default, dtype=float, copy=True)
    if values is None:
        return out
    if isinstance(values, Mapping):
        for key, value in values.items():
            out[_index_of(model, key)] = float(value)
        return out
    arr = np.asarray(values, dtype=float)
    if arr.shape != out.shape:
        raise BayeshfError(f"{what} has shape {arr.shape}, the model needs {out.shape}.")
    return arr.copy()


def _resolve_fixed(model: Any, fixed: Any, init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed mask and values: model defaults plus ``fixed`` (names/indices -> value, or a mask)."""
    mask = np.array(model.fixed, dtype=bool, copy=True)
    values = init.copy()
    if fixed is None:
        return mask, values
    if isinstance(fixed, Mapping):
        for key, value in fixed.items():
            i = _index_of(model, key)
            mask[i] = True
            if value is not None:
                values[i] = float(value)
        return mask, values
    arr = np.asarray(fixed)
    if arr.dtype == bool and arr.shape == mask.shape:
        return arr.copy(), values
    for key in fixed:  # a sequence of names or indices fixed at their init
        mask[_index_of(model, key)] = True
    return mask, values


def _resolve_bounds(model: Any, bounds: Any) -> np.ndarray:
    out = np.array(model.bounds, dtype=float, copy=True)
    if bounds is None:
        return out
    if isinstance(bounds, Mapping):
        for key, pair in bounds.items():
            out[_index_of(model, key)] = [float(pair[0]), float(pair[1])]
    else:
        arr = np.asarray(bounds, dtype=float)
        if arr.shape != out.shape:
            raise BayeshfError(f"bounds have shape {arr.shape}, the model needs {out.shape}.")
        out = arr.copy()
    if np.any(out[:, 0] >= out[:, 1]):
        bad = [model.par_names[i] for i in np.flatnonzero(out[:, 0] >= out[:, 1])]
        raise BayeshfError(f"the lower bound is not below the upper bound for {bad[:5]}.")
    return out


def default_data(model: Any) -> np.ndarray:
    """Main observations followed by the auxiliary data, as pyhf's ``workspace.data``."""
    return np.concatenate([np.asarray(model.observed, float), np.asarray(model.auxdata, float)])


# ---------------------------------------------------------------------------
# the fit


def fit(
    model: Any,
    *,
    method: str = "trust-krylov",
    init: Sequence[float] | Mapping[str, float] | None = None,
    fixed: Mapping[str, float | None] | Sequence[str] | np.ndarray | None = None,
    bounds: np.ndarray | Mapping[str, Sequence[float]] | None = None,
    data: Sequence[float] | None = None,
    gtol: float = 1e-6,
    maxiter: int = 1000,
) -> FitResult:
    """Minimise twice_nll of ``model`` (maximum-likelihood fit).

    ``init``: start values (array, or name -> value updating the model's inits).
    ``fixed``: name/index -> value to hold fixed (``None`` keeps the init), a
    list of names, or a boolean mask; added to the model's own fixed parameters.
    ``bounds``: (npars, 2) array or name -> (low, high). ``data``: main + aux
    data (default: the model's observed data and auxdata). ``method``:
    ``trust-krylov`` (Hessian-vector products), ``trust-exact`` (full Hessian),
    ``trust-ncg``, or ``auto`` (trust-exact up to 400 parameters).
    """
    if method not in _METHODS:
        raise BayeshfError(f"unknown fit method {method!r}; choose one of {', '.join(_METHODS)}.")
    x0 = _vector(model, init, np.asarray(model.init, float), "init")
    mask, fixed_values = _resolve_fixed(model, fixed, x0)
    box = _resolve_bounds(model, bounds)
    data_arr = default_data(model) if data is None else np.asarray(data, dtype=float)
    return minimize(model, x0, mask, fixed_values, box, data_arr, method=method, gtol=gtol, maxiter=maxiter)


def minimize(
    model: Any,
    x0: np.ndarray,
    mask: np.ndarray,
    fixed_values: np.ndarray,
    box: np.ndarray,
    data: np.ndarray,
    *,
    method: str = "trust-krylov",
    gtol: float = 1e-6,
    maxiter: int = 1000,
    final_hessian: bool = True,
) -> FitResult:
    """The fit on resolved arrays (start, fixed mask and values, (npars, 2) bounds, main+aux data).

    Used by :mod:`bayeshf.infer` to run many conditional fits without
    re-resolving names; ``fit`` is the public entry point.
    """
    if method == "auto":
        method = "trust-exact" if model.npars <= _EXACT_MAX_PARS else "trust-krylov"
    fns = compiled_functions(model)
    lo, hi = box[:, 0], box[:, 1]
    kind = np.where(np.isfinite(lo) & np.isfinite(hi), 0, np.where(np.isfinite(lo), 1, np.where(np.isfinite(hi), 2, 3)))
    x0 = np.where(mask, fixed_values, np.clip(x0, lo, hi))
    data_arr = jax.device_put(np.asarray(data, dtype=np.float64))
    args = (data_arr, *fit_arguments(mask, fixed_values, lo, hi, kind))

    # 1. trust-region Newton in the unconstrained space
    z0 = _from_unit(x0, lo, hi, kind)
    iterations, status, message = 0, 0, "no free parameters"
    if not np.all(mask):
        def fun(z):
            value, grad = fns.value_and_grad_z(z, *args)
            value = float(value)
            if not np.isfinite(value):  # e.g. a negative expected count: reject the step, shrink the region
                return np.inf, np.zeros(len(z))
            return value, np.asarray(grad)

        options: dict[str, Any] = {"gtol": gtol, "maxiter": maxiter}
        kwargs: dict[str, Any] = {}
        if method == "trust-exact":
            kwargs["hess"] = lambda z: np.asarray(fns.hess_z(z, *args))
        elif fns.small:
            kwargs["hessp"] = DenseProducts(fns, args)
            if method == "trust-krylov":  # products are cheap: solve each subproblem exactly
                options["inexact"] = False
        else:
            kwargs["hessp"] = lambda z, p: np.asarray(fns.hvp_z(z, p, *args))
        with np.errstate(all="ignore"):
            result = scipy.optimize.minimize(fun, z0, jac=True, method=method, options=options, **kwargs)
        z = result.x
        iterations, status, message = int(result.nit), int(result.status), str(result.message)
    else:
        z = z0
    x = fns.x_of(z, *args[1:])

    # 2. active-set Newton polish in the original space (pins parameters on bounds)
    x, value, grad, hess, at_bound, polished = _polish(fns, x, data_arr, mask, lo, hi, final_hessian=final_hessian)
    free = ~(mask | at_bound)
    edm = _edm(grad, hess, free)

    # 3. uncertainties from the Hessian over all non-fixed parameters
    covariance, ok_cov = _covariance(hess, ~mask) if final_hessian else (np.zeros((model.npars,) * 2), True)
    with np.errstate(invalid="ignore"):
        uncertainties = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        denom = np.where(uncertainties > 0, uncertainties, 1.0)
        correlation = covariance / np.outer(denom, denom)
    np.fill_diagonal(correlation, np.where(uncertainties > 0, 1.0, np.where(np.isnan(uncertainties), np.nan, 0.0)))

    success = bool(np.isfinite(value) and edm < 1e-8 and _kkt_ok(grad, x, lo, hi, at_bound))
    if iterations and status not in (0,) and success:
        message = f"{message} (then converged by Newton polish)"
    if not ok_cov:
        message += "; the Hessian is not positive definite, uncertainties are approximate"
    return FitResult(
        bestfit=x,
        uncertainties=uncertainties,
        covariance=covariance,
        correlation=correlation,
        twice_nll=float(value),
        success=success,
        status=0 if success else (status or 1),
        message=message,
        iterations=iterations + polished,
        edm=float(edm),
        par_names=tuple(model.par_names),
        fixed=mask,
        at_bound=at_bound,
        poi_index=getattr(model, "poi_index", None),
        method=method,
    )


def _polish(fns: _Compiled, x: np.ndarray, data: jax.Array, mask: np.ndarray,
            lo: np.ndarray, hi: np.ndarray, steps: int = 8, final_hessian: bool = True):
    """Projected Newton steps with an active set of parameters pinned on their bounds.

    Parameters close to a bound whose gradient points outward are pinned on it;
    a pinned parameter whose gradient points inward is released. The free ones
    take exact Newton steps, shortened to stay in the box (a parameter the
    shortened step reaches is pinned), accepted only if twice_nll drops.
    Returns the point, twice_nll, gradient and Hessian there, the pinned mask
    and the number of accepted steps.
    """
    width = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    value, grad = fns.value_and_grad(x, data)
    value, grad = float(value), np.asarray(grad)
    near_lo = ~mask & np.isfinite(lo) & (x - lo <= 1e-4 * width) & (grad > 0)
    near_hi = ~mask & np.isfinite(hi) & (hi - x <= 1e-4 * width) & (grad < 0)
    if np.any(near_lo | near_hi):
        x = np.where(near_lo, lo, np.where(near_hi, hi, x))
        value, grad = fns.value_and_grad(x, data)
        value, grad = float(value), np.asarray(grad)
    at_lo, at_hi = near_lo, near_hi
    hess = np.asarray(fns.hessian(x, data))
    fresh = True  # hess was computed at x
    accepted = 0
    for _ in range(6):  # outer: release pinned parameters whose gradient points inside
        for _ in range(steps):  # inner: Newton on the free set, pinning parameters a step runs into
            free = ~(mask | at_lo | at_hi)
            if not np.any(free):
                break
            if not fresh:
                hess = np.asarray(fns.hessian(x, data))
                fresh = True
            try:
                chol = np.linalg.cholesky(hess[np.ix_(free, free)])
            except np.linalg.LinAlgError:
                break
            step = np.zeros_like(x)
            step[free] = -scipy.linalg.cho_solve((chol, True), grad[free])
            if not np.all(np.isfinite(step)):
                break
            if 0.5 * float(-step[free] @ grad[free]) < 1e-15 * max(1.0, abs(value)):
                break  # converged: the Newton decrement is below round-off
            with np.errstate(divide="ignore", invalid="ignore"):
                room = np.where(step < 0, (lo - x) / step, np.where(step > 0, (hi - x) / step, np.inf))
            scale = min(1.0, float(np.min(room)))
            if scale < 1.0:  # the step runs into a bound: pin the parameters that block it
                hit = free & (room <= scale * (1 + 1e-12) + 1e-300)
                at_lo, at_hi = at_lo | (hit & (step < 0)), at_hi | (hit & (step > 0))
                if scale <= 1e-12:
                    x = np.where(at_lo, lo, np.where(at_hi, hi, x))
                    value, grad = fns.value_and_grad(x, data)
                    value, grad, fresh = float(value), np.asarray(grad), False
                    continue
            trial = np.clip(x + scale * step, lo, hi)
            trial = np.where(at_lo, lo, np.where(at_hi, hi, trial))
            t_value, t_grad = fns.value_and_grad(trial, data)
            t_value = float(t_value)
            if not np.isfinite(t_value) or t_value > value + 1e-13 * max(1.0, abs(value)):
                break
            x, value, grad = trial, t_value, np.asarray(t_grad)
            fresh = False
            accepted += 1
        release = (at_lo & (grad < -1e-9)) | (at_hi & (grad > 1e-9))
        if not np.any(release):
            break
        at_lo, at_hi = at_lo & ~release, at_hi & ~release
    if not fresh and accepted and final_hessian:
        hess = np.asarray(fns.hessian(x, data))
    return x, value, grad, hess, at_lo | at_hi, accepted


def _edm(grad: np.ndarray, hess: np.ndarray, free: np.ndarray) -> float:
    if not np.any(free):
        return 0.0
    g = grad[free]
    try:
        return float(0.5 * g @ np.linalg.solve(hess[np.ix_(free, free)], g))
    except np.linalg.LinAlgError:
        return float("inf")


def _kkt_ok(grad: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, at_bound: np.ndarray) -> bool:
    """On a lower bound the gradient must not point inward (and vice versa)."""
    tol = 1e-6
    on_lo = at_bound & (x == lo)
    on_hi = at_bound & (x == hi)
    return bool(np.all(grad[on_lo] >= -tol) and np.all(grad[on_hi] <= tol))


def _covariance(hess: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, bool]:
    """Covariance 2 H^-1 of twice_nll over the free parameters, zero elsewhere."""
    n = hess.shape[0]
    cov = np.zeros((n, n))
    if not np.any(free):
        return cov, True
    h = hess[np.ix_(free, free)]
    ok = True
    try:
        np.linalg.cholesky(h)
        inv = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        # flat or negative curvature: invert the well-determined directions, and give the
        # parameters that take part in the others an undetermined (NaN) variance
        ok = False
        w, v = np.linalg.eigh(0.5 * (h + h.T))
        flat = w <= 1e-10 * max(float(np.max(np.abs(w))), 1.0)
        inv = (v[:, ~flat] / w[~flat]) @ v[:, ~flat].T
        touched = np.sum(v[:, flat] ** 2, axis=1) > 1e-6
        inv[touched, :] = np.nan
        inv[:, touched] = np.nan
    cov[np.ix_(free, free)] = 2.0 * inv
    return cov, ok
