"""Conditional fits far from the best fit (the ATLAS ttbar cross-section at zero) reach the lowest minimum.

The oracle is an independent minimiser: bayeshf.diff's damped-Newton fit, whose path differs from
the trust region's, started from the model's inits; pyhf's MINUIT reaches the same minimum
(twice_nll 98595.456, see docs/frequentist.md).
"""
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtri

from bayeshf import diff, infer, load

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
