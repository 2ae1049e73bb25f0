"""Conditional fits far from the best fit (the ATLAS ttbar cross-section at zero) reach the lowest minimum.

The oracle is an independent minimiser: bayeshf.diff's damped-Newton fit, whose path differs from
the trust region's, started from the model's inits; pyhf's MINUIT reaches the same minimum
(twice_nll 98595.456, see docs/frequentist.md).
"""
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtri

import importlib

from bayeshf import diff, infer, load
from bayeshf.newton import leave_saddles

fit_module = importlib.import_module("bayeshf.fit")

TTBAR = Path(__file__).parent / "data" / "atlas-examples" / "ttbar_ljets_xsec_inclusive_pruned.json"


@pytest.fixture(scope="module")
def ttbar():
    return load(TTBAR)


def test_discovery_fit_at_zero_is_not_in_a_side_valley(ttbar):
    result = infer.significance(ttbar)
    free = infer.fit(ttbar)
    setup = diff._Setup(ttbar)
    _, start, ok = setup.fit(ttbar, (ttbar.arrays.observed, ttbar.arrays.auxdata), 0.0)
    assert bool(ok)
    oracle = infer.fit(ttbar, fixed={ttbar.poi_name: 0.0}, init=np.asarray(start)).twice_nll
    # our conditional fit is at most round-off above the independent minimiser's
    assert free.twice_nll + result.q0_obs <= oracle + 1e-8 * oracle
    # far beyond where p0 underflows, Z is still sqrt(q0), finite
    assert result.p0_obs == 0.0
    assert result.Z_obs == pytest.approx(np.sqrt(result.q0_obs), rel=1e-12)
    assert all(np.isfinite(result.Z_exp))


def test_plain_fixed_fit_far_from_the_best_fit_reaches_the_lowest_minimum(ttbar):
    """`bayeshf fit --fix ttbarXsec=0` has no free fit to compare with unless fit() makes one: it once
    stopped at a saddle point (98965) and, past it, in a side valley on the bounds (98730)."""
    setup = diff._Setup(ttbar)
    _, start, ok = setup.fit(ttbar, (ttbar.arrays.observed, ttbar.arrays.auxdata), 0.0)
    assert bool(ok)
    oracle = infer.fit(ttbar, fixed={ttbar.poi_name: 0.0}, init=np.asarray(start)).twice_nll
    plain = infer.fit(ttbar, fixed={ttbar.poi_name: 0.0})
    assert plain.success
    assert plain.twice_nll <= oracle + 1e-8 * oracle


class _Saddle:
    """f(x, y) = x^2 - y^2 + y^4 (twice_nll stand-in): a saddle at 0, minima at y = +-1/sqrt(2), f = -1/4."""

    def value_and_grad(self, p, data):
        x, y = p
        return x * x - y * y + y ** 4, np.array([2 * x, -2 * y + 4 * y ** 3])

    def hessian(self, p, data):
        return np.diag([2.0, -2.0 + 12.0 * p[1] ** 2])


@pytest.mark.parametrize("final_hessian", [True, False])
def test_a_zero_gradient_with_negative_curvature_is_left(final_hessian):
    fns, mask = _Saddle(), np.zeros(2, bool)
    lo, hi = np.full(2, -5.0), np.full(2, 5.0)
    start = fit_module._polish(fns, np.zeros(2), None, mask, lo, hi, final_hessian=final_hessian)
    assert start[1] == 0.0  # the polish alone stays on the saddle: its gradient vanishes there
    (x, value, grad, hess, _, _), saddle = leave_saddles(lambda p: fns.value_and_grad(p, None),
                                                         lambda p: fns.hessian(p, None), start, mask, lo, hi,
                                                         final_hessian, 200)
    assert not saddle
    assert value == pytest.approx(-0.25, abs=1e-12)
    assert abs(x[1]) == pytest.approx(np.sqrt(0.5), abs=1e-8)
    assert np.all(np.linalg.eigvalsh(hess) > 0)


def test_significance_z_equals_the_normal_quantile_of_p0():
    model = load(Path(__file__).parent / "data" / "thesis" / "2_bin_corr.json")
    result = infer.significance(model)
    assert 0.0 < result.p0_obs < 0.5
    assert result.Z_obs == pytest.approx(-ndtri(result.p0_obs), rel=1e-9)
    for p, z in zip(result.p0_exp, result.Z_exp):
        assert z == pytest.approx(-ndtri(p), rel=1e-9, abs=1e-12)


def test_asimov_fit_far_from_its_data_converges_on_a_perturbed_workspace(ttbar):
    """ttbar with its signal shifted by 1% of the bins' Poisson errors: the Asimov fit at mu = 1 (q_A in the
    thousands) once failed from every start (the last-resort descent ran only from the lowest failed point)."""
    y0 = np.asarray(ttbar.sample_yields()["Signal"])
    shifted = y0 + 1e-2 * np.random.default_rng(5).normal(size=y0.shape) * np.sqrt(y0)
    model = ttbar.with_yields({"Signal": shifted})
    result = infer.hypotest(model, 1.0)
    oracle = float(diff.cls(ttbar, {"Signal": shifted}, 1.0))
    assert result.CLs_obs == pytest.approx(oracle, rel=1e-6)
