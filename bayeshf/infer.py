"""Frequentist inference on a compiled model: one import for the whole path.

The work is split by concept: :mod:`bayeshf.teststats` (asymptotic CLs with
q, qtilde, q0; significance), :mod:`bayeshf.limits` (upper limits by root
finding, CLs scans), :mod:`bayeshf.scans` (profile-likelihood scans) and
:mod:`bayeshf.impacts` (pulls, impacts, ranking, grouped impacts).

>>> import bayeshf, bayeshf.infer                     # doctest: +SKIP
>>> model = bayeshf.load("workspace.json")            # doctest: +SKIP
>>> bayeshf.infer.hypotest(model, 1.0).CLs_obs        # doctest: +SKIP
>>> bayeshf.infer.upper_limit(model).to_dict()        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bayeshf.fit import FitFailedError, FitResult, fit
from bayeshf.impacts import GroupedImpactsResult, ImpactsResult, grouped_impacts, impacts, prefit_constraints, ranking
from bayeshf.problem import FitProblem
from bayeshf.limits import CLsScanResult, UpperLimitResult, cls_scan, upper_limit
from bayeshf.scans import MinosResult, Scan2DResult, ScanResult, minos, profile_scan, profile_scan_2d
from bayeshf.yields import YieldsResult, posterior_yields, yields
from bayeshf.teststats import (
    TEST_STATISTICS,
    AsymptoticCalculator,
    HypoTestResult,
    SignificanceResult,
    significance,
)
from bayeshf.teststats import hypotest as _asymptotic_hypotest
from bayeshf.grid import GridPoint, GridResult, credible_limit_grid, hypotest_grid, upper_limit_grid
from bayeshf.toys import ToyHypoTestResult

if TYPE_CHECKING:  # annotations only
    from bayeshf.model import HistFactoryModel

__all__ = [
    "TEST_STATISTICS", "AsymptoticCalculator", "CLsScanResult", "FitFailedError", "FitProblem", "FitResult",
    "GroupedImpactsResult", "MinosResult", "minos",
    "HypoTestResult", "ImpactsResult", "Scan2DResult", "ScanResult", "SignificanceResult", "UpperLimitResult",
    "cls_scan", "fit", "grouped_impacts", "hypotest", "impacts", "prefit_constraints", "profile_scan",
    "profile_scan_2d", "ranking", "significance", "upper_limit", "YieldsResult", "posterior_yields", "yields",
    "GridPoint", "GridResult", "hypotest_grid", "upper_limit_grid", "credible_limit_grid", "ToyHypoTestResult",
]


def hypotest(model: HistFactoryModel, poi_value: float, *, test_stat: str = "qtilde", calctype: str = "asymptotics",
             **kwargs: Any) -> HypoTestResult | ToyHypoTestResult:
    """CLs test of ``poi_value``, like ``pyhf.infer.hypotest``: ``calctype`` "asymptotics" or "toybased".

    Asymptotics: :func:`bayeshf.teststats.hypotest` (``kwargs``: data, init,
    bounds, fixed, method). Toys: :func:`bayeshf.toys.hypotest` (``kwargs``:
    ntoys, seed, data, progress), a :class:`~bayeshf.toys.ToyHypoTestResult`.
    """
    if calctype == "toybased":
        from bayeshf.toys import hypotest as toy_hypotest

        return toy_hypotest(model, poi_value, test_stat=test_stat, **kwargs)
    if calctype != "asymptotics":
        from bayeshf.errors import BayeshfError

        raise BayeshfError(f"unknown calctype {calctype!r}; choose asymptotics or toybased.")
    return _asymptotic_hypotest(model, poi_value, test_stat=test_stat, **kwargs)
