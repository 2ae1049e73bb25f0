"""Every fit of the frequentist path is checked: retries, failures that stop the computation, the global minimum.

Oracles: pyhf's own likelihood (numpy backend for values, jax backend with
SciPy's L-BFGS-B for an independent profile of ttbar), brute-force grids over
generated two-valley models, and counting the local minimisations.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from scipy.special import ndtr

import bayeshf
import bayeshf.infer as infer
from bayeshf.cli import main

from conftest import WORKSPACES, data_path, pyhf_model, workspace_id

fitmod = importlib.import_module("bayeshf.fit")
TTBAR = "atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json"
VALIDATION_CODES = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}


def _load(path, patch=None, **kwargs):
    return bayeshf.load(str(data_path(path)), patches=[str(data_path(patch))] if patch else None, **kwargs)


def _pyhf_profile(path):
    """An independent profile of -2 log L: pyhf's jax likelihood minimised by SciPy's L-BFGS-B."""
    import jax
    import pyhf
    import scipy.optimize

    pyhf.set_backend("jax")
    try:
        model, data = pyhf_model(data_path(path), backend="jax")
        data = jax.numpy.asarray(data)
        value_and_grad = jax.jit(jax.value_and_grad(lambda p: -2.0 * model.logpdf(p, data)[0]))
        bounds = np.asarray(model.config.suggested_bounds(), float)
        fixed = np.asarray(model.config.suggested_fixed(), bool)
        init = np.asarray(model.config.suggested_init(), float)
        bounds[fixed] = init[fixed, None]  # fixed parameters (ttbar's lumi) stay at their init
        poi = model.config.poi_index
    finally:
        pyhf.set_backend("numpy")

    def profile(start, poi_value=None):
        pyhf.set_backend("jax")  # the likelihood is traced under pyhf's jax backend
        try:
            return _minimise(start, poi_value)
        finally:
            pyhf.set_backend("numpy")

    def _minimise(start, poi_value):
        box = bounds.copy()
        x0 = np.clip(np.asarray(start, float), box[:, 0], box[:, 1])
        if poi_value is not None:
            box[poi] = poi_value
            x0[poi] = poi_value

        def fun(x):
            v, g = value_and_grad(jax.numpy.asarray(x))
            return float(v), np.asarray(g, dtype=float)

        result = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[tuple(b) for b in box],
                                         options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 50})
        return float(result.fun)

    return profile


def _cls_from_q(q, q_asimov):
    """Asymptotic CLs for q~ when sqrt(q) <= sqrt(q_A) (Cowan et al. 2011)."""
    sq, sqa = np.sqrt(q), np.sqrt(q_asimov)
    return ndtr(-sq) / ndtr(sqa - sq)


def test_ttbar_cls_and_upper_limit_against_an_independent_profile():
    """The issue's case: CLs(mu=1) was 0.0 and the limit 0.994 from a failed fit (truth ~0.45 and ~1.065)."""
    model = _load(TTBAR)
    calc = infer.AsymptoticCalculator(model)
    result = calc.hypotest(1.0)
    fits = [calc.free_fit, calc.free_fit_asimov, calc.conditional_fit(1.0), calc.conditional_fit(1.0, "asimov")]
    assert all(f.success for f in fits)
    profile = _pyhf_profile(TTBAR)
    free = profile(calc.free_fit.bestfit)
    assert free >= calc.free_fit.twice_nll - 1e-6  # ours is the minimum
    conditional = profile(calc.free_fit.bestfit, 1.0)
    # L-BFGS-B stops a little above the minimum; never below ours
    assert 0.0 <= conditional - calc.conditional_fit(1.0).twice_nll < 2e-4
    q_independent = conditional - free
    assert result.q_asimov > 100  # CLb = 1 to 1e-20: CLs_obs depends on q_obs only
    assert result.CLs_obs == pytest.approx(_cls_from_q(q_independent, result.q_asimov), rel=1e-3)
    assert 0.4 < result.CLs_obs < 0.5

    limit = infer.upper_limit(calc, expected=False)
    assert 1.0 < limit.obs < 1.2
    q_at_limit = profile(calc.free_fit.bestfit, limit.obs) - free
    q_a = calc.statistic(limit.obs, "asimov")
    assert _cls_from_q(q_at_limit, q_a) == pytest.approx(0.05, rel=2e-3)


CHECKED = [c for c in WORKSPACES if c[0] != TTBAR]


@pytest.mark.parametrize("case", CHECKED, ids=[workspace_id(c) for c in CHECKED])
def test_every_workspace_hypotest_runs_on_converged_fits(case):
    """Each fit behind CLs converged, no conditional minimum lies below the free one, q matches pyhf's likelihood."""
    model = _load(*case)
    if model.poi_index is None:
        pytest.skip("background-only workspace: no parameter of interest to test")
    calc = infer.AsymptoticCalculator(model)
    result = calc.hypotest(1.0)
    pm, data = pyhf_model(data_path(case[0]), data_path(case[1]) if case[1] else None)
    for which, observed in (("observed", data), ("asimov", np.concatenate([calc.asimov_data]))):
        free = calc.free_fit if which == "observed" else calc.free_fit_asimov
        conditional = calc.conditional_fit(1.0, which)
        assert free.success and conditional.success
        assert conditional.twice_nll >= free.twice_nll - 1e-8 * max(1.0, abs(free.twice_nll))
        pyhf_q = -2.0 * (pm.logpdf(conditional.bestfit, observed)[0] - pm.logpdf(free.bestfit, observed)[0])
        q = result.q_obs if which == "observed" else result.q_asimov
        if free.bestfit[model.poi_index] <= 1.0:
            assert q == pytest.approx(max(pyhf_q, 0.0), rel=1e-7, abs=1e-9)
    assert 0.0 <= result.CLs_obs <= 1.0 and np.all(np.isfinite(result.CLs_exp))


def test_a_fit_that_fails_from_every_start_stops_the_computation(monkeypatch, capsys):
    """No number from a failed fit: FitFailedError in Python, exit 1 and a JSON failure document on the CLI."""
    real = fitmod.solve

    def failing(problem, start=None, **kwargs):
        result = real(problem, start, **kwargs)
        if problem.fixed[problem.poi_index]:  # every conditional fit "fails"
            return fitmod.dataclasses.replace(result, success=False, message="forced failure", edm=1.0)
        return result

    monkeypatch.setattr(fitmod, "solve", failing)
    path = str(data_path("thesis/4_bin.json"))
    with pytest.raises(fitmod.FitFailedError, match="fixed at 0"):
        infer.hypotest(bayeshf.load(path), 1.0)
    assert main(["cls", path, "--poi-value", "1", "--json"]) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["success"] is False and "failed" in document["error"]
    assert "no result is reported" in captured.err and captured.err.count("\n") == 1
    assert main(["limit", path]) == 1


def test_a_failed_start_is_retried_from_the_next_one(monkeypatch):
    real = fitmod.solve
    calls = []

    def first_fails(problem, start=None, **kwargs):
        result = real(problem, start, **kwargs)
        calls.append(result)
        if len(calls) == 1:
            return fitmod.dataclasses.replace(result, success=False, twice_nll=result.twice_nll + 5.0)
        return result

    model = _load("thesis/4_bin.json")
    reference = bayeshf.fit(model, fixed={model.poi_name: 2.0})
    monkeypatch.setattr(fitmod, "solve", first_fails)
    problem = fitmod.FitProblem.resolve(model).fixing(model.poi_index, 2.0)
    result = fitmod.global_fit(problem, (np.asarray(model.init) + 0.3,), final_hessian=False)
    assert len(calls) == 2 and result.success
    assert result.twice_nll == pytest.approx(reference.twice_nll, abs=1e-9)


# ---------------------------------------------------------------------------
# kinks and two valleys


def test_coupledhisto_reaches_the_lower_minimum_on_both_sides_of_the_kink():
    """pyhf's validation settings (normsys code1, histosys code0): two valleys in coupled_histosys.

    A single local fit from the inits stops at 30.2853 (alpha -0.19); the
    probe on the other side of the kink finds pyhf's 29.2874 (alpha 0.31).
    With mu fixed at 1 the lower valley is alpha < 0 (30.872), below the
    31.375 that pyhf's fit reaches; pyhf's own likelihood confirms both values.
    """
    path = "pyhf-validation/2bin_2channel_coupledhisto.json"
    model = _load(path, modifier_settings=VALIDATION_CODES)
    pm, data = pyhf_model(data_path(path), modifier_settings=VALIDATION_CODES)
    problem = fitmod.FitProblem.resolve(model)
    local = fitmod.solve(problem)
    free = bayeshf.fit(model)
    fixed = bayeshf.fit(model, fixed={"mu": 1.0})
    assert local.twice_nll == pytest.approx(30.2853, abs=1e-4)
    assert free.success and free.twice_nll == pytest.approx(29.2874, abs=1e-4)
    assert fixed.success and fixed.twice_nll == pytest.approx(30.8717, abs=1e-4)
    for result in (free, fixed):
        assert -2.0 * pm.logpdf(result.bestfit, data)[0] == pytest.approx(result.twice_nll, abs=1e-9)
    # pyhf's valley at mu = 1 is a local minimum above ours
    pyhf_point = np.array(fixed.bestfit)
    pyhf_point[model.par_names.index("coupled_histosys")] = 0.5
    other = fitmod.solve(problem.fixing("mu", 1.0), pyhf_point)
    assert other.success and other.twice_nll == pytest.approx(31.375, abs=1e-3)


def _two_valley_spec(up, down, observed):
    """One bin whose histosys templates both lie above the nominal: a V in alpha under code0."""
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": [5.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "bkg", "data": [100.0], "modifiers": [
                {"name": "shape", "type": "histosys", "data": {"hi_data": [up], "lo_data": [down]}}]}]}],
        "observations": [{"name": "SR", "data": [observed]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "mu", "bounds": [[0.0, 10.0]], "inits": [1.0], "fixed": True}]}}],
        "version": "1.0.0",
    }


@pytest.mark.parametrize("seed", range(4))
def test_generated_two_valley_models_reach_the_brute_force_minimum(seed):
    """code0 histosys with both templates above nominal: valleys at alpha > 0 and alpha < 0 of different depth.

    The reference is a brute-force grid over alpha (mu is fixed), refined around its minimum.
    """
    rng = np.random.default_rng(seed)
    down = 100.0 + rng.uniform(8, 14)
    up = down + rng.uniform(3, 8)  # the steeper side needs the smaller pull: the deeper valley is alpha > 0
    observed = float(np.round(115.0 + rng.uniform(5, 25)))
    model = bayeshf.load(_two_valley_spec(up, down, observed), modifier_settings=VALIDATION_CODES)
    result = bayeshf.fit(model)
    local = fitmod.solve(fitmod.FitProblem.resolve(model))
    assert local.twice_nll > result.twice_nll + 1e-3  # a single Newton run from the kink takes the other valley
    index = model.par_names.index("shape")

    def profile(alphas):
        x = np.tile(np.asarray(model.init, float), (len(alphas), 1))
        x[:, index] = alphas
        return np.array([float(model.twice_nll(row)) for row in x])

    coarse = np.linspace(-5, 5, 2001)
    best = coarse[np.argmin(profile(coarse))]
    values = profile(np.linspace(best - 0.01, best + 0.01, 2001))
    assert result.success
    assert result.twice_nll <= min(values) + 1e-9
    assert np.sign(result.bestfit[index]) == np.sign(best)


def test_smooth_codes_take_one_local_fit_and_kinked_codes_probe():
    """code4/code4p (the defaults) on monotone variations: a fit is exactly one local minimisation. A
    non-monotone one (coupledhisto) is probed at its mirror image, where the lower valley is."""
    smooth = _load("pyhf-validation/2bin_histosys.json")
    assert fitmod.several_valley_parameters(smooth).size == 0
    before = fitmod.SOLVE_CALLS[0]
    bayeshf.fit(smooth)
    assert fitmod.SOLVE_CALLS[0] - before == 1
    path = "pyhf-validation/2bin_2channel_coupledhisto.json"
    assert fitmod.kinked_parameters(_load(path)).size == 0
    assert list(fitmod.several_valley_parameters(_load(path))) == [0]
    before = fitmod.SOLVE_CALLS[0]
    probed = bayeshf.fit(_load(path))
    assert fitmod.SOLVE_CALLS[0] - before >= 2
    # the first local fit's valley (alpha < 0, where minuit stops too) is the upper one
    one = fitmod.solve(fitmod.FitProblem.resolve(_load(path)), np.asarray(_load(path).init, float))
    assert one.bestfit[0] < 0 < probed.bestfit[0] and probed.twice_nll < one.twice_nll - 1.0
    before = fitmod.SOLVE_CALLS[0]
    bayeshf.fit(_load(path, modifier_settings=VALIDATION_CODES))
    assert fitmod.SOLVE_CALLS[0] - before >= 2
    assert list(fitmod.kinked_parameters(_load(path, modifier_settings=VALIDATION_CODES))) == [0]


def test_sbottom_asimov_fits_take_the_lower_of_two_valleys():
    """sbottom RegionA + 600_180_50: the Asimov likelihood has two minima in JET_JER_EffectiveNP_7restTerm
    (a histosys with up and down on the same side of the nominal) for mu around 1.5-2.4; started from
    the free fit alone, the mu = 1.6 fit ends 0.0044 above the lower one. The calculator fits every
    start (nearest, free, generating point, inits); the oracle is the lowest of local fits from those
    starts and from the parameter's mirror image, and pyhf's likelihood at our point gives our value.
    """
    path, patch = "sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_600_180_50.json"
    model = _load(path, patch)
    assert fitmod.may_have_several_valleys(model)
    assert model.par_names.index("JET_JER_EffectiveNP_7restTerm") in fitmod.non_monotone_parameters(model)
    calc = infer.AsymptoticCalculator(model)
    pm, _ = pyhf_model(data_path(path), data_path(patch))
    flip = model.par_names.index("JET_JER_EffectiveNP_7restTerm")
    asimov = calc._problems["asimov"]
    for mu in (1.6, 2.0):
        ours = calc.conditional_fit(mu, "asimov")
        problem = asimov.fixing(calc.poi_index, mu)
        starts = [problem.init, calc.free_fit_asimov.bestfit, calc.asimov_fit.bestfit]
        local = [fitmod.solve(problem, s, final_hessian=False) for s in starts]
        mirrored = [r.bestfit.copy() for r in local]
        for x in mirrored:
            x[flip] = -x[flip]
        local += [fitmod.solve(problem, s, final_hessian=False) for s in mirrored]
        values = [r.twice_nll for r in local if r.success]
        assert max(values) - min(values) > 1e-3  # two valleys at this mu
        assert ours.success and ours.twice_nll <= min(values) + 1e-9
        assert -2.0 * pm.logpdf(ours.bestfit, calc.asimov_data)[0] == pytest.approx(ours.twice_nll, abs=1e-8)


@pytest.mark.parametrize("seed", [0, 2])
def test_single_fits_reach_the_lower_valley_of_generated_two_valley_models(seed):
    """bayeshf.fit, free and with the POI fixed, on toy data of models with a non-monotone and a one-sided
    histosys: at or below the lowest of local fits from all four sign combinations of the two parameters.
    Without the mirror probe 3-5 of these 48 fits end in the upper valley."""
    from tests.test_toys import _two_valley_toy_spec
    from bayeshf import toys

    model = bayeshf.load(_two_valley_toy_spec(seed))
    valleys = [model.par_names.index("gen"), model.par_names.index("shape")]
    at = bayeshf.fit(model, fixed={"mu": 1.0}).bestfit
    data = toys.sample_toys(model, at, 64, np.random.default_rng(seed + 10))
    two_valleys = 0
    for d in data:
        free = bayeshf.fit(model, data=d)
        for fixed, result in ((None, free), ({"mu": 1.0}, bayeshf.fit(model, data=d, fixed={"mu": 1.0},
                                                                       reference=free))):
            assert result.success
            problem = fitmod.FitProblem.resolve(model, data=d, fixed=fixed)
            local = []
            for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                start = np.array(result.bestfit)
                start[valleys] = signs
                trial = fitmod.solve(problem, start, final_hessian=False)
                if trial.success:
                    local.append(trial.twice_nll)
            two_valleys += max(local) - min(local) > 1e-3
            assert result.twice_nll <= min(local) + 1e-6
    assert two_valleys >= 3  # two valleys on some of these fits: the check is not vacuous
