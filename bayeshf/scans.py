"""Profile-likelihood scans of one parameter (the POI by default) and of two (contours).

At each point the scanned parameters are fixed and the others profiled; the
result is Delta(twice_nll) = -2 ln lambda against the global minimum (not
clipped). Each conditional fit starts from the neighbouring point's solution
and reuses the model's compiled functions.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.fit import FitFailedError, FitResult, _tolerance, global_fit, may_have_several_valleys
from bayeshf.problem import FitProblem, parameter_index
from bayeshf._display import display

if TYPE_CHECKING:  # annotations only: no import cycle at run time
    from bayeshf.model import HistFactoryModel

__all__ = ["ScanResult", "Scan2DResult", "MinosResult", "profile_scan", "profile_scan_2d", "minos"]


@display()
@dataclasses.dataclass(frozen=True)
class ScanResult:
    """1D profile scan: ``delta_twice_nll[i]`` at ``values[i]`` of ``par_name``.

    ``bestfit`` / ``twice_nll_min`` describe the global fit; ``interval_68``
    and ``interval_95`` are where Delta(twice_nll) crosses 1 and 3.84
    (linear interpolation between scan points; NaN when not crossed).
    """

    par_name: str
    values: np.ndarray
    delta_twice_nll: np.ndarray
    bestfit: float
    uncertainty: float
    twice_nll_min: float
    interval_68: tuple[float, float]
    interval_95: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"par_name": self.par_name, "values": self.values.tolist(),
                "delta_twice_nll": self.delta_twice_nll.tolist(), "bestfit": self.bestfit,
                "uncertainty": self.uncertainty, "twice_nll_min": self.twice_nll_min,
                "interval_68": list(self.interval_68), "interval_95": list(self.interval_95)}


@display()
@dataclasses.dataclass(frozen=True)
class Scan2DResult:
    """2D profile scan: ``delta_twice_nll[i, j]`` at (``values_x[i]``, ``values_y[j]``)."""

    par_names: tuple[str, str]
    values_x: np.ndarray
    values_y: np.ndarray
    delta_twice_nll: np.ndarray
    bestfit: tuple[float, float]
    twice_nll_min: float

    def to_dict(self) -> dict[str, Any]:
        return {"par_names": list(self.par_names), "values_x": self.values_x.tolist(),
                "values_y": self.values_y.tolist(), "delta_twice_nll": self.delta_twice_nll.tolist(),
                "bestfit": list(self.bestfit), "twice_nll_min": self.twice_nll_min}


class _Profiler:
    """The resolved problem plus the global fit, for many checked conditional fits."""

    def __init__(self, model: Any, data: Any, init: Any, bounds: Any, fixed: Any, method: str,
                 global_fit_result: FitResult | None) -> None:
        self.model = model
        self.method = method
        self.problem = FitProblem.resolve(model, init=init, fixed=fixed, bounds=bounds, data=data)
        self.box = self.problem.bounds
        self.global_fit = global_fit_result or global_fit(self.problem, method=method, what="the free fit")
        self.explore = may_have_several_valleys(model)  # then every start is fitted, the lowest kept

    def conditional(self, indices: Sequence[int], point: Sequence[float], start: np.ndarray) -> FitResult:
        """Checked fit with ``indices`` fixed at ``point``, started from ``start`` then the global fit.

        A minimum below the global one means the global fit missed it: the
        global fit is redone from there (callers compute differences at the end).
        """
        problem = self.problem
        for i, v in zip(indices, point):
            problem = problem.fixing(i, v)
        names = ", ".join(f"{self.model.par_names[i]} = {v:g}" for i, v in zip(indices, point))
        result = global_fit(problem, (start, self.global_fit.bestfit), method=self.method, final_hessian=False,
                            reference=self.global_fit, explore=self.explore, what=f"the fit with {names} fixed")
        if result.twice_nll < self.global_fit.twice_nll - _tolerance(self.global_fit.twice_nll):
            self.global_fit = global_fit(self.problem, (result.bestfit, self.global_fit.bestfit),
                                         method=self.method, what="the free fit")
        return result

    def default_range(self, index: int, npoints: int) -> np.ndarray:
        centre = self.global_fit.bestfit[index]
        width = self.global_fit.uncertainties[index]
        if not np.isfinite(width) or width <= 0:
            width = 0.1 * (self.box[index, 1] - self.box[index, 0])
        lo = max(centre - 3 * width, self.box[index, 0])
        hi = min(centre + 3 * width, self.box[index, 1])
        return np.linspace(lo, hi, npoints)


def _crossing(values: np.ndarray, delta: np.ndarray, level: float, centre: float) -> tuple[float, float]:
    def side(mask: np.ndarray, reverse: bool) -> float:
        xs, ys = values[mask], delta[mask]
        if reverse:
            xs, ys = xs[::-1], ys[::-1]
        for k in range(1, len(xs)):  # walk outwards from the minimum
            if ys[k - 1] < level <= ys[k]:
                return float(xs[k - 1] + (level - ys[k - 1]) * (xs[k] - xs[k - 1]) / (ys[k] - ys[k - 1]))
        return float("nan")

    return side(values <= centre, True), side(values >= centre, False)


def profile_scan(
    model: HistFactoryModel,
    values: Sequence[float] | None = None,
    *,
    par: str | int | None = None,
    npoints: int = 21,
    data: Sequence[float] | None = None,
    init: Any = None,
    bounds: Any = None,
    fixed: Mapping[str, float | None] | Sequence[str] | None = None,
    method: str = "trust-krylov",
    global_fit: FitResult | None = None,
) -> ScanResult:
    """Profile scan of ``par`` (default: the POI) over ``values`` (default: best fit +-3 sigma, 21 points)."""
    if par is None:
        if getattr(model, "poi_index", None) is None:
            raise BayeshfError(f"{getattr(model, 'label', 'the model')}: the model has no parameter of interest; "
                               "name the parameter to scan.")
        par = int(model.poi_index)
    index = parameter_index(model, par)
    prof = _Profiler(model, data, init, bounds, fixed, method, global_fit)
    if prof.problem.fixed[index]:
        raise BayeshfError(f"parameter {model.par_names[index]!r} is fixed and cannot be scanned.")
    grid = prof.default_range(index, npoints) if values is None else np.asarray(values, dtype=float)
    delta = np.empty(len(grid))
    centre = prof.global_fit.bestfit[index]
    # walk outwards from the best fit so each fit starts next to its neighbour's solution
    order = np.argsort(np.abs(grid - centre))
    starts: dict[int, np.ndarray] = {}
    minima = np.empty(len(grid))
    for k in order:
        neighbours = [j for j in starts if abs(j - k) == 1]
        start = starts[neighbours[0]] if neighbours else prof.global_fit.bestfit
        result = prof.conditional([index], [grid[k]], start)
        starts[int(k)] = result.bestfit
        minima[k] = result.twice_nll
    delta[:] = minima - prof.global_fit.twice_nll
    centre = prof.global_fit.bestfit[index]
    return ScanResult(
        par_name=model.par_names[index],
        values=grid,
        delta_twice_nll=delta,
        bestfit=float(centre),
        uncertainty=float(prof.global_fit.uncertainties[index]),
        twice_nll_min=float(prof.global_fit.twice_nll),
        interval_68=_crossing(grid, delta, 1.0, centre),
        interval_95=_crossing(grid, delta, 3.841458820694124, centre),
    )


def profile_scan_2d(
    model: HistFactoryModel,
    pars: tuple[str | int, str | int],
    values_x: Sequence[float] | None = None,
    values_y: Sequence[float] | None = None,
    *,
    npoints: int = 15,
    data: Sequence[float] | None = None,
    init: Any = None,
    bounds: Any = None,
    fixed: Mapping[str, float | None] | Sequence[str] | None = None,
    method: str = "trust-krylov",
    global_fit: FitResult | None = None,
) -> Scan2DResult:
    """Profile scan over a grid of two parameters (for likelihood contours)."""
    ix, iy = (parameter_index(model, p) for p in pars)
    if ix == iy:
        raise BayeshfError("a 2D scan needs two different parameters.")
    prof = _Profiler(model, data, init, bounds, fixed, method, global_fit)
    gx = prof.default_range(ix, npoints) if values_x is None else np.asarray(values_x, dtype=float)
    gy = prof.default_range(iy, npoints) if values_y is None else np.asarray(values_y, dtype=float)
    delta = np.empty((len(gx), len(gy)))
    previous_row: list[np.ndarray] = []
    for i, x in enumerate(gx):
        row: list[np.ndarray] = []
        for j, y in enumerate(gy):  # serpentine warm starts: left neighbour, else the row above
            start = row[-1] if row else (previous_row[j] if previous_row else prof.global_fit.bestfit)
            result = prof.conditional([ix, iy], [x, y], start)
            row.append(result.bestfit)
            delta[i, j] = result.twice_nll
        previous_row = row
    delta -= prof.global_fit.twice_nll
    return Scan2DResult(
        par_names=(model.par_names[ix], model.par_names[iy]),
        values_x=gx,
        values_y=gy,
        delta_twice_nll=delta,
        bestfit=(float(prof.global_fit.bestfit[ix]), float(prof.global_fit.bestfit[iy])),
        twice_nll_min=float(prof.global_fit.twice_nll),
    )


@dataclasses.dataclass(frozen=True)
class MinosResult:
    """Asymmetric profile-likelihood interval of one parameter (MINOS).

    ``lower`` (negative) and ``upper`` are the distances from ``bestfit`` to
    where the profiled twice_nll rises by ``level`` (1 for 68% CL); a side
    that reaches the parameter's bound first is cut there and flagged in
    ``lower_at_bound`` / ``upper_at_bound``.
    """

    par_name: str
    bestfit: float
    lower: float
    upper: float
    lower_at_bound: bool
    upper_at_bound: bool
    level: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"bestfit": self.bestfit, "lower": self.lower, "upper": self.upper,
                "lower_at_bound": self.lower_at_bound, "upper_at_bound": self.upper_at_bound, "level": self.level}


def minos(
    model: Any,
    pars: Sequence[str | int] | None = None,
    *,
    level: float = 1.0,
    fit_result: FitResult | None = None,
    data: Sequence[float] | None = None,
    init: Any = None,
    bounds: Any = None,
    fixed: Mapping[str, float | None] | Sequence[str] | None = None,
    method: str = "trust-krylov",
    rtol: float = 1e-7,
) -> dict[str, MinosResult]:
    """MINOS errors: where the profile of each parameter crosses twice_nll_min + ``level``.

    ``pars``: names or indices (default: every free parameter). Each crossing
    is bracketed by steps of the Hessian uncertainty and solved by Brent's
    method (``scipy.optimize.brentq``) on checked conditional fits, each
    warm-started from the nearest point already profiled on its side.
    """
    import scipy.optimize

    prof = _Profiler(model, data, init, bounds, fixed, method, fit_result)
    if not prof.global_fit.success:
        raise FitFailedError("the free fit", prof.global_fit, f"{prof.global_fit.message}, edm {prof.global_fit.edm:.2g}")
    if pars is None:
        indices = [i for i in range(model.npars) if not prof.problem.fixed[i]]
    else:
        indices = [parameter_index(model, p) for p in pars]
    for i in indices:
        if prof.problem.fixed[i]:
            raise BayeshfError(f"parameter {model.par_names[i]!r} is fixed; MINOS needs a free parameter.")
    for _ in range(3):  # a profile point below the global minimum restarts with the corrected minimum
        reference = prof.global_fit
        out: dict[str, MinosResult] = {}
        for i in indices:
            centre = float(reference.bestfit[i])
            sigma = float(reference.uncertainties[i])
            low, high = prof.box[i]
            if not np.isfinite(sigma) or sigma <= 0:
                sigma = 0.1 * (high - low) if np.isfinite(high - low) else 1.0
            sides = {}
            for sign in (-1.0, 1.0):
                starts = {0.0: reference.bestfit}
                edge = (centre - low) if sign < 0 else (high - centre)

                def g(t: float) -> float:
                    nearest = starts[min(starts, key=lambda s: abs(s - t))]
                    result = prof.conditional([i], [centre + sign * t], nearest)
                    starts[t] = result.bestfit
                    return result.twice_nll - reference.twice_nll - level

                t_lo, t_hi, at_bound = 0.0, min(sigma, edge), False
                while True:
                    if t_hi <= 0.0:
                        at_bound = True
                        break
                    value = g(t_hi)
                    if value > 0:
                        break
                    if t_hi >= edge:
                        at_bound = True
                        break
                    t_lo, t_hi = t_hi, min(2.0 * t_hi, edge)
                if at_bound:
                    sides[sign] = (max(t_hi, 0.0), True)
                else:
                    root = scipy.optimize.brentq(g, t_lo, t_hi, xtol=1e-12 * max(1.0, sigma), rtol=rtol)
                    sides[sign] = (root, False)
            out[model.par_names[i]] = MinosResult(
                par_name=model.par_names[i], bestfit=centre, lower=-sides[-1.0][0], upper=sides[1.0][0],
                lower_at_bound=sides[-1.0][1], upper_at_bound=sides[1.0][1], level=level)
        if prof.global_fit is reference:
            return out
    raise FitFailedError("the free fit", prof.global_fit, "MINOS profiles keep finding lower minima")
