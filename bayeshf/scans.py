"""Profile-likelihood scans of one parameter (the POI by default) and of two (contours).

At each point the scanned parameters are fixed and the others profiled; the
result is Delta(twice_nll) = -2 ln lambda against the global minimum (not
clipped). Each conditional fit starts from the neighbouring point's solution
and reuses the model's compiled functions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.fit import FitResult, _index_of, _resolve_bounds, _resolve_fixed, _vector, default_data, minimize

__all__ = ["ScanResult", "Scan2DResult", "profile_scan", "profile_scan_2d"]


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
    """Resolved fit settings plus the global fit, for many conditional fits."""

    def __init__(self, model: Any, data: Any, init: Any, bounds: Any, fixed: Any, method: str,
                 global_fit: FitResult | None) -> None:
        self.model = model
        self.method = method
        self.init = _vector(model, init, np.asarray(model.init, float), "init")
        self.mask, self.values = _resolve_fixed(model, fixed, self.init)
        self.box = _resolve_bounds(model, bounds)
        self.data = default_data(model) if data is None else np.asarray(data, dtype=float)
        self.global_fit = global_fit or minimize(model, self.init, self.mask, self.values, self.box, self.data,
                                                 method=method)

    def conditional(self, indices: Sequence[int], point: Sequence[float], start: np.ndarray) -> FitResult:
        mask, values = self.mask.copy(), self.values.copy()
        start = start.copy()
        for i, v in zip(indices, point):
            mask[i], values[i], start[i] = True, v, v
        return minimize(self.model, start, mask, values, self.box, self.data, method=self.method,
                        final_hessian=False)

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
    model: Any,
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
            raise BayeshfError("the model has no parameter of interest; name the parameter to scan.")
        par = int(model.poi_index)
    index = _index_of(model, par)
    prof = _Profiler(model, data, init, bounds, fixed, method, global_fit)
    if prof.mask[index]:
        raise BayeshfError(f"parameter {model.par_names[index]!r} is fixed and cannot be scanned.")
    grid = prof.default_range(index, npoints) if values is None else np.asarray(values, dtype=float)
    delta = np.empty(len(grid))
    centre = prof.global_fit.bestfit[index]
    # walk outwards from the best fit so each fit starts next to its neighbour's solution
    order = np.argsort(np.abs(grid - centre))
    starts: dict[int, np.ndarray] = {}
    for k in order:
        neighbours = [j for j in starts if abs(j - k) == 1]
        start = starts[neighbours[0]] if neighbours else prof.global_fit.bestfit
        result = prof.conditional([index], [grid[k]], start)
        starts[int(k)] = result.bestfit
        delta[k] = result.twice_nll - prof.global_fit.twice_nll
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
    model: Any,
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
    ix, iy = (_index_of(model, p) for p in pars)
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
            delta[i, j] = result.twice_nll - prof.global_fit.twice_nll
        previous_row = row
    return Scan2DResult(
        par_names=(model.par_names[ix], model.par_names[iy]),
        values_x=gx,
        values_y=gy,
        delta_twice_nll=delta,
        bestfit=(float(prof.global_fit.bestfit[ix]), float(prof.global_fit.bestfit[iy])),
        twice_nll_min=float(prof.global_fit.twice_nll),
    )
