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
