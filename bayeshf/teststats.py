"""Asymptotic hypothesis tests with the profile-likelihood test statistics q, q~ and q0.

Formulas from Cowan, Cranmer, Gross, Vitells, Eur. Phys. J. C 71 (2011) 1554
(arXiv:1007.1727), in the conventions of pyhf's ``AsymptoticCalculator``
(``calctype="asymptotics"``, ``calc_base_dist="normal"``): the Asimov data set
is built from the conditional fit to the observed data at mu' = 0 (mu' = 1 for
q0), and the expected band is read at the background-only distribution's
quantiles n = 2, 1, 0, -1, -2.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy.special import ndtr

from bayeshf.errors import BayeshfError
from bayeshf.fit import FitResult, _tolerance, compiled_functions, global_fit, may_have_several_valleys
from bayeshf.problem import FitProblem
from bayeshf._display import display

if TYPE_CHECKING:  # annotations only: no import cycle at run time
    from bayeshf.model import HistFactoryModel

__all__ = ["TEST_STATISTICS", "AsymptoticCalculator", "HypoTestResult", "SignificanceResult",
           "hypotest", "significance"]

TEST_STATISTICS = ("qtilde", "q", "q0")
#: quantiles of the background-only distribution for the expected band, in pyhf's order
BAND_SIGMAS = (2.0, 1.0, 0.0, -1.0, -2.0)


@dataclasses.dataclass(frozen=True)
class CLsValues:
    """CLs and tail probabilities at one POI value, whatever computed them (asymptotics or toys).

    ``CLs_exp`` (and ``CLsb_exp``, ``CLb_exp``) hold five values at the
    background-only quantiles +2, +1, 0, -1, -2 sigma of the test statistic,
    pyhf's order (so ``CLs_exp[2]`` is the median); ``q_obs`` is the test
    statistic on the observed data.
    """

    poi_value: float
    test_stat: str
    CLs_obs: float
    CLsb_obs: float
    CLb_obs: float
    CLs_exp: tuple[float, ...]
    CLsb_exp: tuple[float, ...]
    CLb_exp: tuple[float, ...]
    q_obs: float

    def to_dict(self) -> dict[str, Any]:
        """pyhf-shaped summary: ``{"CLs_obs": x, "CLs_exp": [5 values]}`` plus tail probabilities."""
        return {
            "poi_value": self.poi_value,
            "test_stat": self.test_stat,
            "CLs_obs": self.CLs_obs,
            "CLs_exp": list(self.CLs_exp),
            "CLsb_obs": self.CLsb_obs,
            "CLb_obs": self.CLb_obs,
        }


@display()
@dataclasses.dataclass(frozen=True)
class HypoTestResult(CLsValues):
    """Asymptotic CLs at one POI value (:class:`CLsValues`); ``q_asimov`` is the test statistic on the Asimov data."""

    q_asimov: float


@display()
@dataclasses.dataclass(frozen=True)
class SignificanceResult:
    """Discovery test (q0): observed and expected p0 and significance Z = Phi^-1(1 - p0).

    The expected values are for the signal at mu = 1 (the Asimov data set of
    the q0 test), band order +2 ... -2 sigma as :class:`HypoTestResult`.
    """

    p0_obs: float
    Z_obs: float
    p0_exp: tuple[float, ...]
    Z_exp: tuple[float, ...]
    q0_obs: float
    q0_asimov: float

    def to_dict(self) -> dict[str, Any]:
        return {"p0_obs": self.p0_obs, "Z_obs": self.Z_obs, "p0_exp": list(self.p0_exp),
                "Z_exp": list(self.Z_exp), "q0_obs": self.q0_obs, "q0_asimov": self.q0_asimov}


class AsymptoticCalculator:
    """Runs and caches the fits behind asymptotic tests of one model and data set.

    The unconditional fits (to the observed and to the Asimov data) and the
    Asimov data set are computed once; conditional fits at each POI value are
    cached and warm-started from the nearest POI value already fitted. All
    fits share the model's compiled functions (the POI travels as a traced
    fixed value), so scanning or root finding never recompiles.
    """

    def __init__(
        self,
        model: Any,
        *,
        test_stat: str = "qtilde",
        data: Sequence[float] | None = None,
        init: Sequence[float] | Mapping[str, float] | None = None,
        bounds: np.ndarray | Mapping[str, Sequence[float]] | None = None,
        fixed: Mapping[str, float | None] | Sequence[str] | np.ndarray | None = None,
        method: str = "trust-krylov",
    ) -> None:
        if test_stat not in TEST_STATISTICS:
            raise BayeshfError(f"unknown test statistic {test_stat!r}; choose one of {', '.join(TEST_STATISTICS)}.")
        if getattr(model, "poi_index", None) is None:
            raise BayeshfError(f"{getattr(model, 'label', 'the model')}: the model has no parameter of interest; "
                               "choose one with --poi NAME (poi_name=...).")
        self.model = model
        self.test_stat = test_stat
        self.method = method
        self.poi_index = int(model.poi_index)
        self.problem = FitProblem.resolve(model, init=init, fixed=fixed, bounds=bounds, data=data)
        if self.problem.fixed[self.poi_index]:
            raise BayeshfError(f"the parameter of interest {model.poi_name!r} is fixed; it must be free for a test.")
        self._problems = {"observed": self.problem}
        self._free: dict[str, FitResult] = {}
        self._several_valleys = may_have_several_valleys(model)
        self._conditional: dict[str, dict[float, FitResult]] = {"observed": {}, "asimov": {}}
        self._free["observed"] = global_fit(self.problem, method=method, what="the free fit")
        asimov_mu = 1.0 if test_stat == "q0" else 0.0
        self.asimov_poi = asimov_mu
        self.asimov_fit = self.conditional_fit(asimov_mu, "observed")
        self.asimov_data = np.asarray(compiled_functions(model).asimov_data(self.asimov_fit.bestfit), dtype=float)
        self._problems["asimov"] = self.problem.with_data(self.asimov_data)
        self._free["asimov"] = global_fit(self._problems["asimov"], (self.asimov_fit.bestfit,), method=method,
                                          what="the free fit to the Asimov data")

    # -- resolved settings, kept as attributes for callers of earlier versions ------------------
    @property
    def init(self) -> np.ndarray:
        return self.problem.init

    @property
    def mask(self) -> np.ndarray:
        return self.problem.fixed

    @property
    def fixed_values(self) -> np.ndarray:
        return self.problem.values

    @property
    def box(self) -> np.ndarray:
        return self.problem.bounds

    @property
    def data(self) -> np.ndarray:
        return self.problem.data

    @property
    def free_fit(self) -> FitResult:
        """Unconditional fit to the observed data."""
        return self._free["observed"]

    @property
    def free_fit_asimov(self) -> FitResult:
        """Unconditional fit to the Asimov data."""
        return self._free["asimov"]

    # -- fits -------------------------------------------------------------------------------
    def conditional_fit(self, poi_value: float, which: str = "observed") -> FitResult:
        """Checked fit with the POI fixed at ``poi_value`` to the ``observed`` or ``asimov`` data (cached).

        Started from the fit at the nearest POI value already known (the free
        fit counts as the fit at mu_hat), then from the free fit and the
        inits (:func:`bayeshf.fit.global_fit`). A conditional minimum below
        the free one proves the free fit missed the global minimum: the free
        fit is redone from there. Raises :class:`~bayeshf.fit.FitFailedError`
        when no start converges.
        """
        poi_value = float(poi_value)
        cache = self._conditional[which]
        if poi_value in cache:
            return cache[poi_value]
        free = self._free[which]
        known = {**cache, float(free.bestfit[self.poi_index]): free}
        nearest = known[min(known, key=lambda v: abs(v - poi_value))]
        problem = self._problems[which].fixing(self.poi_index, poi_value)
        data_name = "the Asimov data" if which == "asimov" else "the data"
        # the Asimov data's generating point is a start too; with several valleys possible, every start is fitted
        starts = (nearest.bestfit, free.bestfit) + ((self.asimov_fit.bestfit,) if which == "asimov" else ())
        result = global_fit(problem, starts, method=self.method, final_hessian=False, reference=free,
                            explore=self._several_valleys,
                            what=f"the fit to {data_name} with {self.model.poi_name} fixed at {poi_value:g}")
        if result.twice_nll < free.twice_nll - _tolerance(free.twice_nll):
            self._free[which] = global_fit(self._problems[which], (result.bestfit, free.bestfit), method=self.method,
                                           what=f"the free fit to {data_name}")
        cache[poi_value] = result
        return result

    def fitted_poi_values(self, which: str = "observed") -> list[float]:
        """POI values with a cached conditional fit (for root finding that reuses them)."""
        return sorted(self._conditional[which])

    # -- test statistics ------------------------------------------------------------------
    def statistic(self, poi_value: float, which: str = "observed") -> float:
        """The test statistic (q, q~ or q0, before the asymptotic shift) on the ``observed`` or ``asimov`` data."""
        conditional = self.conditional_fit(poi_value, which)
        free = self._free[which]
        muhat = free.bestfit[self.poi_index]
        # the same minimisation problem when the free fit ends exactly on the tested value
        t = 0.0 if muhat == poi_value else max(conditional.twice_nll - free.twice_nll, 0.0)
        if self.test_stat == "q0":
            return 0.0 if muhat < 0 else t
        return 0.0 if muhat > poi_value else t

    def teststatistic(self, poi_value: float) -> tuple[float, float, float]:
        """(shifted statistic compared with the distributions, q_obs, q_asimov) at ``poi_value``."""
        if self.test_stat == "q0" and poi_value != 0.0:
            raise BayeshfError("the q0 test statistic tests the background-only hypothesis: use poi_value 0.")
        q = self.statistic(poi_value, "observed")
        q_asimov = self.statistic(poi_value, "asimov")
        sqrt_q, sqrt_qa = np.sqrt(q), np.sqrt(q_asimov)
        if self.test_stat in ("q", "q0") or sqrt_q <= sqrt_qa:
            shifted = sqrt_q - sqrt_qa
        else:  # q~ beyond the kink, Cowan et al. (2011) eq. (66)
            shifted = (q - q_asimov) / (2.0 * sqrt_qa)
        return float(shifted), float(q), float(q_asimov)

    def hypotest(self, poi_value: float) -> HypoTestResult:
        """CLs, CLs+b, CLb (observed and the expected band) at ``poi_value``."""
        shifted, q, q_asimov = self.teststatistic(poi_value)
        sqrt_qa = np.sqrt(q_asimov)
        clsb, clb = _tails(shifted, sqrt_qa)
        band = [_tails(n, sqrt_qa) for n in BAND_SIGMAS]
        return HypoTestResult(
            poi_value=float(poi_value),
            test_stat=self.test_stat,
            CLs_obs=clsb / clb,
            CLsb_obs=clsb,
            CLb_obs=clb,
            CLs_exp=tuple(sb / b for sb, b in band),
            CLsb_exp=tuple(sb for sb, _ in band),
            CLb_exp=tuple(b for _, b in band),
            q_obs=q,
            q_asimov=q_asimov,
        )

    def expected_cls(self, poi_value: float) -> np.ndarray:
        """The five expected CLs values at ``poi_value`` (Asimov fits only)."""
        sqrt_qa = np.sqrt(self.statistic(poi_value, "asimov"))
        return np.array([sb / b for sb, b in (_tails(n, sqrt_qa) for n in BAND_SIGMAS)])


def _tails(shifted: float, sqrt_q_asimov: float) -> tuple[float, float]:
    """(CLs+b, CLb): right tails of the s+b (mean -sqrt(q_A)) and b-only (mean 0) normals."""
    return float(ndtr(-(shifted + sqrt_q_asimov))), float(ndtr(-shifted))


def hypotest(model: HistFactoryModel, poi_value: float, *, test_stat: str = "qtilde", **kwargs: Any) -> HypoTestResult:
    """Asymptotic CLs test of ``poi_value`` (like ``pyhf.infer.hypotest`` with asymptotics).

    ``kwargs``: ``data``, ``init``, ``bounds``, ``fixed``, ``method`` as :class:`AsymptoticCalculator`.
    """
    return AsymptoticCalculator(model, test_stat=test_stat, **kwargs).hypotest(poi_value)


def significance(model: HistFactoryModel, **kwargs: Any) -> SignificanceResult:
    """Discovery significance from q0 (background-only hypothesis mu = 0 against mu > 0)."""
    calc = AsymptoticCalculator(model, test_stat="q0", **kwargs)
    result = calc.hypotest(0.0)
    p0_exp = result.CLsb_exp
    return SignificanceResult(
        p0_obs=result.CLsb_obs,
        # -ndtri(p0) written in q0 (p0 = ndtr(-sqrt(q0))): finite where p0 underflows to 0
        Z_obs=float(np.sqrt(result.q_obs)),
        p0_exp=p0_exp,
        Z_exp=tuple(float(n + np.sqrt(result.q_asimov)) for n in BAND_SIGMAS),
        q0_obs=result.q_obs,
        q0_asimov=result.q_asimov,
    )
