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

from bayeshf.fit import FitResult, fit
from bayeshf.impacts import GroupedImpactsResult, ImpactsResult, grouped_impacts, impacts, prefit_constraints, ranking
from bayeshf.limits import CLsScanResult, UpperLimitResult, cls_scan, upper_limit
from bayeshf.scans import Scan2DResult, ScanResult, profile_scan, profile_scan_2d
from bayeshf.yields import YieldsResult, posterior_yields, yields
from bayeshf.teststats import (
    TEST_STATISTICS,
    AsymptoticCalculator,
    HypoTestResult,
    SignificanceResult,
    hypotest,
    significance,
)

__all__ = [
    "TEST_STATISTICS", "AsymptoticCalculator", "CLsScanResult", "FitResult", "GroupedImpactsResult",
    "HypoTestResult", "ImpactsResult", "Scan2DResult", "ScanResult", "SignificanceResult", "UpperLimitResult",
    "cls_scan", "fit", "grouped_impacts", "hypotest", "impacts", "prefit_constraints", "profile_scan",
    "profile_scan_2d", "ranking", "significance", "upper_limit", "YieldsResult", "posterior_yields", "yields",
]
