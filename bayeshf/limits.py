"""CLs upper limits on the POI by root finding, and CLs-versus-POI scans (Brazil band).

Like ``pyhf.infer.intervals.upper_limits.upper_limit`` without a scan: the
observed limit solves CLs_obs(mu) = level, the expected ones CLs_exp,k(mu) =
level for the five band quantiles, each by Brent's method on a bracket seeded
from the Asimov width sigma_A (Cowan et al. 2011, eq. (31): q_mu,A ~ (mu/sigma_A)^2).
All fits run through one cached :class:`~bayeshf.teststats.AsymptoticCalculator`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from bayeshf.errors import BayeshfError
from bayeshf.teststats import BAND_SIGMAS, AsymptoticCalculator

__all__ = ["UpperLimitResult", "CLsScanResult", "upper_limit", "cls_scan"]


@dataclasses.dataclass(frozen=True)
class CLsScanResult:
    """CLs at each POI value: ``CLs_obs`` (n,), ``CLs_exp`` (n, 5) in pyhf's band order."""

    poi_values: np.ndarray
    CLs_obs: np.ndarray
    CLs_exp: np.ndarray
    test_stat: str
    level: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {"poi_values": self.poi_values.tolist(), "CLs_obs": self.CLs_obs.tolist(),
                "CLs_exp": self.CLs_exp.tolist(), "test_stat": self.test_stat, "level": self.level}


@dataclasses.dataclass(frozen=True)
class UpperLimitResult:
    """Upper limits on the POI at CLs = ``level``.

    ``exp`` holds five limits in pyhf's order (-2, -1, 0, +1, +2 sigma: from
    the smallest to the largest). ``scan`` has every POI value the root
    finding evaluated, for plotting.
    """

    obs: float
    exp: tuple[float, ...]
    level: float
    test_stat: str
    scan: CLsScanResult

    def to_dict(self) -> dict[str, Any]:
        """pyhf-shaped summary ``{"obs": x, "exp": [5 values]}``."""
        return {"obs": self.obs, "exp": list(self.exp)}


def cls_scan(model_or_calculator: Any, poi_values: Sequence[float], *, test_stat: str = "qtilde",
             level: float = 0.05, **kwargs: Any) -> CLsScanResult:
    """Observed and expected CLs at each of ``poi_values``."""
    calc = _calculator(model_or_calculator, test_stat, kwargs)
    values = np.asarray(poi_values, dtype=float)
    results = [calc.hypotest(v) for v in values]
    return CLsScanResult(values, np.array([r.CLs_obs for r in results]),
                         np.array([r.CLs_exp for r in results]), calc.test_stat, level)


def upper_limit(model_or_calculator: Any, *, level: float = 0.05, test_stat: str = "qtilde",
                xtol: float = 1e-12, rtol: float = 1e-10, **kwargs: Any) -> UpperLimitResult:
    """Observed and expected upper limits at CLs = ``level`` (95% CL for 0.05) by root finding.

    ``model_or_calculator``: a model (then ``kwargs`` go to the calculator:
    ``data``, ``init``, ``bounds``, ``fixed``, ``method``) or an
    :class:`~bayeshf.teststats.AsymptoticCalculator` to reuse its fits.
    """
    if not 0.0 < level < 1.0:
        raise BayeshfError(f"the CLs level must lie in (0, 1), got {level}.")
    calc = _calculator(model_or_calculator, test_stat, kwargs)
    if calc.test_stat == "q0":
        raise BayeshfError("upper limits need the q or qtilde test statistic, not q0.")
    poi_lo, poi_hi = calc.box[calc.poi_index]
    floor = max(poi_lo, 0.0)
    sigma_a = _asimov_width(calc, floor, poi_hi)
    asimov_cache = calc._conditional["asimov"]
    observed_cache = calc._conditional["observed"]

    # Solve on near-linear scales: sqrt(q_A) for the band, the probit of CLs for the observed.
    # sqrt(q_A) at which an expected CLs equals the level: Phi(-(n + s)) / Phi(-n) = level
    targets = [float(-ndtri(level * ndtr(-n)) - n) for n in BAND_SIGMAS]

    def expected(k: int) -> Callable[[float], float]:
        return lambda mu: float(np.sqrt(calc._statistic(mu, "asimov"))) - targets[k]

    def observed(mu: float) -> float:
        return float(ndtri(level) - ndtri(max(calc.hypotest(mu).CLs_obs, 1e-300)))

    exp = [0.0] * 5
    for k in (2, 1, 3, 0, 4):
        exp[k] = _root(expected(k), asimov_cache, floor + targets[k] * sigma_a, floor, xtol, rtol)
    muhat = max(float(calc.free_fit.bestfit[calc.poi_index]), floor)
    obs = _root(observed, observed_cache, muhat + targets[2] * sigma_a, floor, xtol, rtol)
    values = np.array(sorted(v for v in observed_cache if v > floor))
    scan = cls_scan(calc, values, level=level)
    return UpperLimitResult(obs=obs, exp=tuple(exp), level=level, test_stat=calc.test_stat, scan=scan)


def _calculator(model_or_calculator: Any, test_stat: str, kwargs: dict[str, Any]) -> AsymptoticCalculator:
    if isinstance(model_or_calculator, AsymptoticCalculator):
        return model_or_calculator
    return AsymptoticCalculator(model_or_calculator, test_stat=test_stat, **kwargs)


def _asimov_width(calc: AsymptoticCalculator, floor: float, poi_hi: float) -> float:
    """sigma_A from one Asimov fit: q_mu,A = ((mu - mu') / sigma_A)^2 with mu' = 0."""
    guess = calc.free_fit.uncertainties[calc.poi_index]
    mu = floor + (guess if np.isfinite(guess) and guess > 0 else 0.1 * (poi_hi - floor))
    for _ in range(60):
        q_a = calc._statistic(mu, "asimov")
        if q_a > 1e-6:
            return (mu - floor) / np.sqrt(q_a)
        mu = floor + 2.0 * (mu - floor)
    raise BayeshfError("the Asimov test statistic stays zero: the signal has no effect on the expected counts.")


def _root(g: Callable[[float], float], cached: dict[float, Any], seed: float, floor: float,
          xtol: float, rtol: float, maxiter: int = 60) -> float:
    """Root of the increasing function ``g`` above ``floor`` by safeguarded secant steps.

    Points already in ``cached`` (POI values with fits) cost nothing and seed
    the search; steps stay inside the tightest bracket once one is known and
    fall back to bisection there, so convergence is guaranteed once bracketed.
    """
    points: dict[float, float] = {x: g(x) for x in cached if x > floor}
    if not points:
        points[seed] = g(seed)
    for _ in range(maxiter):
        xs = np.array(sorted(points))
        gs = np.array([points[x] for x in xs])
        if np.any(gs == 0.0):
            return float(xs[np.flatnonzero(gs == 0.0)[0]])
        below, above = xs[gs < 0], xs[gs > 0]
        low = below.max() if below.size else None
        high = above.min() if above.size else None
        best = xs[np.argsort(np.abs(gs))[:2]]
        if len(best) == 2 and points[best[0]] != points[best[1]]:
            a, b = best
            candidate = a - points[a] * (b - a) / (points[b] - points[a])
        else:  # one point: step 5% of the distance to the floor in the downhill direction
            a = best[0]
            candidate = a - np.sign(points[a]) * 0.05 * max(a - floor, 1e-6)
        if low is not None and high is not None:
            width = high - low
            if width <= xtol + rtol * abs(high):
                g_low, g_high = points[low], points[high]
                return float(low - g_low * width / (g_high - g_low))
            if not low < candidate < high:
                candidate = 0.5 * (low + high)
            # keep steps away from the ends so the bracket always shrinks
            margin = 0.25 * (xtol + rtol * abs(candidate))
            candidate = min(max(candidate, low + margin), high - margin)
        elif low is None and candidate <= floor:
            candidate = floor + 0.5 * (min(xs) - floor)
        elif high is None and candidate <= (low if low is not None else floor):
            candidate = 2.0 * max(xs) - floor
        if candidate in points:
            candidate = np.nextafter(candidate, np.inf)
        points[float(candidate)] = g(float(candidate))
        if abs(points[float(candidate)]) < 1e-13 and low is not None and high is not None:
            return float(candidate)
    raise BayeshfError("the CLs upper limit did not converge: CLs does not cross the level smoothly.")
