"""pyhf's ROOT-validated cases (tests/data/pyhf-validation/reference/cls.json, with provenance).

With pyhf's validation settings (normsys code1, histosys code0) bayeshf's
asymptotic CLs equals pyhf's run with a tight minimiser tolerance to 1e-6
relative on the eight single-valley cases. The stored reference numbers are
the output of minimisers stopped at their default tolerances: against them
bayeshf (and tightly converged pyhf) differ by up to the amounts recorded in
``STORED_AGREEMENT`` (measured; docs/frequentist.md has the table). The
coupled-histosys case has two valleys; bayeshf's fits are lower than the
reference's, which moves CLs (tests/test_freq_checks.py shows the NLL values).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import bayeshf
import bayeshf.infer as infer

from conftest import data_path, pyhf_model

REFERENCE = json.loads((data_path("pyhf-validation/reference/cls.json")).read_text())["cases"]
CODES = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
SINGLE_VALLEY = [k for k in REFERENCE if k != "2bin_2channel_coupledhistosys"]
#: measured max relative difference of bayeshf's (CLs_obs, CLs_exp) from the stored numbers (x1.5 margin)
STORED_AGREEMENT = {
    "1bin_shapesys": (8e-6, 5e-5), "1bin_shapesys_q0": (2e-6, 5e-4), "1bin_lumi": (4.5e-5, 7e-5),
    "1bin_normsys": (1.2e-6, 4.5e-5), "2bin_histosys": (2e-6, 9e-5), "2bin_2channel": (4e-6, 3.3e-5),
    "2bin_2channel_couplednorm": (1.5e-5, 1.8e-4), "2bin_2channel_coupledshapefactor": (1e-8, 1.5e-7),
}


def _ours(case):
    model = bayeshf.load(str(data_path(f"pyhf-validation/{case['workspace']}")), modifier_settings=CODES)
    result = infer.hypotest(model, case["poi_value"], test_stat=case["test_stat"])
    if case["test_stat"] == "q0":  # pyhf's hypotest returns the p-values CLs+b for q0
        return result.CLsb_obs, np.asarray(result.CLsb_exp)
    return result.CLs_obs, np.asarray(result.CLs_exp)


@pytest.mark.parametrize("name", SINGLE_VALLEY)
def test_matches_tightly_converged_pyhf_to_1e6(name):
    import pyhf

    case = REFERENCE[name]
    pm, data = pyhf_model(data_path(f"pyhf-validation/{case['workspace']}"), modifier_settings=CODES)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-14))
    try:
        obs, exp = pyhf.infer.hypotest(case["poi_value"], data, pm, test_stat=case["test_stat"],
                                       return_expected_set=True)
    finally:
        pyhf.set_backend("numpy")
    ours_obs, ours_exp = _ours(case)
    assert ours_obs == pytest.approx(float(obs), rel=1e-6)
    np.testing.assert_allclose(ours_exp, [float(e) for e in exp], rtol=1e-6)
    # the stored numbers agree with bayeshf only as far as their own minimisers converged
    rel_obs, rel_exp = STORED_AGREEMENT[name]
    assert ours_obs == pytest.approx(case["CLs_obs"], rel=rel_obs)
    np.testing.assert_allclose(ours_exp, case["CLs_exp"], rtol=rel_exp)


def _lowest_pyhf(pm, observed, kinked, fixed):
    """pyhf's lowest fit (the backend set by the caller) from both sides of the kink of parameter ``kinked``."""
    import pyhf

    init = np.asarray(pm.config.suggested_init(), float)
    mask = list(pm.config.suggested_fixed())
    for i, value in fixed.items():
        init[i], mask[i] = value, True
    best = None
    for side in (-0.5, 0.0, 0.5):
        start = init.copy()
        if kinked not in fixed:
            start[kinked] = side
        pars, nll = pyhf.infer.mle.fit(observed, pm, init_pars=start.tolist(), fixed_params=mask,
                                       return_fitted_val=True)
        if best is None or float(nll) < best[1]:
            best = (np.asarray(pars, float), float(nll))
    return best


def test_coupledhistosys_refit_impacts_match_multi_start_pyhf():
    """Each impact refit of the two-valley case is the lowest of pyhf's fits from both sides of the kink."""
    import pyhf

    case = REFERENCE["2bin_2channel_coupledhistosys"]
    path = data_path(f"pyhf-validation/{case['workspace']}")
    model = bayeshf.load(str(path), modifier_settings=CODES)
    ours = infer.impacts(model)
    pm, data = pyhf_model(path, modifier_settings=CODES)
    alpha = pm.config.par_slice("coupled_histosys").start
    poi = pm.config.poi_index
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-14))
    try:
        free = _lowest_pyhf(pm, data, alpha, {})
        assert ours.poi_bestfit == pytest.approx(free[0][poi], abs=1e-5)
        for k, name in enumerate(ours.par_names):
            i = pm.config.par_slice(name).start
            for sign, key in ((1.0, "postfit_up"), (-1.0, "postfit_down")):
                target = float(ours.bestfit[k] + sign * ours.postfit_uncertainty[k])
                pars, _ = _lowest_pyhf(pm, data, alpha, {i: target})
                assert getattr(ours, key)[k] == pytest.approx(pars[poi] - free[0][poi], abs=1e-5), (name, key)
    finally:
        pyhf.set_backend("numpy")


def test_coupledhistosys_matches_a_multi_start_tight_pyhf_oracle():
    """The two-valley case: every fit behind CLs from both sides of the kink with pyhf's own minimiser
    (SciPy, tolerance 1e-14), the lowest kept; CLs from the closed forms (Cowan et al. 2011, q at mu = 1).

    The stored reference (pyhf's SLSQP, one start) keeps the mu = 1 fits in the alpha > 0 valley:
    twice_nll 31.375 (data) and 37.476 (Asimov) where 30.872 and 32.631 exist (docs/frequentist.md).
    """
    import pyhf
    from scipy.special import ndtr

    case = REFERENCE["2bin_2channel_coupledhistosys"]
    pm, data = pyhf_model(data_path(f"pyhf-validation/{case['workspace']}"), modifier_settings=CODES)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-14))
    try:
        init = np.asarray(pm.config.suggested_init(), float)
        alpha = pm.config.par_slice("coupled_histosys").start
        poi = pm.config.poi_index

        def lowest(observed, poi_value=None):
            return _lowest_pyhf(pm, observed, alpha, {} if poi_value is None else {poi: poi_value})

        free, fixed = lowest(data), lowest(data, 1.0)
        asimov = pm.expected_data(lowest(data, 0.0)[0])
        free_a, fixed_a = lowest(asimov), lowest(asimov, 1.0)
    finally:
        pyhf.set_backend("numpy")
    q = 0.0 if free[0][poi] > 1.0 else max(fixed[1] - free[1], 0.0)
    q_a = 0.0 if free_a[0][poi] > 1.0 else max(fixed_a[1] - free_a[1], 0.0)
    sq, sqa = np.sqrt(q), np.sqrt(q_a)
    oracle_obs = ndtr(-sq) / ndtr(sqa - sq)  # CLs+b / CLb for q: shifted statistic sqrt(q) - sqrt(q_A)
    oracle_exp = [ndtr(-(n + sqa)) / ndtr(-n) for n in (2.0, 1.0, 0.0, -1.0, -2.0)]
    ours_obs, ours_exp = _ours(case)
    assert fixed[1] == pytest.approx(30.8717, abs=1e-3) and fixed_a[1] == pytest.approx(32.6313, abs=1e-3)
    assert ours_obs == pytest.approx(oracle_obs, rel=1e-6)
    np.testing.assert_allclose(ours_exp, oracle_exp, rtol=1e-6)
