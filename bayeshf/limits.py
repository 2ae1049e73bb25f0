"""CLs upper limits on the POI by root finding, and CLs-versus-POI scans (Brazil band).

Like ``pyhf.infer.intervals.upper_limits.upper_limit`` without a scan: the
observed limit solves CLs_obs(mu) = level, the expected ones CLs_exp,k(mu) =
level for the five band quantiles, each by SciPy's TOMS 748 (as pyhf's
``toms748_scan``) on a bracket seeded from the Asimov width sigma_A (Cowan et
al. 2011, eq. (31): q_mu,A ~ (mu/sigma_A)^2) and tightened with the POI
values already fitted. All fits run through one cached
:class:`~bayeshf.teststats.AsymptoticCalculator`, whose fits are checked: a
failing fit raises :class:`~bayeshf.fit.FitFailedError` instead of a limit.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import scipy.optimize
from scipy.special import ndtr, ndtri

from bayeshf.errors import BayeshfError
from bayeshf.teststats import BAND_SIGMAS, AsymptoticCalculator
from bayeshf._display import display

if TYPE_CHECKING:  # annotations only: no import cycle at run time
    from bayeshf.model import HistFactoryModel

__all__ = ["UpperLimitResult", "CLsScanResult", "upper_limit", "cls_scan"]


@display()
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


@display()
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


def cls_scan(model_or_calculator: HistFactoryModel | AsymptoticCalculator, poi_values: Sequence[float], *,
             test_stat: str = "qtilde", level: float = 0.05, **kwargs: Any) -> CLsScanResult:
    """Observed and expected CLs at each of ``poi_values``."""
    calc = _calculator(model_or_calculator, test_stat, kwargs)
    values = np.asarray(poi_values, dtype=float)
    results = [calc.hypotest(v) for v in values]
    return CLsScanResult(values, np.array([r.CLs_obs for r in results]),
                         np.array([r.CLs_exp for r in results]), calc.test_stat, level)


def upper_limit(model_or_calculator: HistFactoryModel | AsymptoticCalculator, *, level: float = 0.05,
                test_stat: str = "qtilde", xtol: float = 1e-12, rtol: float = 1e-10, expected: bool = True,
                **kwargs: Any) -> UpperLimitResult:
    """Observed and expected upper limits at CLs = ``level`` (95% CL for 0.05) by root finding.

    ``expected=False`` skips the five expected limits (NaN in the result).

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

    # Solve on near-linear scales: sqrt(q_A) for the band, the probit of CLs for the observed.
    # sqrt(q_A) at which an expected CLs equals the level: Phi(-(n + s)) / Phi(-n) = level
    targets = [float(-ndtri(level * ndtr(-n)) - n) for n in BAND_SIGMAS]

    def expected(k: int) -> Callable[[float], float]:
        return lambda mu: float(np.sqrt(calc.statistic(mu, "asimov"))) - targets[k]

    def observed(mu: float) -> float:
        cls = min(max(calc.hypotest(mu).CLs_obs, 1e-300), 1.0 - 1e-16)
        return float(ndtri(level) - ndtri(cls))

    exp = [float("nan")] * 5
    for k in (2, 1, 3, 0, 4) if expected else ():
        exp[k] = _root(expected(k), calc.fitted_poi_values("asimov"), floor + targets[k] * sigma_a, floor,
                       poi_hi, xtol, rtol)
    muhat = max(float(calc.free_fit.bestfit[calc.poi_index]), floor)
    obs = _root(observed, calc.fitted_poi_values("observed"), muhat + targets[2] * sigma_a, floor, poi_hi,
                xtol, rtol)
    values = np.array([v for v in calc.fitted_poi_values("observed") if v > floor])
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
        q_a = calc.statistic(mu, "asimov")
        if q_a > 1e-6:
            return (mu - floor) / np.sqrt(q_a)
        mu = floor + 2.0 * (mu - floor)
    raise BayeshfError("the Asimov test statistic stays zero: the signal has no effect on the expected counts.")


def _root(g: Callable[[float], float], known: Sequence[float], seed: float, floor: float, ceiling: float,
          xtol: float, rtol: float) -> float:
    """Root of the increasing function ``g`` in (floor, ceiling] by TOMS 748 on a bracket.

    POI values already fitted (``known``) cost nothing and tighten the
    bracket; otherwise it grows from ``seed`` (x1.5 the distance to the
    floor upwards, halving it downwards) until ``g`` changes sign.
    """
    points = {x: g(x) for x in known if floor < x <= ceiling}
    if not points:
        seed = min(max(seed, floor + 1e-9 * max(1.0, abs(floor))), ceiling)
        points[seed] = g(seed)
    bracket = None
    for _ in range(80):
        xs = sorted(points)
        for x in xs:
            if points[x] == 0.0:
                return float(x)
        pairs = [(lo, hi) for lo, hi in zip(xs, xs[1:]) if points[lo] < 0 < points[hi]]
        if pairs:
            bracket = pairs[0]  # the lowest crossing
            break
        if points[xs[-1]] < 0:  # everything below the level: grow upwards
            if xs[-1] >= ceiling:
                raise BayeshfError(f"CLs stays above the level up to the POI's upper bound {ceiling:g}; "
                                   "widen the POI bounds to find the limit.")
            x = min(floor + 1.5 * (xs[-1] - floor), ceiling)
        else:  # the lowest point is already beyond the root: shrink towards the floor
            x = floor + 0.5 * (xs[0] - floor)
            if x - floor <= 1e-12 * max(1.0, abs(floor)):
                return float(floor)
        points[x] = g(x)
    if bracket is None:
        raise BayeshfError("the CLs upper limit did not converge: CLs does not cross the level.")
    low, high = bracket
    cached = dict(points)

    def f(x: float) -> float:
        return cached[x] if x in cached else g(x)

    return float(scipy.optimize.toms748(f, low, high, xtol=xtol, rtol=max(rtol, 4 * np.finfo(float).eps)))
