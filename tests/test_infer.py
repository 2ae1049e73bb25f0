"""Hypothesis tests, limits, significance, scans and impacts against pyhf and closed forms.

pyhf references use the numpy backend with a tight SciPy tolerance (1e-12), so
the comparison is limited by the fits, not by pyhf's default tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import bayeshf
import bayeshf.infer as infer

from conftest import data_path, pyhf_model

SBOTTOM = ("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json")
SMALL = ["thesis/4_bin.json", "pyhf-validation/1bin_shapesys.json", "pyhf-validation/2bin_histosys.json",
         "pyhf-validation/2bin_2channel_couplednorm.json", "pyhf-validation/2bin_2channel_coupledshapefactor.json"]


def _load(path, patch=None):
    return bayeshf.load(str(data_path(path)), patches=[str(data_path(patch))] if patch else None)


@pytest.fixture()
def tight_pyhf():
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield pyhf
    pyhf.set_backend("numpy")


def _pyhf_hypotest(pyhf, model, data, mu, test_stat):
    obs, tails, exp = pyhf.infer.hypotest(mu, data, model, test_stat=test_stat, return_tail_probs=True,
                                          return_expected_set=True)
    return float(obs), [float(t) for t in tails], [float(e) for e in exp]


@pytest.mark.parametrize("path", SMALL, ids=[p.split("/")[-1] for p in SMALL])
@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
def test_hypotest_matches_pyhf(path, test_stat, tight_pyhf):
    pm, data = pyhf_model(data_path(path))
    tight_pyhf.set_backend("numpy", tight_pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    obs, (clsb, clb), exp = _pyhf_hypotest(tight_pyhf, pm, data, 1.0, test_stat)
    result = infer.hypotest(_load(path), 1.0, test_stat=test_stat)
    np.testing.assert_allclose(result.CLs_obs, obs, rtol=1e-5)
    np.testing.assert_allclose([result.CLsb_obs, result.CLb_obs], [clsb, clb], rtol=1e-5)
    np.testing.assert_allclose(result.CLs_exp, exp, rtol=1e-5)
    assert result.to_dict()["CLs_exp"] == list(result.CLs_exp)


def test_sbottom_cls_and_limits_match_pyhf(tight_pyhf):
    pm, data = pyhf_model(data_path(SBOTTOM[0]), data_path(SBOTTOM[1]))
    tight_pyhf.set_backend("numpy", tight_pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    model = _load(*SBOTTOM)
    calc = infer.AsymptoticCalculator(model)
    obs, _, exp = _pyhf_hypotest(tight_pyhf, pm, data, 1.0, "qtilde")
    np.testing.assert_allclose(calc.hypotest(1.0).CLs_obs, obs, rtol=1e-5)
    np.testing.assert_allclose(calc.hypotest(1.0).CLs_exp, exp, rtol=1e-5)
    # the limits: pyhf's CLs at our observed and median expected limits equals the level
    limit = infer.upper_limit(calc)
    assert limit.exp[0] < limit.exp[1] < limit.exp[2] < limit.exp[3] < limit.exp[4]
    at_obs, _, _ = _pyhf_hypotest(tight_pyhf, pm, data, limit.obs, "qtilde")
    _, _, at_exp = _pyhf_hypotest(tight_pyhf, pm, data, limit.exp[2], "qtilde")
    np.testing.assert_allclose(at_obs, 0.05, rtol=1e-5)
    np.testing.assert_allclose(at_exp[2], 0.05, rtol=1e-5)
    assert set(limit.to_dict()) == {"obs", "exp"} and len(limit.to_dict()["exp"]) == 5


def test_upper_limit_matches_pyhf_root_finding(tight_pyhf):
    """Observed and the five expected limits vs pyhf's toms748 scan run to rtol 1e-10."""
    path = "pyhf-validation/2bin_2channel_couplednorm.json"
    pm, data = pyhf_model(data_path(path))
    tight_pyhf.set_backend("numpy", tight_pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    lo, hi = pm.config.suggested_bounds()[pm.config.poi_index]
    obs, exp = tight_pyhf.infer.intervals.upper_limits.toms748_scan(data, pm, lo, hi, rtol=1e-10, atol=1e-12)
    result = infer.upper_limit(_load(path))
    np.testing.assert_allclose(result.obs, float(obs), rtol=1e-5)
    np.testing.assert_allclose(result.exp, [float(e) for e in exp], rtol=1e-5)
    # the scan holds what the root finding evaluated, CLs falling with the POI (the root finding's last
    # points lie 1e-12 apart, where neighbouring CLs differ by rounding only)
    cls = result.scan.CLs_obs
    assert np.all(np.diff(cls) < 1e-10) and cls[0] > cls[-1]


def test_significance_matches_pyhf_q0(tight_pyhf):
    path = "pyhf-validation/1bin_shapesys_q0.json"
    pm, data = pyhf_model(data_path(path))
    tight_pyhf.set_backend("numpy", tight_pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    p0, exp = tight_pyhf.infer.hypotest(0.0, data, pm, test_stat="q0", return_expected_set=True)
    result = infer.significance(_load(path))
    np.testing.assert_allclose(result.p0_obs, float(p0), rtol=1e-5)
    np.testing.assert_allclose(result.p0_exp, [float(e) for e in exp], rtol=1e-5)
    from scipy.stats import norm

    np.testing.assert_allclose(result.Z_obs, norm.isf(float(p0)), rtol=1e-8)
    assert result.Z_obs > 0


def _counting_workspace(n_obs: float, signal: float, background: float) -> dict:
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": [signal], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": [background], "modifiers": []}]}],
        "observations": [{"name": "SR", "data": [n_obs]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "mu", "bounds": [[-5.0, 10.0]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


def test_profile_scan_matches_the_poisson_closed_form():
    """One bin, no nuisance parameters: -2 Delta ln L is known in closed form."""
    n, s, b = 12.0, 4.0, 6.0
    model = bayeshf.load(_counting_workspace(n, s, b))
    grid = np.linspace(0.0, 3.5, 36)
    scan = infer.profile_scan(model, grid)

    def twice_nll(mu):
        rate = mu * s + b
        return 2 * (rate - n * np.log(rate))

    np.testing.assert_allclose(scan.delta_twice_nll, twice_nll(grid) - twice_nll((n - b) / s), atol=1e-8)
    np.testing.assert_allclose(scan.bestfit, (n - b) / s, atol=1e-6)
    from scipy.optimize import brentq

    upper = brentq(lambda mu: twice_nll(mu) - twice_nll(1.5) - 1.0, 1.5, 3.5)
    assert abs(scan.interval_68[1] - upper) < 5e-3  # linear interpolation on a 0.1 grid
    # Hessian uncertainty of the MLE: sigma_mu = sqrt(n) / s
    np.testing.assert_allclose(bayeshf.fit(model).poi_uncertainty, np.sqrt(n) / s, rtol=1e-8)


def test_profile_scan_2d_matches_pyhf_fixed_fits(tight_pyhf):
    path = "pyhf-validation/2bin_2channel_couplednorm.json"
    model = _load(path)
    names = (model.poi_name, model.par_names[1 - model.poi_index] if model.poi_index < 2 else model.par_names[0])
    scan = infer.profile_scan_2d(model, names, [0.5, 1.0, 1.5], [-0.5, 0.5])
    pm, data = pyhf_model(data_path(path))
    tight_pyhf.set_backend("numpy", tight_pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    best = float(tight_pyhf.infer.mle.fit(data, pm, return_fitted_val=True)[1])
    ix, iy = (pm.config.par_names.index(n) for n in names)
    init = list(pm.config.suggested_init())
    fixed = list(pm.config.suggested_fixed())
    init[ix], init[iy] = 1.5, -0.5
    fixed[ix] = fixed[iy] = True
    value = float(tight_pyhf.infer.mle.fit(data, pm, init_pars=init, fixed_params=fixed, return_fitted_val=True)[1])
    np.testing.assert_allclose(scan.delta_twice_nll[2, 0], value - best, atol=1e-6)
    assert np.all(scan.delta_twice_nll > -1e-8)


def test_impacts_refit_match_pyhf_and_hessian_is_linear_version(tight_pyhf):
    path = "thesis/4_bin.json"
    model = _load(path)
    result = bayeshf.fit(model)
    refit = infer.impacts(model, fit_result=result)
    hessian = infer.impacts(model, method="hessian", fit_result=result)
    pm, data = pyhf_model(data_path(path))
    tight_pyhf.set_backend("numpy", tight_pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    poi = pm.config.poi_index
    for k, name in enumerate(refit.par_names[:2]):
        i = pm.config.par_names.index(name)
        init = list(result.bestfit)
        fixed = list(pm.config.suggested_fixed())
        init[i] = result.bestfit[i] + result.uncertainties[i]
        fixed[i] = True
        pars = tight_pyhf.infer.mle.fit(data, pm, init_pars=init, fixed_params=fixed)
        np.testing.assert_allclose(refit.postfit_up[k], float(pars[poi]) - result.poi, atol=1e-5)
    # the Hessian estimate is the linearisation of the refit one: same sign, similar size
    both = np.isfinite(refit.postfit_up) & (np.abs(refit.postfit_up) > 1e-3)
    assert np.all(np.sign(refit.postfit_up[both]) == np.sign(hessian.postfit_up[both]))
    np.testing.assert_allclose(hessian.postfit_up[both], refit.postfit_up[both], rtol=0.3)
    ranked = refit.ranked()
    score = np.maximum(np.abs(ranked.postfit_up), np.abs(ranked.postfit_down))
    assert np.all(np.diff(score) <= 1e-15)


def test_grouped_impacts_equal_the_quadrature_difference_of_refits():
    """sigma_mu^2 - sigma_mu(group fixed)^2 from a refit with the group fixed at its best fit."""
    model = _load(*SBOTTOM)
    result = bayeshf.fit(model, bounds={"mu_SIG": (-5.0, 10.0)})  # interior POI: the Hessian applies
    groups = infer.grouped_impacts(model, fit_result=result)
    for group in ("histosys", "staterror"):
        members = list(groups.members[group])
        conditional = bayeshf.fit(model, bounds={"mu_SIG": (-5.0, 10.0)},
                                  fixed={name: result.values[name] for name in members})
        expected = np.sqrt(result.poi_uncertainty**2 - conditional.poi_uncertainty**2)
        np.testing.assert_allclose(groups.groups[group], expected, rtol=1e-4)
