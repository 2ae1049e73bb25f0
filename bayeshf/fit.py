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
import itertools
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.newton import NewtonResult, bounded_newton, leave_saddles
from bayeshf.objective import DenseProducts, _Compiled, compiled_functions, fit_arguments
from bayeshf.transforms import codes, unconstrain_host
from bayeshf.problem import FitProblem, default_data
from bayeshf._display import display

if TYPE_CHECKING:  # annotations only: no import cycle at run time
    from bayeshf.model import HistFactoryModel

__all__ = ["FitResult", "FitFailedError", "FitProblem", "fit", "solve", "global_fit", "minimize",
           "compiled_functions", "default_data", "kinked_parameters", "non_monotone_parameters",
           "may_have_several_valleys", "goodness_of_fit", "with_goodness_of_fit"]

_METHODS = ("trust-krylov", "trust-exact", "trust-ncg", "auto")
#: models with at most this many parameters use trust-exact under method="auto"
_EXACT_MAX_PARS = 400
#: local minimisations run so far in this process (tests count the extra fits of the checks)
SOLVE_CALLS = [0]

@display(("poi", "poi_uncertainty"))
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
    gof_pvalue: float | None = None
    gof_ndof: int | None = None
    saturated_twice_nll: float | None = None

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
            "goodness_of_fit": None if self.gof_ndof is None else {
                "p_value": _finite_or_none(self.gof_pvalue), "ndof": int(self.gof_ndof),
                "saturated_twice_nll": _finite_or_none(self.saturated_twice_nll)},
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: undetermined uncertainties are written as null."""
    return float(value) if np.isfinite(value) else None


# ---------------------------------------------------------------------------
# the fit


def fit(
    model: HistFactoryModel,
    *,
    method: str = "trust-krylov",
    init: Sequence[float] | Mapping[str, float] | None = None,
    fixed: Mapping[str, float | None] | Sequence[str] | np.ndarray | None = None,
    bounds: np.ndarray | Mapping[str, Sequence[float]] | None = None,
    data: Sequence[float] | None = None,
    gtol: float = 1e-6,
    maxiter: int = 1000,
    reference: FitResult | None = None,
) -> FitResult:
    """Minimise twice_nll of ``model`` (maximum-likelihood fit).

    ``init``: start values (array, or name -> value updating the model's inits).
    ``fixed``: name/index -> value to hold fixed (``None`` keeps the init), a
    list of names, or a boolean mask; added to the model's own fixed parameters.
    ``bounds``: (npars, 2) array or name -> (low, high). ``data``: main + aux
    data (default: the model's observed data and auxdata). ``method``:
    ``trust-krylov`` (Hessian-vector products), ``trust-exact`` (full Hessian),
    ``trust-ncg``, or ``auto`` (trust-exact up to 400 parameters).

    ``reference``: a converged fit of the same data with fewer parameters fixed
    (e.g. the free fit the caller already has); when parameters are fixed and it
    is not given, the free fit is made here (:func:`global_fit` checks against it).

    The fit is checked and retried (see :func:`global_fit`); a fit that still
    fails is returned with ``success=False`` (it does not raise). The result
    carries the saturated-model goodness of fit (``gof_pvalue``).
    """
    _check_method(method)
    problem = FitProblem.resolve(model, init=init, fixed=fixed, bounds=bounds, data=data)
    extra = problem.fixed & ~np.asarray(model.fixed, bool)
    if reference is None and np.any(extra):
        # far from the free fit a fixed fit can end in a side valley; the free fit is the reference that
        # global_fit's plausibility check and its descent start from
        free = dataclasses.replace(problem, fixed=np.asarray(model.fixed, bool).copy(),
                                   init=np.where(extra, np.asarray(model.init, float), problem.init))
        free_fit = global_fit(free, method=method, gtol=gtol, maxiter=maxiter, raise_on_failure=False)
        reference = free_fit if free_fit.success else None
    result = global_fit(problem, method=method, gtol=gtol, maxiter=maxiter, raise_on_failure=False,
                        reference=reference, explore=may_have_several_valleys(model))
    return with_goodness_of_fit(result, problem)


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise BayeshfError(f"unknown fit method {method!r}; choose one of {', '.join(_METHODS)}.")


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
    """One local fit on resolved arrays (start, fixed mask and values, (npars, 2) bounds, main+aux data).

    Kept for callers that hold plain arrays; :func:`solve` takes a :class:`FitProblem`.
    """
    problem = FitProblem(model, np.asarray(x0, float), np.asarray(mask, bool), np.asarray(fixed_values, float),
                         np.asarray(box, float), np.asarray(data, float))
    return solve(problem, method=method, gtol=gtol, maxiter=maxiter, final_hessian=final_hessian)


def solve(
    problem: FitProblem,
    start: np.ndarray | None = None,
    *,
    method: str = "trust-krylov",
    gtol: float = 1e-6,
    maxiter: int = 1000,
    final_hessian: bool = True,
    polish_budget: int = 200,
    newton_first: bool = False,
) -> FitResult:
    """One local minimisation of ``problem`` from ``start`` (default ``problem.init``), unchecked.

    Trust-region Newton in the unconstrained space, then the active-set
    Newton polish in the original space; :func:`global_fit` adds the checks,
    retries and kink probes.
    """
    import scipy.optimize  # here, not at import: bayeshf's other commands do not need it

    _check_method(method)
    model, mask, fixed_values, box, data = problem.model, problem.fixed, problem.values, problem.bounds, problem.data
    if method == "auto":
        method = "trust-exact" if model.npars <= _EXACT_MAX_PARS else "trust-krylov"
    SOLVE_CALLS[0] += 1
    x0 = problem.start(start)
    fns = compiled_functions(model)
    lo, hi = box[:, 0], box[:, 1]
    kind = codes(lo, hi)
    data_arr = jax.device_put(np.asarray(data, dtype=np.float64))
    args = (data_arr, *fit_arguments(mask, fixed_values, lo, hi, kind))

    # 0. from a warm start next to the answer (a neighbouring POI value), exact Newton steps may suffice:
    # the trust region started there can crawl where the bound map saturates
    early = None
    if newton_first and not np.all(mask):
        early = _polish(fns, x0, data_arr, mask, lo, hi, final_hessian=final_hessian, budget=30)
        ex, evalue, egrad, ehess, ebound, _ = early
        if not (np.isfinite(evalue) and _edm(egrad, ehess, ~(mask | ebound)) < 1e-8
                and _kkt_ok(egrad, ex, lo, hi, ebound)):
            early = None

    # 1. trust-region Newton in the unconstrained space
    z0 = unconstrain_host(x0, lo, hi, kind)
    iterations, status, message = 0, 0, "no free parameters"
    if early is not None:
        message = "converged by Newton steps from the warm start"
    elif not np.all(mask):
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
    x = fns.x_of(z, *args[1:]) if early is None else x0
    if iterations and status != 0:
        # the trust region gave up: polish from the start instead if that is lower (a start on bounds,
        # which the unconstrained map moves inside, can be the minimum itself)
        start_value = float(fns.value_and_grad(x0, data_arr)[0])
        if start_value <= float(fns.value_and_grad(x, data_arr)[0]):
            x = x0

    # 2. active-set Newton polish in the original space (pins parameters on bounds)
    # damped steps may be many where the curvature is negative (a retry allows more); undamped ones converge in a few
    if early is not None:
        x, value, grad, hess, at_bound, polished = early
    else:
        x, value, grad, hess, at_bound, polished = _polish(fns, x, data_arr, mask, lo, hi,
                                                           final_hessian=final_hessian, budget=polish_budget)
    (x, value, grad, hess, at_bound, polished), saddle = leave_saddles(
        lambda p: fns.value_and_grad(p, data_arr), lambda p: fns.hessian(p, data_arr),
        NewtonResult(x, value, grad, hess, at_bound, polished), mask, lo, hi, final_hessian, polish_budget)
    free = ~(mask | at_bound)
    edm = _edm(grad, hess, free)

    # 3. uncertainties from the Hessian over all non-fixed parameters
    covariance, ok_cov = _covariance(hess, ~mask) if final_hessian else (np.zeros((model.npars,) * 2), True)
    with np.errstate(invalid="ignore"):
        uncertainties = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        denom = np.where(uncertainties > 0, uncertainties, 1.0)
        correlation = covariance / np.outer(denom, denom)
    np.fill_diagonal(correlation, np.where(uncertainties > 0, 1.0, np.where(np.isnan(uncertainties), np.nan, 0.0)))

    success = bool(np.isfinite(value) and edm < 1e-8 and _kkt_ok(grad, x, lo, hi, at_bound) and not saddle)
    if iterations and status not in (0,) and success:
        message = f"{message} (then converged by Newton polish)"
    if not success:  # SciPy's "terminated successfully" next to success false would contradict it
        why = ("the likelihood is not finite" if not np.isfinite(value) else
               "it stopped at a saddle point (negative curvature)" if saddle else
               f"edm {edm:.2g} is not below 1e-8" if not edm < 1e-8 else "the gradient does not vanish at the best fit")
        message = why + (f" (the minimiser: {message})" if status != 0 else "")
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


# ---------------------------------------------------------------------------
# checked fits: retries, the lower of several minima, kinks


class FitFailedError(BayeshfError):
    """A fit inside a frequentist computation failed even after retries: no number is computed from it.

    ``result`` is the best failed attempt (``success`` False), ``what`` names
    the fit ("the fit with mu fixed at 1"). The command line prints the
    message and exits with status 1 (bad input is status 2).
    """

    exit_code = 1

    def __init__(self, what: str, result: FitResult | None, reason: str) -> None:
        self.what, self.result, self.reason = what, result, reason
        super().__init__(f"{what} failed ({reason}); no result is reported from it.")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": False, "error": str(self), "failed_fit": self.what}
        if self.result is not None:
            out.update(twice_nll=_finite_or_none(self.result.twice_nll), edm=_finite_or_none(self.result.edm),
                       message=self.result.message)
        return out


def kinked_parameters(model: Any) -> np.ndarray:
    """Indices of parameters with a piecewise interpolation kinked at alpha = 0 (normsys code1, histosys code0).

    code4/code4p (pyhf's defaults) and code2 have a continuous first derivative
    at 0: none of their parameters is listed, so their fits take no extra steps.
    """
    codes = getattr(model, "codes", {})
    kinked_types = {t for t, code in (("normsys", "code1"), ("histosys", "code0")) if codes.get(t) == code}
    out: list[int] = []
    if kinked_types:
        for ps in model.parameters:
            if kinked_types & set(ps.modifier_types):
                out.extend(range(ps.slice.start, ps.slice.stop))
    return np.asarray(sorted(out), dtype=int)


def _variations(model: Any):
    """(histosys parameter per row, up - nom, nom - down, normsys parameter, log hi, log lo) of ``model``."""
    arrays = model.arrays
    params = np.asarray(arrays.histosys_param)
    table = np.asarray(arrays.histosys_table)
    return (params, table[: params.size], table[params.size:], np.asarray(arrays.normsys_param),
            np.asarray(arrays.normsys_log_hi), np.asarray(arrays.normsys_log_lo))


def non_monotone_parameters(model: Any) -> np.ndarray:
    """Indices of parameters whose up and down variations lie on the same side of the nominal somewhere.

    A histosys bin with up - nom and nom - down of opposite signs, or a normsys
    with both factors above (or below) 1, makes the expected count fall and rise
    again in alpha: the likelihood can have a valley at each sign of alpha,
    even with the smooth codes (sbottom's JET_JER_EffectiveNP_7restTerm on the
    Asimov data of RegionA + 600_180_50: 109.618 at alpha -0.67, 109.627 at +0.67).
    """
    params, up, down, normsys, log_hi, log_lo = _variations(model)
    out = {int(p) for p in params[np.any(up * down < 0, axis=1)]} if params.size else set()
    out.update(int(p) for p in normsys[log_hi * log_lo > 0])
    return np.asarray(sorted(out), dtype=int)


def one_sided_parameters(model: Any) -> np.ndarray:
    """Indices of parameters with a one-sided variation somewhere: a histosys bin or a normsys with one
    template equal to the nominal and the other not. code4p and code4 interpolate them with a polynomial
    that dips below the nominal between alpha = -1 and 0 (sbottom's ttbar_Gen, ttbar_PS), so the likelihood
    can have a second valley there."""
    params, up, down, normsys, log_hi, log_lo = _variations(model)
    out = ({int(p) for p in params[np.any((up * down == 0) & ((up != 0) | (down != 0)), axis=1)]}
           if params.size else set())
    out.update(int(p) for p in normsys[(log_hi * log_lo == 0) & ((log_hi != 0) | (log_lo != 0))])
    return np.asarray(sorted(out), dtype=int)


def several_valley_parameters(model: Any) -> np.ndarray:
    """Free parameters along which the likelihood can have two valleys: kinked, non-monotone or one-sided."""
    out = {int(i) for f in (kinked_parameters, non_monotone_parameters, one_sided_parameters) for i in f(model)}
    fixed = np.asarray(model.fixed, bool)
    return np.asarray(sorted(i for i in out if not fixed[i]), dtype=int)


def may_have_several_valleys(model: Any) -> bool:
    """True when a kinked, non-monotone or one-sided interpolation can give the likelihood more than one minimum."""
    return bool(several_valley_parameters(model).size)


#: mirror probes (the fits' and the toys'): a parameter at alpha is probed at MIRROR_SCALE * alpha (at least
#: 0.5 from 0), the others following the profile line; a fit restarts there when the twice_nll rise is below
#: MIRROR_MARGIN and below MIRROR_RATIO of the rise the quadratic model predicts (docs/frequentist.md, Toys)
MIRROR_SCALE, MIRROR_RATIO, MIRROR_MARGIN = -0.7, 0.35, 1.0
#: a single fit probes several multiples (function values are cheap next to its refits) and refits more
#: readily than a batch of toys, from at most MIRROR_TRIES passing points per round, the lowest first
FIT_MIRROR_SCALES, FIT_MIRROR_RATIO, MIRROR_TRIES = (-0.7, -1.0, -1.4), 0.7, 3


def _tolerance(value: float) -> float:
    """Round-off scale of twice_nll differences between two converged fits."""
    return 1e-8 * max(1.0, abs(value))


def _quadratic_excess(problem: FitProblem, reference: FitResult) -> float | None:
    """twice_nll rise the reference's covariance predicts for the values ``problem`` fixes beyond it."""
    newly = problem.fixed & ~reference.fixed
    cov = reference.covariance
    if not np.any(newly) or not np.any(cov):
        return None
    shift = problem.values[newly] - reference.bestfit[newly]
    block = cov[np.ix_(newly, newly)]
    if not np.all(np.isfinite(block)):
        return None
    try:
        return float(shift @ np.linalg.solve(block, shift))
    except np.linalg.LinAlgError:
        return None


def global_fit(
    problem: FitProblem,
    starts: Sequence[np.ndarray] = (),
    *,
    method: str = "trust-krylov",
    gtol: float = 1e-6,
    maxiter: int = 1000,
    final_hessian: bool = True,
    reference: FitResult | None = None,
    what: str = "the fit",
    raise_on_failure: bool = True,
    explore: bool = False,
) -> FitResult:
    """A checked fit of ``problem``: converged, retried from other starts, the lower of the minima found.

    ``starts`` are tried in order (then ``problem.init``, the model's inits
    with the fixed values): the first converged fit is taken, unless
    ``reference`` (a fit of the same data with fewer parameters fixed, e.g.
    the free fit) shows it is implausible: then every start is fitted and the
    lowest converged minimum kept (``explore=True``: always, for likelihoods
    with several valleys). Implausible means a twice_nll rise over the
    reference above 4x the quadratic prediction of the reference's covariance
    plus 25. Parameters on a kinked interpolation (:func:`kinked_parameters`)
    are then probed on the other side of the kink (:func:`_probe_kinks`).
    When no start converges, raises :class:`FitFailedError` (or, with
    ``raise_on_failure=False``, returns the lowest failed attempt).
    """
    candidates: list[np.ndarray] = []
    n_warm = 0  # the caller's warm starts come first and try exact Newton steps before the trust region
    for k, start in enumerate((*starts, problem.init, np.asarray(problem.model.init, float))):
        x = problem.start(start)
        if not any(np.array_equal(x, c) for c in candidates):
            candidates.append(x)
            n_warm += k < len(starts)
    options = dict(method=method, gtol=gtol, maxiter=maxiter, final_hessian=final_hessian)
    expected = None if reference is None else _quadratic_excess(problem, reference)

    def implausible(result: FitResult) -> bool:
        return (reference is not None and expected is not None
                and result.twice_nll - reference.twice_nll > 4.0 * expected + 25.0)

    def descend(origin: np.ndarray) -> FitResult:  # a line search, then exact Newton steps finish
        return solve(problem, _bounded_descent(problem, origin), newton_first=True, **options)

    converged: list[FitResult] = []
    failed: list[FitResult] = []
    tried: list[np.ndarray] = []  # origins of descents run: the same deterministic descent is not run twice
    for k, x in enumerate(candidates):
        result = solve(problem, x, newton_first=k < n_warm, **options)
        (converged if result.success else failed).append(result)
        if result.success and not implausible(result) and not explore:
            break
    if not converged:
        finite = [r for r in failed if np.isfinite(r.twice_nll)]
        best = min(finite, key=lambda r: r.twice_nll) if finite else (failed[0] if failed else None)
        for _ in range(3 if best is not None and np.isfinite(best.twice_nll) else 0):
            # continue from the lowest point reached: a hard valley can need more Newton steps
            result = solve(problem, best.bestfit, polish_budget=2000, **options)
            if result.success:
                converged.append(result)
                break
            if result.twice_nll < best.twice_nll:
                best = result
    if not converged and best is not None and np.isfinite(best.twice_nll):
        # last resort: a bounded quasi-Newton descent needs no trust model, then exact Newton steps finish;
        # from the lowest failed point first, then from the reference's minimum and the starts (other paths)
        origins = [best.bestfit, *([] if reference is None else [problem.start(reference.bestfit)]), *candidates]
        for origin in origins:
            if any(np.array_equal(origin, o) for o in tried):
                continue
            tried.append(origin)
            result = descend(origin)
            if result.success:
                converged.append(result)
                break
            if result.twice_nll < best.twice_nll:
                best = result
    if not converged:
        if raise_on_failure:
            reason = f"did not converge from {len(candidates)} starting points"
            if best is not None:
                reason += f": {best.message}, twice_nll {best.twice_nll:.6g}, edm {best.edm:.2g}"
            raise FitFailedError(what, best, reason)
        return best
    best = min(converged, key=lambda r: r.twice_nll)
    if implausible(best) and not any(np.array_equal(problem.start(reference.bestfit), o) for o in tried):
        # far from the reference the trust region can end in a side valley; a line search from the
        # reference's minimum follows another path down, and the lower minimum is kept
        result = descend(reference.bestfit)
        if result.success and result.twice_nll < best.twice_nll - _tolerance(best.twice_nll):
            best = result  # only a lower valley: the same minimum reached again is not a new answer
    return _probe_kinks(problem, _probe_mirrors(problem, best, options), options)


def _mirror(alpha: float, scale: float) -> float:
    """The probed value of a parameter at ``alpha``: ``scale`` times alpha, at least 0.5 from 0."""
    return scale * np.sign(alpha if alpha != 0 else 1.0) * max(abs(alpha), 0.5)


def _probe_mirrors(problem: FitProblem, result: FitResult, options: dict[str, Any], rounds: int = 3) -> FitResult:
    """Refit from the mirror image of a several-valley parameter where the likelihood there is about as low.

    For each free non-monotone or one-sided parameter (kinks: :func:`_probe_kinks`), twice_nll is evaluated
    at MIRROR_SCALE * alpha with the other parameters on the profile line of the fit's covariance; where
    the rise is below MIRROR_MARGIN and below MIRROR_RATIO of the quadratic prediction, the likelihood
    does not rise there as one valley would, and the fit restarts from the lowest such point. The lower
    converged minimum is kept; repeated while a probe finds one.
    """
    model = problem.model
    kinked = set(int(i) for i in kinked_parameters(model))
    params = [int(i) for i in several_valley_parameters(model) if not problem.fixed[i] and int(i) not in kinked]
    if not params:
        return result
    fns = compiled_functions(model)
    data = jax.device_put(np.asarray(problem.data, dtype=np.float64))
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    best = result
    for _ in range(rounds):
        x, cov = best.bestfit, np.asarray(best.covariance, dtype=float)
        candidates = []
        good_cov = cov.shape == (model.npars, model.npars) and bool(np.all(np.isfinite(cov)))
        curvature = np.zeros(model.npars)  # twice_nll's own second derivative: the rise of one parameter alone
        if good_cov:
            free = ~np.asarray(problem.fixed, bool)
            curvature[free] = np.diag(np.linalg.pinv(cov[np.ix_(free, free)]))
        for p, scale in itertools.product(params, FIT_MIRROR_SCALES):
            shift = _mirror(x[p], scale) - x[p]
            var = cov[p, p] if good_cov else 0.0
            # along the profile line of the covariance, and the parameter alone (the line can lead astray
            # far from the minimum); rises compared with the quadratic model's of each
            lines = [(np.eye(model.npars)[p], shift ** 2 * curvature[p] if curvature[p] > 0 else np.inf)]
            if var > 0:
                lines.append((cov[:, p] / var, shift ** 2 / var))
            for direction, predicted in lines:
                point = np.where(problem.fixed, x, np.clip(x + shift * direction, lo, hi))
                rise = float(fns.value_and_grad(point, data)[0]) - best.twice_nll
                if np.isfinite(rise) and rise < min(MIRROR_MARGIN, FIT_MIRROR_RATIO * predicted):
                    candidates.append((rise, point))
        if len(params) > 1:  # all of them mirrored at once: valleys that need two parameters to change sides
            point = x.copy()
            point[params] = [_mirror(x[p], MIRROR_SCALE) for p in params]
            point = np.where(problem.fixed, x, np.clip(point, lo, hi))
            rise = float(fns.value_and_grad(point, data)[0]) - best.twice_nll
            if np.isfinite(rise) and rise < MIRROR_MARGIN:
                candidates.append((rise, point))
        improved = False
        for _, point in sorted(candidates, key=lambda c: c[0])[:MIRROR_TRIES]:  # the lowest rises first
            trial = solve(problem, point, **options)
            if trial.success and trial.twice_nll < best.twice_nll - _tolerance(best.twice_nll):
                best, improved = trial, True
                break
        if not improved:
            break
    return best


def _bounded_descent(problem: FitProblem, start: np.ndarray, maxiter: int = 20000) -> np.ndarray:
    """L-BFGS-B on the free parameters in the original bounded space, from ``start``.

    Where many parameters sit on their bounds and the curvature changes fast
    (an Asimov fit far from its hypothesis), the trust region's quadratic
    model keeps failing to predict improvement; a line-search method with
    the bounds as box constraints still descends.
    """
    import scipy.optimize

    free = ~np.asarray(problem.fixed, bool)
    x = problem.start(start).astype(float)
    if not free.any():
        return x
    fns = compiled_functions(problem.model)
    data = jax.device_put(np.asarray(problem.data, dtype=np.float64))
    lo, hi = problem.bounds[free, 0], problem.bounds[free, 1]

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        full = x.copy()
        full[free] = y
        value, grad = fns.value_and_grad(full, data)
        value = float(value)
        if not np.isfinite(value):
            return np.inf, np.zeros(len(y))
        return value, np.asarray(grad, dtype=float)[free]

    with np.errstate(all="ignore"):
        result = scipy.optimize.minimize(fun, np.clip(x[free], lo, hi), jac=True, method="L-BFGS-B",
                                         bounds=list(zip(lo, hi)),
                                         options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 30})
    x[free] = result.x
    return x


def _probe_kinks(problem: FitProblem, result: FitResult, options: dict[str, Any], rounds: int = 3) -> FitResult:
    """Refit from the other side of every kink at alpha = 0 and keep the lowest converged minimum.

    A piecewise interpolation (code0, code1) can give one valley on each side
    of alpha = 0; a Newton method started at the kink enters one of them. A
    parameter that ended at alpha restarts at -alpha (at least 0.5 away); one
    sitting on the kink restarts on both sides. Repeated while a probe finds
    a lower minimum.
    """
    kinks = [int(i) for i in kinked_parameters(problem.model) if not problem.fixed[i]]
    if not kinks:
        return result
    best = result
    for _ in range(rounds):
        improved = False
        for i in kinks:
            a = float(best.bestfit[i])
            sides = [-np.sign(a) * max(abs(a), 0.5)] if abs(a) > 1e-6 else [0.5, -0.5]
            for side in sides:
                start = best.bestfit.copy()
                start[i] = side
                trial = solve(problem, start, **options)
                if trial.success and trial.twice_nll < best.twice_nll - _tolerance(best.twice_nll):
                    best, improved = trial, True
        if not improved:
            break
    return best


# ---------------------------------------------------------------------------
# goodness of fit


def goodness_of_fit(model: Any, twice_nll: float, data: np.ndarray | None = None,
                    fixed: np.ndarray | None = None) -> tuple[float, int, float]:
    """Saturated-model test of a fit with minimum ``twice_nll``: (p-value, degrees of freedom, saturated twice_nll).

    As cabinetry computes it: the saturated model has every main bin's
    expectation equal to its count and the constraint terms at their maximum
    (normal: theta = aux; Poisson: theta = aux / factor); 2 Delta NLL is
    chi-square distributed with (main bins - free unconstrained parameters)
    degrees of freedom. The p-value is NaN when that number is not positive.
    """
    from scipy.special import chdtrc, gammaln, xlogy  # chdtrc: chi2.sf without importing all of scipy.stats

    data = default_data(model) if data is None else np.asarray(data, dtype=float)
    main, aux = data[: model.nmain], data[model.nmain:]
    poisson = float(np.sum(xlogy(main, main) - main - gammaln(main + 1.0)))
    pars = np.asarray(model.init, dtype=float).copy()
    arrays = model.arrays
    normal_param = np.asarray(arrays.normal_param)
    poisson_param = np.asarray(arrays.poisson_param)
    if normal_param.size:
        pars[normal_param] = aux[np.asarray(arrays.normal_aux_position)]
    if poisson_param.size:
        pars[poisson_param] = aux[np.asarray(arrays.poisson_aux_position)] / np.asarray(arrays.poisson_factor)
    constraint = float(model.log_constraint(pars, aux)) if model.nauxdata else 0.0
    saturated = -2.0 * (poisson + constraint)
    fixed = np.asarray(model.fixed if fixed is None else fixed, dtype=bool)
    unconstrained = sum(int(np.sum(~fixed[ps.slice])) for ps in model.parameters if ps.constraint is None)
    ndof = int(model.nmain) - unconstrained
    statistic = float(twice_nll) - saturated
    p_value = float(chdtrc(ndof, statistic)) if ndof > 0 else float("nan")
    return p_value, ndof, saturated


def with_goodness_of_fit(result: FitResult, problem: FitProblem) -> FitResult:
    """``result`` with its saturated-model goodness of fit filled in."""
    if not np.isfinite(result.twice_nll):
        return result
    p_value, ndof, saturated = goodness_of_fit(problem.model, result.twice_nll, problem.data, problem.fixed)
    return dataclasses.replace(result, gof_pvalue=p_value, gof_ndof=ndof, saturated_twice_nll=saturated)


def _polish(fns: _Compiled, x: np.ndarray, data: jax.Array, mask: np.ndarray,
            lo: np.ndarray, hi: np.ndarray, steps: int = 8, final_hessian: bool = True, budget: int = 200):
    """:func:`bayeshf.newton.bounded_newton` on twice_nll with its exact Hessian: the point, twice_nll,
    gradient and Hessian there, the pinned mask and the number of accepted steps."""
    return bounded_newton(lambda p: fns.value_and_grad(p, data), lambda p: fns.hessian(p, data), x, mask, lo, hi,
                          steps=steps, final_hessian=final_hessian, budget=budget)


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
