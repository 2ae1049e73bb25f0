"""bayeshf.fit against pyhf (minuit) on every workspace in tests/data (ttbar in its own test), plus HESSE and MAP checks.

Oracles: pyhf 0.7.6 with the minuit optimiser (best fit, twice_nll), iminuit
HESSE run on pyhf's own twice_nll (uncertainties), the Bayesian MAP search of
bayeshf.posterior (an independent optimiser on the posterior density).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import bayeshf
from bayeshf.fit import FitResult, compiled_functions

from conftest import WORKSPACES, data_path, pyhf_model, workspace_id

TTBAR = "atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json"
#: the cases fitted against minuit (ttbar has its own test: minuit needs minutes there)
FIT_CASES = [case for case in WORKSPACES if case[0] != TTBAR]


def _load(case):
    path, patch = case
    return bayeshf.load(str(data_path(path)), patches=[str(data_path(patch))] if patch else None)


@pytest.fixture(scope="session")
def minuit_reference():
    """pyhf + minuit fits, computed once per case and session."""
    cache: dict = {}

    def get(case):
        if case not in cache:
            import pyhf

            path, patch = case
            model, data = pyhf_model(data_path(path), data_path(patch) if patch else None)
            pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-7, strategy=2))
            try:
                pars, value = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
                pars, value = np.asarray(pars), float(value)
            except pyhf.exceptions.FailedMinimization as failure:  # HESSE trouble only; keep MIGRAD's minimum
                pars, value = np.asarray(failure.result.x), float(failure.result.fun)
            finally:
                pyhf.set_backend("numpy")
            cache[case] = (model, np.asarray(data), pars, value)
        return cache[case]

    return get


@pytest.mark.parametrize("case", FIT_CASES, ids=[workspace_id(c) for c in FIT_CASES])
def test_fit_matches_pyhf_minuit(case, minuit_reference):
    pyhf_model_, data, pars, value = minuit_reference(case)
    model = _load(case)
    result = bayeshf.fit(model)
    assert isinstance(result, FitResult)
    assert result.success, result.message
    assert list(result.par_names) == list(pyhf_model_.config.par_names)
    # never above minuit's minimum, and the same point unless minuit stopped in a higher valley
    assert result.twice_nll <= value + 1e-6
    if result.twice_nll < value - 1e-6:  # coupledhisto, smooth codes: minuit 30.80, the lower valley 29.33
        import pyhf

        pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-7, strategy=2))
        try:  # our point is a minimum by minuit's own search started there
            pars = np.asarray(pyhf.infer.mle.fit(data, pyhf_model_, init_pars=list(result.bestfit)))
        finally:
            pyhf.set_backend("numpy")
    np.testing.assert_allclose(result.bestfit, pars, atol=1e-4, rtol=0)
    # the reported twice_nll is pyhf's at the reported point
    np.testing.assert_allclose(result.twice_nll, -2 * pyhf_model_.logpdf(result.bestfit, data)[0], rtol=1e-10)
    # bounds and fixed parameters honoured
    bounds = np.asarray(pyhf_model_.config.suggested_bounds())
    assert np.all(result.bestfit >= bounds[:, 0]) and np.all(result.bestfit <= bounds[:, 1])
    fixed = np.asarray(pyhf_model_.config.suggested_fixed())
    np.testing.assert_array_equal(result.bestfit[fixed], np.asarray(pyhf_model_.config.suggested_init())[fixed])
    assert np.all(result.uncertainties[fixed] == 0.0)
    assert result.values[result.par_names[0]] == result.bestfit[0]


HESSE_CASES = ["thesis/4_bin.json", "pyhf-validation/2bin_2channel_couplednorm.json",
               "pyhf-validation/1bin_shapesys.json"]


def _minuit_hesse(fcn, start):
    """iminuit HESSE of ``fcn`` (a twice_nll, so errordef 1) at ``start``, converged to its own accuracy.

    Minuit2's MnHesse takes each diagonal second derivative from central
    differences, iterating the step until the value changes by less than
    ``hessian_g2_tolerance`` between cycles; with strategy 2's default (2%,
    7 cycles) it stops early: 0.40% off in the uncertainties of
    1bin_shapesys and 0.08% on 4_bin. Tightened (1e-4, step 1e-3, 20 cycles)
    the diagonal agrees with the exact Hessian to ~1e-8. The mixed
    derivatives remain one-sided differences (f(x+di+dj) + f(x) - f(x+di) -
    f(x+dj)) / (di dj) with steps of ~1e-3 sigma, an O(step) error that
    iminuit 2.33 gives no switch for: 3e-4 relative on H_ij of 4_bin, so its
    uncertainties stay 5e-4 from the exact ones (2bin_2channel 2.6e-4,
    1bin_shapesys 5e-5). Hence 1e-3 against this oracle, and the finite
    differences below (central mixed differences, error O(step^2)) as the
    tight one.
    """
    from iminuit import Minuit

    minuit = Minuit(fcn, start)
    minuit.errordef = 1.0  # twice_nll = -2 log L: one sigma is a change of 1 (0.5 for an nll)
    minuit.strategy = 2
    minuit.strategy.hessian_ncycles = 20
    minuit.strategy.hessian_step_tolerance = 1e-3
    minuit.strategy.hessian_g2_tolerance = 1e-4
    minuit.hesse()
    assert minuit.accurate, "HESSE did not produce an accurate covariance"
    return np.asarray(minuit.errors), np.asarray(minuit.covariance.correlation())


@pytest.mark.parametrize("path", HESSE_CASES, ids=[p.split("/")[-1] for p in HESSE_CASES])
def test_uncertainties_match_finite_differences_and_minuit_hesse(path):
    """Hessian uncertainties and correlations vs pyhf's twice_nll: finite differences and iminuit HESSE.

    Both oracles run on pyhf's own twice_nll (numpy backend) at our best fit,
    over the non-fixed parameters (none on a bound, so no limits are needed).
    """
    model = _load((path, None))
    result = bayeshf.fit(model)
    assert not result.at_bound.any()
    pyhf_model_, data = pyhf_model(data_path(path))
    free = np.flatnonzero(~result.fixed)
    x0 = result.bestfit.copy()

    def twice_nll(free_values):
        x = x0.copy()
        x[free] = free_values
        return float(-2 * pyhf_model_.logpdf(x, data)[0])

    n = len(free)
    h = 1e-4 * np.maximum(1.0, np.abs(x0[free]))
    hessian = np.empty((n, n))
    for a in range(n):
        for b in range(n):
            ea, eb = np.eye(n)[a] * h[a], np.eye(n)[b] * h[b]
            base = x0[free]
            hessian[a, b] = (twice_nll(base + ea + eb) - twice_nll(base + ea - eb) - twice_nll(base - ea + eb)
                             + twice_nll(base - ea - eb)) / (4 * h[a] * h[b])
    covariance = 2 * np.linalg.inv(0.5 * (hessian + hessian.T))
    # finite-difference round-off is ~eps * twice_nll / h^2 ~ 1e-7 absolute
    np.testing.assert_allclose(result.covariance[np.ix_(free, free)], covariance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.uncertainties[free], np.sqrt(np.diag(covariance)), rtol=1e-5)
    errors, correlation = _minuit_hesse(twice_nll, x0[free])
    np.testing.assert_allclose(result.uncertainties[free], errors, rtol=1e-3)
    np.testing.assert_allclose(result.correlation[np.ix_(free, free)], correlation, atol=1e-3)
    np.testing.assert_allclose(np.diag(result.correlation)[free], 1.0)


def test_ttbar_reaches_the_true_minimum():
    """The issue's target: pyhf+minuit reaches 294.9461 where pyhf's SLSQP stops at 295.139."""
    model = _load((TTBAR, None))
    result = bayeshf.fit(model)
    assert result.success, result.message
    assert result.twice_nll <= 294.9462
    pyhf_model_, data = pyhf_model(data_path(TTBAR))
    np.testing.assert_allclose(result.twice_nll, -2 * pyhf_model_.logpdf(result.bestfit, data)[0], rtol=1e-10)
    # the other minimiser choice lands on the same point
    exact = bayeshf.fit(model, method="trust-exact")
    np.testing.assert_allclose(exact.bestfit, result.bestfit, atol=1e-4)
    assert abs(exact.twice_nll - result.twice_nll) < 1e-6


def test_fixed_and_bounds_arguments_and_no_recompilation():
    """Conditional fits at many POI values reuse the compiled programs."""
    import pyhf

    fit_module = importlib.import_module("bayeshf.objective")

    case = ("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json")
    model = _load(case)
    bayeshf.fit(model, fixed={"mu_SIG": 0.5})
    sizes = [f._cache_size() for f in (fit_module._value_and_grad_z, fit_module._hess_z)]
    pyhf_model_, data = pyhf_model(data_path(case[0]), data_path(case[1]))
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    try:
        for mu in (0.3, 2.7):
            result = bayeshf.fit(model, fixed={"mu_SIG": mu})
            assert result.bestfit[model.poi_index] == mu and result.uncertainties[model.poi_index] == 0.0
            reference = float(pyhf.infer.mle.fixed_poi_fit(mu, data, pyhf_model_, return_fitted_val=True)[1])
            assert result.twice_nll <= reference + 1e-6
            assert abs(result.twice_nll - reference) < 1e-5
    finally:
        pyhf.set_backend("numpy")
    assert [f._cache_size() for f in (fit_module._value_and_grad_z, fit_module._hess_z)] == sizes
    # user bounds are honoured: the POI lands on a bound below its free minimum
    free = bayeshf.fit(model, bounds={"mu_SIG": (-5.0, 10.0)})
    capped = bayeshf.fit(model, bounds={"mu_SIG": (0.5, 10.0)})
    assert free.bestfit[model.poi_index] < 0.5
    assert capped.bestfit[model.poi_index] == 0.5 and capped.at_bound[model.poi_index]
    assert capped.twice_nll >= free.twice_nll


def test_bad_arguments_raise_one_sentence():
    model = _load(("thesis/4_bin.json", None))
    with pytest.raises(bayeshf.BayeshfError, match="no parameter named"):
        bayeshf.fit(model, fixed={"nope": 1.0})
    with pytest.raises(bayeshf.BayeshfError, match="unknown fit method"):
        bayeshf.fit(model, method="newton")
    with pytest.raises(bayeshf.BayeshfError, match="lower bound"):
        bayeshf.fit(model, bounds={model.par_names[0]: (1.0, 0.0)})


def test_mle_equals_bayesian_map():
    """With the default flat reference priors the posterior mode is the MLE."""
    from bayeshf.laplace import find_map
    from bayeshf.posterior import Posterior

    model = _load(("thesis/4_bin.json", None))
    result = bayeshf.fit(model)
    mode = find_map(Posterior(model))
    np.testing.assert_allclose(mode, result.bestfit, atol=1e-4)


def test_compiled_functions_are_cached_per_model():
    import gc
    import weakref

    model = _load(("thesis/2_bin_uncorr.json", None))
    attributes = set(vars(model))
    assert compiled_functions(model) is compiled_functions(model)
    assert set(vars(model)) == attributes  # the cache is the fit's, not written into the model
    functions = compiled_functions(model)
    assert bayeshf.fit(model).success and compiled_functions(model) is functions
    gone = weakref.ref(model)
    del model, functions
    gc.collect()
    assert gone() is None  # the cache keeps no model alive


def test_a_fit_compiles_one_gradient_and_one_hessian_program():
    """The polish in the original space reuses the unconstrained-space programs (identity map, same dtypes).

    A model structure no other test uses (a 13-bin thesis model), so its first
    fit is the one that compiles; a second fit and a conditional fit compile nothing.
    """
    from bayeshf.generators import nbin_workspace

    objective = importlib.import_module("bayeshf.objective")
    programs = (objective._value_and_grad_z, objective._hess_z)
    model = bayeshf.load(nbin_workspace(13))
    before = [f._cache_size() for f in programs]
    result = bayeshf.fit(model)
    assert result.success, result.message
    assert [f._cache_size() - b for f, b in zip(programs, before)] == [1, 1]
    bayeshf.fit(model, fixed={model.poi_name: 0.5})
    bayeshf.fit(model.with_data(np.asarray(model.observed) + 1.0))
    assert [f._cache_size() - b for f, b in zip(programs, before)] == [1, 1]
