"""Posterior transforms, MAP, and the blackjax samplers against closed forms, pyhf and each other.

Tolerances are Monte Carlo errors (ArviZ mcse of the quantity, times 4)
unless stated; seeds are fixed. All sampler runs use 2 chains so the compiled
chunk program is shared within a model.
"""

from __future__ import annotations

import math
import time
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import bayeshf
from bayeshf import sampling
from bayeshf.generators import nbin_workspace
from bayeshf.laplace import find_map
from bayeshf.posterior import Posterior
from bayeshf.priors import build_priors
from tests.conftest import data_path, pyhf_model

CHAINS = 2


def one_bin(samples, observed, *, fixed_mu=False, bounds=(0.0, 20.0)):
    parameters = [{"name": "mu", "bounds": [list(bounds)]}]
    if fixed_mu:
        parameters[0]["fixed"] = True
    return {
        "channels": [{"name": "SR", "samples": samples}],
        "observations": [{"name": "SR", "data": [observed]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": parameters}}],
        "version": "1.0.0",
    }


def check_quantiles(draws: np.ndarray, reference, probs=(0.05, 0.25, 0.5, 0.75, 0.95)):
    """Quantiles of (chains, draws) agree with scipy ``reference`` within 4 MC standard errors."""
    for p in probs:
        estimate = np.quantile(draws, p)
        mcse = float(az.mcse(draws, method="quantile", prob=p))
        assert abs(estimate - reference.ppf(p)) < 4 * mcse + 1e-12, (p, estimate, reference.ppf(p), mcse)


# --------------------------------------------------------------------------- transforms


def test_constrain_unconstrain_and_exact_log_jacobian():
    model = bayeshf.load(data_path("sbottom/RegionA/BkgOnly.json"),
                         patches=[data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json")])
    posterior = Posterior(model)
    z = jax.random.normal(jax.random.PRNGKey(0), (posterior.ndim,)) * 1.5
    theta = posterior.constrain(z)
    free = posterior.free_index
    assert np.all(np.asarray(theta)[free] > posterior.prior_set.lower[free])
    assert np.all(np.asarray(theta)[free] < posterior.prior_set.upper[free])
    np.testing.assert_allclose(posterior.unconstrain(theta), z, rtol=1e-8, atol=1e-8)
    # the transform is elementwise: log|det J| = sum log|d theta_i / d z_i| (forward-mode oracle)
    _, tangent = jax.jvp(posterior.constrain_free, (z,), (jnp.ones_like(z),))
    np.testing.assert_allclose(posterior.log_jacobian(z), np.sum(np.log(np.abs(tangent))), rtol=1e-10)
    # logdensity = pyhf-equivalent log posterior + log-Jacobian
    pmodel, pdata = pyhf_model(data_path("sbottom/RegionA/BkgOnly.json"),
                               data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json"))
    z2 = z * 0.3
    difference = [float(posterior.logdensity_fn(x) - posterior.log_jacobian(x))
                  - float(pmodel.logpdf(np.asarray(posterior.constrain(x)), pdata)[0]) for x in (z, z2)]
    assert abs(difference[0] - difference[1]) < 1e-8


def test_flat_prior_boxes_map_through_the_normal_cdf_and_others_through_the_logistic():
    import scipy.special

    from bayeshf import transforms

    # the n-bin model puts its normfactor (flat prior) first: one static slice
    for model in (bayeshf.load(data_path("sbottom/RegionA/BkgOnly.json"),
                               patches=[data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json")]),
                  bayeshf.load(nbin_workspace(4))):
        posterior = Posterior(model)
        z = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (posterior.ndim,))) * 2.0
        theta = np.asarray(posterior.constrain_free(jnp.asarray(z)))
        ps = posterior.prior_set
        flat = np.array([ps[name].family in ("flat", "uniform") for name in posterior.free_names])
        lo, hi = ps.lower[posterior.free_index], ps.upper[posterior.free_index]
        box = np.isfinite(lo) & np.isfinite(hi)
        assert (flat & box).any() and (~flat & box).any()
        expected = lo + (hi - lo) * np.where(flat, st.norm.cdf(z), scipy.special.expit(z))
        np.testing.assert_allclose(theta[box], expected[box], rtol=1e-13)
        # the flat boxes' log-Jacobian is log(width) + the standard normal log density: a flat prior is N(0, 1) in z
        only_flat = np.where(flat & box, z, 0.0)
        jac_flat = float(posterior.log_jacobian(jnp.asarray(only_flat)) - posterior.log_jacobian(jnp.zeros_like(z)))
        np.testing.assert_allclose(jac_flat, np.sum(st.norm.logpdf(only_flat) - st.norm.logpdf(0.0)), rtol=1e-12)
        np.testing.assert_allclose(posterior.unconstrain(np.asarray(posterior.constrain(jnp.asarray(z)))), z,
                                   rtol=1e-8, atol=1e-8)
    # interleaved runs of flat parameters (uniform priors on every other normsys of sbottom): the sliced form
    # (up to PROBIT_MAX_BLOCKS runs) and the selected form (more runs) give scipy's values, batched too
    sbottom = bayeshf.load(data_path("sbottom/RegionA/BkgOnly.json"),
                           patches=[data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json")])
    names = [n for n in Posterior(sbottom).free_names if "[" not in n and n not in ("mu_SIG", "lumi")]
    for count in (3, 12):
        chosen = names[::2][:count]
        posterior = Posterior(sbottom, build_priors(sbottom, {"priors": {
            n: {"family": "uniform", "low": -5.0, "high": 5.0} for n in chosen}}))
        families = [posterior.prior_set[name].family for name in posterior.free_names]
        flat = np.array([family in ("flat", "uniform") for family in families])
        assert set(chosen) <= {n for n, f in zip(posterior.free_names, flat) if f}
        runs = transforms._runs(np.flatnonzero(flat))
        assert (len(runs) <= transforms.PROBIT_MAX_BLOCKS) == (count == 3) and len(runs) > 1
        z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, posterior.ndim)))
        lo, hi = posterior.prior_set.lower[posterior.free_index], posterior.prior_set.upper[posterior.free_index]
        expected = lo + (hi - lo) * np.where(flat, st.norm.cdf(z), scipy.special.expit(z))
        np.testing.assert_allclose(np.asarray(posterior.constrain_free(jnp.asarray(z))), expected, rtol=1e-13)


# --------------------------------------------------------------------------- MAP == MLE

MLE_CASES = [
    ("thesis/2_bin_corr.json", None),
    ("thesis/4_bin.json", None),
    ("pyhf-validation/2bin_2channel_coupledhisto.json", None),
    ("atlas-examples/SRee_SRmm_Srem_v2.json", None),
    ("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json"),
]


@pytest.mark.parametrize("case", MLE_CASES, ids=lambda c: c[0].split("/")[-1])
def test_map_equals_pyhf_mle(case):
    import pyhf

    path, patch = data_path(case[0]), data_path(case[1]) if case[1] else None
    model = bayeshf.load(path, patches=[patch] if patch else None)
    pmodel, pdata = pyhf_model(path, patch)
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-6))
    try:
        mle, twice_nll = pyhf.infer.mle.fit(pdata, pmodel, return_fitted_val=True)
    finally:
        pyhf.set_backend("numpy", "scipy")
    theta = find_map(Posterior(model))
    ours = float(model.twice_nll(theta))
    assert ours <= float(twice_nll) + 1e-6
    np.testing.assert_allclose(theta, mle, atol=2e-3)


# --------------------------------------------------------------------------- analytic posteriors


def test_normfactor_with_flat_prior_gives_a_gamma_posterior():
    """n ~ Poisson(mu s), mu ~ Uniform(0, 20): mu | n ~ Gamma(n + 1, rate s) (truncation at 20 is < 1e-12)."""
    s, n = 4.0, 7
    spec = one_bin([{"name": "signal", "data": [s],
                     "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}], n)
    model = bayeshf.load(spec)
    idata = sampling.sample(model, chains=CHAINS, warmup=300, draws=1500, seed=1, progress=False)
    check_quantiles(idata.posterior["mu"].values, st.gamma(n + 1, scale=1 / s))
    assert int(idata.sample_stats["diverging"].sum()) == 0


@pytest.mark.parametrize("shapesys,shift", [("flat", 1.0), ("unit-mean", 0.0)])
def test_shapesys_only_model_gives_a_gamma_posterior(shapesys, shift):
    """b with shapesys sigma: tau = (b/sigma)^2; gamma | n ~ Gamma(n + tau + shift, rate b + tau)."""
    b, sigma, n = 50.0, 10.0, 62
    tau = (b / sigma) ** 2
    spec = one_bin([{"name": "background", "data": [b],
                     "modifiers": [{"name": "unc", "type": "shapesys", "data": [sigma]},
                                   {"name": "mu", "type": "normfactor", "data": None}]}], n, fixed_mu=True)
    model = bayeshf.load(spec)
    idata = sampling.sample(model, chains=CHAINS, warmup=300, draws=1500, seed=2, progress=False, shapesys=shapesys)
    gamma = idata.posterior["unc"].values[..., 0]
    check_quantiles(gamma, st.gamma(n + tau + shift, scale=1 / (b + tau)))


# --------------------------------------------------------------------------- agreement between algorithms


def test_nuts_agrees_with_a_long_independent_metropolis_run_on_4_bin():
    model = bayeshf.load(data_path("thesis/4_bin.json"))
    nuts = sampling.sample(model, chains=CHAINS, warmup=500, draws=1500, seed=3, progress=False)
    mh = sampling.sample(model, sampler="mh", chains=CHAINS, warmup=2000, draws=20000, seed=4, progress=False,
                         metric="dense", prior_draws=0)
    for name in ("mu", "theta", "SF_theta"):
        a, b = nuts.posterior[name].values, mh.posterior[name].values
        se = math.hypot(float(az.mcse(a, method="mean")), float(az.mcse(b, method="mean")))
        assert abs(a.mean() - b.mean()) < 4 * se, name
        for p in (0.1, 0.5, 0.9):
            se = math.hypot(float(az.mcse(a, method="quantile", prob=p)), float(az.mcse(b, method="quantile", prob=p)))
            assert abs(np.quantile(a, p) - np.quantile(b, p)) < 4 * se, (name, p)
    acceptance = float(mh.sample_stats["acceptance_rate"].mean())
    assert 0.1 < acceptance < 0.5  # adapted towards 0.234


def test_hmc_runs_and_respects_bounds():
    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    idata = sampling.sample(model, sampler="hmc", chains=CHAINS, warmup=200, draws=300, seed=5, progress=False,
                            num_integration_steps=8)
    assert set(idata.sample_stats["n_steps"].values.ravel()) == {8}
    mu = idata.posterior["mu"].values
    assert mu.min() >= 0.0 and mu.max() <= 10.0


# --------------------------------------------------------------------------- simulation-based calibration


@pytest.mark.parametrize("name", ["2_bin_uncorr", "2_bin_corr", "4_bin"])
def test_simulation_based_calibration(name):
    """Talts et al. (2018): theta ~ prior, n ~ Poisson(nu(theta)); ranks of theta among posterior draws are uniform."""
    model = bayeshf.load(data_path(f"thesis/{name}.json"))
    posterior = sampling.posterior_for(model)
    replications, thin, kept = 48, 3, 99
    key = jax.random.PRNGKey(2024)
    truths = np.asarray(posterior.prior_set.sample(key, replications))
    rng = np.random.default_rng(7)
    ranks = []
    for k, theta in enumerate(truths):
        observed = rng.poisson(np.asarray(model.expected_counts(theta)))
        raw = sampling.run_chains(posterior.with_model(model.with_data(observed)), chains=1, warmup=150,
                                  draws=thin * kept, seed=k, progress=False, chunk_size=100)
        draws = raw.stats.theta[0, ::thin]  # (kept, ndim)
        ranks.append((draws < theta[posterior.free_index]).sum(axis=0))
    ranks = np.array(ranks)  # values 0..kept
    bins = 4
    edges = np.linspace(0, kept + 1, bins + 1)
    expected = np.diff(np.floor(edges - 1e-9)) / (kept + 1) * replications  # exact counts of rank values per bin
    for j, pname in enumerate(posterior.free_names):
        observed_counts = np.histogram(ranks[:, j], bins=edges)[0]
        pvalue = st.chisquare(observed_counts, expected).pvalue
        assert pvalue > 1e-3, (pname, observed_counts)


# --------------------------------------------------------------------------- InferenceData, determinism, Ctrl-C


def test_inference_data_layout():
    model = bayeshf.load(data_path("pyhf-validation/2bin_2channel.json"))
    idata = sampling.sample(model, chains=CHAINS, warmup=100, draws=50, seed=0, progress=False, prior_draws=40)
    assert {"posterior", "sample_stats", "observed_data", "posterior_predictive", "prior",
            "prior_predictive"} <= set(idata.groups())
    posterior = idata.posterior
    assert posterior["mu"].dims == ("chain", "draw")
    assert posterior["uncorr_bkguncrt_signal"].dims == ("chain", "draw", "uncorr_bkguncrt_signal_bin")
    assert posterior["mu"].shape == (CHAINS, 50)
    for stat in ("lp", "diverging", "tree_depth", "n_steps", "step_size", "acceptance_rate", "energy"):
        assert stat in idata.sample_stats, stat
    for channel in model.channels:
        assert idata.posterior_predictive[channel].shape == (CHAINS, 50, model.channel_nbins[channel])
        np.testing.assert_array_equal(idata.observed_data[channel].values,
                                      model.observed[model.channel_slices[channel]])
    assert idata.prior["mu"].shape == (1, 40)
    assert idata.prior_predictive["signal"].shape == (1, 40, 2)
    counts = idata.posterior_predictive[model.channels[0]].values
    assert np.all(counts == np.round(counts)) and counts.min() >= 0


def test_same_seed_same_draws_other_seed_other_draws():
    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    posterior = sampling.posterior_for(model)
    runs = [sampling.run_chains(posterior, chains=CHAINS, warmup=100, draws=130, seed=s, progress=False,
                                chunk_size=c).stats.theta for s, c in ((9, 100), (9, 37), (10, 100), (9, None))]
    np.testing.assert_array_equal(runs[0], runs[1])  # chunking does not change the draws
    # nor one call with room for 400 steps running 230 (the same chain; the mapping of the recorded
    # positions to the parameters, vectorised over 400 records, may round the last bit differently)
    np.testing.assert_allclose(runs[0], runs[3], rtol=1e-14, atol=0)
    assert runs[3].shape == runs[0].shape
    assert not np.array_equal(runs[0], runs[2])


def test_mode_and_whitening_are_computed_once_per_posterior_and_give_the_same_draws(monkeypatch):
    from bayeshf import laplace

    model = bayeshf.load(data_path("thesis/2_bin_corr.json"))
    calls = []
    search = laplace.find_mode_unconstrained
    monkeypatch.setattr(sampling, "find_mode_unconstrained", lambda post: calls.append(1) or search(post))
    fresh = Posterior(model)
    first = sampling.run_chains(fresh, chains=2, warmup=60, draws=40, seed=5, progress=False).stats.theta
    again = sampling.run_chains(fresh, chains=2, warmup=60, draws=40, seed=5, progress=False).stats.theta
    other_seed = sampling.run_chains(fresh, chains=2, warmup=60, draws=40, seed=6, progress=False).stats.theta
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other_seed)
    # a new posterior searches again and, the search being deterministic, draws the same
    other = sampling.run_chains(Posterior(model), chains=2, warmup=60, draws=40, seed=5, progress=False).stats.theta
    assert len(calls) == 2
    np.testing.assert_array_equal(first, other)
    # a copy bound to other data inherits none of the values derived from the old data, and samples as
    # a fresh posterior of the new data does (chains split over the devices: the model's device copies too)
    other_data = model.with_data(np.asarray(model.observed) + 3.0)
    bound = fresh.with_model(other_data)
    assert not {"_laplace", "_whitenings", "_replicas"} & set(bound.__dict__)
    kw = dict(chains=2, warmup=60, draws=40, seed=5, progress=False)
    np.testing.assert_array_equal(sampling.run_chains(bound, **kw).stats.theta,
                                  sampling.run_chains(Posterior(other_data, fresh.prior_set), **kw).stats.theta)
    # replacing a posterior's model by hand empties its caches too
    fresh.model = other_data
    np.testing.assert_array_equal(sampling.run_chains(fresh, **kw).stats.theta,
                                  sampling.run_chains(bound, **kw).stats.theta)
    assert len(calls) == 5  # bound, the fresh posterior of the new data and the replaced model searched once each
    # the cached arrays cannot be changed in place
    mode, covariance, cholesky = sampling._laplace(fresh)
    with pytest.raises(ValueError):
        mode[0] = 0.0


def test_target_acceptance_is_raised_only_for_large_models_of_interpolated_systematics():
    """0.99 for ttbar-like models (> 100 free parameters, mostly normsys/histosys), 0.8 for n-bin gammas; the CLI's draws."""
    import json

    from bayeshf.generators import nbin_workspace

    path = data_path("atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json")
    spec = json.loads(path.read_text())
    interpolated = {m["name"] for c in spec["channels"] for smp in c["samples"] for m in smp["modifiers"]
                    if m["type"] in ("normsys", "histosys")}  # oracle: the workspace itself
    ttbar = bayeshf.load(path)
    assert sampling.interpolated_parameters(ttbar) == len(interpolated)
    free = int((~sampling.posterior_for(ttbar).prior_set.fixed).sum())
    assert sampling.default_target_acceptance("nuts", free, len(interpolated)) == sampling.LARGE_MODEL_TARGET > 0.95
    assert sampling.default_draws(ttbar) == sampling.LARGE_MODEL_DRAWS  # what the CLI takes without --draws
    assert sampling.default_draws(ttbar, "mh") == 1000
    nbin = bayeshf.load(nbin_workspace(150))
    assert sampling.interpolated_parameters(nbin) == 0
    assert sampling.default_target_acceptance("nuts", 151, 0) == 0.9
    assert sampling.default_draws(nbin) == 1000
    assert sampling.default_target_acceptance("mh", 151, 0) == 0.234


def test_ctrl_c_keeps_the_draws_made_so_far(monkeypatch):
    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    original = sampling._program
    calls = {"n": 0}

    def interrupting_program(*args):
        start, run_chunk = original(*args)

        def run(*a):
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
            return run_chunk(*a)

        return start, run

    monkeypatch.setattr(sampling, "_program", interrupting_program)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = sampling.sample(model, chains=CHAINS, warmup=100, draws=300, seed=0, progress=False, chunk_size=50)
    assert idata.posterior.sizes["draw"] == 50  # chunks 1-3 done: 100 warm-up steps and 50 draws
    assert idata.posterior.attrs["interrupted"] == 1
    assert any("interrupted" in str(w.message) for w in caught)


def test_fixed_parameters_are_held_and_bad_arguments_refused():
    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    priors = {"priors": {"uncorr_bkguncrt[0]": {"family": "fixed", "value": 1.05}}}
    idata = sampling.sample(model, priors=priors, chains=CHAINS, warmup=50, draws=20, progress=False)
    assert np.all(idata.posterior["uncorr_bkguncrt"].values[..., 0] == 1.05)
    with pytest.raises(bayeshf.BayeshfError, match="unknown sampler"):
        sampling.sample(model, sampler="gibbs")
    with pytest.raises(bayeshf.BayeshfError, match="unknown metric"):
        sampling.sample(model, metric="full")


def test_prior_set_of_a_posterior_is_the_default():
    model = bayeshf.load(data_path("thesis/4_bin.json"))
    assert [e.family for e in sampling.posterior_for(model).prior_set.entries] == \
        [e.family for e in build_priors(model).entries]


def test_low_rank_whitening_removes_the_strong_correlations():
    rng = np.random.default_rng(3)
    d = 40
    # a correlation matrix with one long and one narrow direction (as the signal strength against many
    # per-bin parameters makes), and widths spanning two decades
    directions = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    shape = np.eye(d) + directions @ np.diag([20.0 - 1.0, 0.05 - 1.0]) @ directions.T
    correlation = shape / np.sqrt(np.outer(np.diag(shape), np.diag(shape)))
    widths = 10 ** rng.uniform(-1, 1, d)
    covariance = correlation * np.outer(widths, widths)
    correlation = covariance / np.outer(np.sqrt(np.diag(covariance)), np.sqrt(np.diag(covariance)))
    basis, weights, inverse_weights = sampling.low_rank_whitening(correlation, rank=4, min_ratio=1.5)
    assert 1 <= basis.shape[1] <= 4
    M = np.eye(d) + basis @ np.diag(weights) @ basis.T
    M_inv = np.eye(d) + basis @ np.diag(inverse_weights) @ basis.T
    np.testing.assert_allclose(M @ M_inv, np.eye(d), atol=1e-12)
    left = M_inv @ correlation @ M_inv.T  # the correlation left for the sampler
    np.testing.assert_allclose(basis.T @ left @ basis, np.eye(basis.shape[1]), atol=1e-10)  # whitened there
    before, after = np.linalg.eigvalsh(correlation), np.linalg.eigvalsh(left)
    assert before.max() / before.min() > 100
    assert after.max() / after.min() < 5


def test_low_rank_whitening_samples_the_same_posterior_as_dense_whitening(monkeypatch):
    from bayeshf.generators import nbin_workspace

    model = bayeshf.load(nbin_workspace(6))
    kw = dict(chains=2, warmup=400, draws=2000, progress=False, prior_draws=0, seed=4)
    dense = sampling.sample(model, **kw)
    monkeypatch.setattr(sampling, "DENSE_WHITENING", 2)  # widths + low rank from 3 parameters up
    low_rank = sampling.sample(model, **kw)
    assert int(low_rank.sample_stats["diverging"].sum()) == 0
    for name in dense.posterior.data_vars:
        a, b = dense.posterior[name], low_rank.posterior[name]
        se = np.hypot(az.mcse(dense, var_names=[name])[name].values, az.mcse(low_rank, var_names=[name])[name].values)
        assert np.all(np.abs(a.mean(("chain", "draw")).values - b.mean(("chain", "draw")).values) < 5 * se)
        se_sd = np.hypot(*(az.mcse(r, var_names=[name], method="sd")[name].values for r in (dense, low_rank)))
        assert np.all(np.abs(a.std(("chain", "draw")).values - b.std(("chain", "draw")).values) < 5 * se_sd)


def test_low_rank_whitening_is_chosen_from_low_rank_from_only_where_it_is_complete(monkeypatch):
    from bayeshf.generators import nbin_workspace

    def factor_ndim(model):
        (_, factor, basis, _), _ = sampling._whitening(Posterior(model), ())
        return factor.ndim, basis.shape[1]

    assert sampling.LOW_RANK_FROM <= 101 <= sampling.DENSE_WHITENING
    assert factor_ndim(bayeshf.load(nbin_workspace(100))) == (1, 2)  # signal strength vs the gammas: 2 directions
    assert factor_ndim(bayeshf.load(nbin_workspace(20)))[0] == 2  # below LOW_RANK_FROM: dense
    sbottom = bayeshf.load(data_path("sbottom/RegionA/BkgOnly.json"),
                           patches=[data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json")])
    monkeypatch.setattr(sampling, "LOW_RANK_FROM", 10)
    assert factor_ndim(sbottom) == (1, 4)  # 4 directions off 1 by more than 1.5x
    monkeypatch.setattr(sampling, "WHITENING_RANK", 3)
    assert factor_ndim(sbottom)[0] == 2  # more than WHITENING_RANK: the low rank would be incomplete


@pytest.mark.parametrize("gtol", [None, 1e-10])
def test_the_newton_solver_passes_negative_curvature_and_stops_on_a_bound(gtol):
    """f = (x^2 - 1)^2 + (y - 3)^2 on y <= 2 from x = 0.1 (curvature -3.88 in x): minimum f = 1 at x = 1, y = 2."""
    from bayeshf.newton import bounded_newton

    def value_and_grad(p):
        x, y = p
        return (x * x - 1) ** 2 + (y - 3) ** 2, np.array([4 * x * (x * x - 1), 2 * (y - 3)])

    def hessian(p):
        return np.diag([12 * p[0] ** 2 - 4, 2.0])

    result = bounded_newton(value_and_grad, hessian, np.array([0.1, 0.0]), np.zeros(2, bool),
                            np.array([-5.0, -5.0]), np.array([5.0, 2.0]), steps=50, gtol=gtol)
    assert result.value == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(result.x, [1.0, 2.0], atol=1e-8)
    assert result.at_bound.tolist() == [False, True]
    np.testing.assert_allclose(result.hessian, hessian(result.x))


def test_mode_search_with_an_lbfgs_start_finds_the_newton_mode(monkeypatch):
    from bayeshf import laplace
    from bayeshf.generators import nbin_workspace

    post = sampling.posterior_for(bayeshf.load(nbin_workspace(12)))
    newton_only = laplace.find_mode_unconstrained(post)
    monkeypatch.setattr(laplace, "NEWTON_ONLY", 5)  # 13 parameters: L-BFGS first
    with_lbfgs = laplace.find_mode_unconstrained(post)
    np.testing.assert_allclose(with_lbfgs[0], newton_only[0], atol=1e-7)
    np.testing.assert_allclose(with_lbfgs[1], newton_only[1], rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------- converge or say so


def test_target_ess_draws_until_reached_and_keeps_the_draws_of_a_longer_run():
    from bayeshf.diagnostics import convergence_table, summarize

    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    posterior = sampling.posterior_for(model)
    raw = sampling.run_chains(posterior, chains=CHAINS, warmup=150, draws=40, seed=4, progress=False,
                              chunk_size=100, target_ess=250, max_time=120)
    assert raw.stop == "converged" and raw.extensions >= 1 and raw.draws_done > 40
    bulk, tail, rhat = convergence_table(raw.stats.theta)
    assert bulk.min() >= 250 and tail.min() >= 250 and rhat.max() < 1.01
    # the extra draws continue the chains as a longer run would have drawn them
    longer = sampling.run_chains(posterior, chains=CHAINS, warmup=150, draws=raw.draws_done, seed=4, progress=False,
                                 chunk_size=100)
    np.testing.assert_array_equal(raw.stats.theta, longer.stats.theta)
    idata = sampling.sample(model, chains=CHAINS, warmup=150, draws=40, seed=4, progress=False, chunk_size=100,
                            target_ess=250, max_time=120)
    summary = summarize(idata)
    assert summary.convergence.reached and summary.to_dict()["converged"] is True and not summary.warnings
    assert idata.posterior.attrs["stop"] == "converged" and idata.posterior.sizes["draw"] == raw.draws_done


def test_chains_never_start_where_the_density_is_undefined():
    """A start where a histosys makes an expected count negative (NaN in pyhf) is moved towards the centre
    (a chain started there had every transition divergent and never moved: sbottom RegionC seed 0)."""
    from bayeshf.laplace import _z_value_and_grad

    model = bayeshf.load(data_path("pyhf-validation/2bin_2channel_coupledhisto.json"))
    posterior = sampling.posterior_for(model)
    names = list(model.par_names)
    theta = np.asarray(model.init, float).copy()
    theta[names.index("coupled_histosys")], theta[names.index("mu")] = -3.5, 0.15
    bad = np.asarray(posterior.unconstrain(jnp.asarray(theta)))
    centre = np.asarray(posterior.unconstrain(jnp.asarray(model.init, dtype=float)))

    def finite(z):
        value, grad = _z_value_and_grad(posterior.structure, posterior.model, z)
        return np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))

    assert finite(centre)  # the start is finite since the posterior continues into the hole (tests/test_hole.py)
    good = centre + 0.01
    starts = sampling._finite_starts(posterior, np.stack([good, bad]), centre)
    np.testing.assert_array_equal(starts[0], good)  # a finite start is kept as drawn
    assert finite(starts[1]) and not np.array_equal(starts[1], bad)


def test_extra_draws_stop_at_the_deadline_when_the_pace_changes(monkeypatch):
    """Extra draws priced at the pace so far still stop at max_time if the pace changes while they run."""
    import types

    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    posterior = sampling.posterior_for(model)
    state = {"extending": False, "late": False}
    real_extra, real_unpack = sampling.extra_draws, sampling.unpack_records

    def extra(*args, **kwargs):
        state["extending"] = True
        return 1000

    def unpack(records):
        state["late"] = state["extending"]  # the first extra chunk "takes" an hour
        return real_unpack(records)

    clock = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + (3600.0 if state["late"] else 0.0))
    monkeypatch.setattr(sampling, "extra_draws", extra)
    monkeypatch.setattr(sampling, "unpack_records", unpack)
    monkeypatch.setattr(sampling, "time", clock)
    raw = sampling.run_chains(posterior, chains=CHAINS, warmup=100, draws=100, seed=2, progress=False,
                              chunk_size=100, target_ess=400, max_time=600)
    assert raw.stop == "max_time" and raw.draws_done == 200  # one chunk of the 1000 asked for, then stop


def test_a_run_out_of_time_says_so_in_one_line_naming_the_parameters():
    from bayeshf.diagnostics import summarize

    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    idata = sampling.sample(model, chains=CHAINS, warmup=100, draws=30, seed=1, progress=False,
                            target_ess=10**6, max_time=1e-3)
    assert idata.posterior.attrs["stop"] == "max_time" and idata.posterior.sizes["draw"] == 30
    summary = summarize(idata)
    document = summary.to_dict()
    assert document["converged"] is False and document["convergence"]["stop"] == "max_time"
    assert set(document["convergence"]["short"]) == {"mu", "uncorr_bkguncrt[0]", "uncorr_bkguncrt[1]"}
    lines = [w for w in summary.warnings if "NOT CONVERGED" in w]
    assert len(lines) == 1 and "\n" not in lines[0] and "uncorr_bkguncrt" in lines[0] and "--max-time" in lines[0]
    with pytest.raises(bayeshf.BayeshfError, match="max_time"):
        sampling.sample(model, chains=CHAINS, draws=10, progress=False, target_ess=100, max_time=-1)


def test_extra_draws_follow_the_shortfall_and_the_r_hat():
    rng = np.random.default_rng(0)
    iid = rng.normal(size=(4, 500, 3))  # ESS about 2000 per column
    assert sampling.extra_draws(iid, 1000) == 0
    more = sampling.extra_draws(iid, 4000)  # about 2x short: about as many draws again (within the bounds)
    assert 0.7 * 500 <= more <= sampling.MAX_EXTENSION * 500
    assert sampling.extra_draws(iid, 10**6) == sampling.MAX_EXTENSION * 500
    stuck = iid.copy()
    stuck[0, :, 1] += 1.0  # one chain elsewhere: R-hat far above 1.01 whatever the ESS target
    assert sampling.extra_draws(stuck, 10) > 0


# --------------------------------------------------------------------------- the numbers physicists quote


def _counting_reference(n, s, b, upper=20.0):
    """mu | n for n ~ Poisson(mu s + b), flat mu on [0, upper]: CDF, density and HDIs by quadrature (scipy)."""
    from scipy import integrate, optimize

    def density(mu):
        return np.exp(n * np.log(mu * s + b) - mu * s - math.lgamma(n + 1))

    norm = integrate.quad(density, 0, upper, limit=200)[0]

    def cdf(x):
        return integrate.quad(density, 0, x, limit=200)[0] / norm

    def hdi(p):  # density level whose region holds p: the two ends have equal density (or start at 0)
        mode = max((n - b) / s, 0.0)

        def ends(level):
            lower = 0.0 if density(0.0) >= level else optimize.brentq(lambda x: density(x) - level, 0.0, mode)
            upper_ = optimize.brentq(lambda x: density(x) - level, mode, upper)
            return lower, upper_

        level = optimize.brentq(lambda h: cdf(ends(h)[1]) - cdf(ends(h)[0]) - p, 1e-12, density(mode) * (1 - 1e-9))
        return ends(level)

    return cdf, hdi


def test_credible_upper_limit_hdis_and_mode_of_a_counting_experiment_match_quadrature():
    """n ~ Poisson(4 mu + 2), n = 8, flat mu: mode (n - b) / s = 1.5, the rest by numerical integration."""
    from scipy import optimize

    from bayeshf.diagnostics import summarize

    n, s, b = 8, 4.0, 2.0
    spec = one_bin([{"name": "signal", "data": [s], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {"name": "background", "data": [b], "modifiers": []}], n)
    model = bayeshf.load(spec)
    idata = sampling.sample(model, chains=4, warmup=300, draws=2000, seed=5, progress=False)
    summary = summarize(idata)
    poi = summary.poi
    draws = idata.posterior["mu"].values
    cdf, hdi = _counting_reference(n, s, b)
    limit = optimize.brentq(lambda x: cdf(x) - 0.95, 0.0, 20.0)
    assert poi.name == "mu" and abs(poi.upper_limit_95 - limit) < 4 * poi.upper_limit_95_mcse
    assert summary.to_dict()["poi"]["upper_limit_95"] == pytest.approx(poi.upper_limit_95)
    for probability, (lower, upper) in ((0.68, poi.hdi_68), (0.95, poi.hdi_95)):
        reference = hdi(probability)
        for estimate, exact in zip((lower, upper), reference):
            mcse = float(az.mcse(draws, method="quantile", prob=cdf(exact)))
            assert abs(estimate - exact) < 6 * mcse + 0.01, (probability, estimate, exact)
    # the marginal KDE's maximum scatters by 0.1 sd over seeds for 8000 independent draws of such a Gamma-like density
    assert abs(poi.mode - (n - b) / s) < 0.3 * draws.std()
    row = summary.rows[0]
    assert row.name == "mu" and row.q95 == pytest.approx(poi.upper_limit_95) and row.hdi_95_lower == poi.hdi_95[0]
    assert abs(row.q50 - optimize.brentq(lambda x: cdf(x) - 0.5, 0.0, 20.0)) < 4 * float(
        az.mcse(draws, method="quantile", prob=0.5))


# --------------------------------------------------------------------------- normsys yield factors


def _pulled_normsys(n_observed, code=None):
    """One bin of 1000 expected events with a +-50% normsys, mu fixed: alpha is pinned by the data."""
    spec = one_bin([{"name": "bkg", "data": [1000.0],
                     "modifiers": [{"name": "norm", "type": "normsys", "data": {"hi": 1.5, "lo": 0.5}},
                                   {"name": "mu", "type": "normfactor", "data": None}]}], n_observed, fixed_mu=True)
    return bayeshf.load(spec, modifier_settings={"normsys": {"interpcode": code}} if code else None)


def test_yield_factors_are_chosen_for_strongly_pulled_large_normsys_only():
    from bayeshf.posterior import Posterior

    ttbar = Posterior(bayeshf.load(data_path("atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json")))
    chosen = {ttbar.free_names[i] for i in ttbar.yields.index}
    assert {"WjetsNorm_1b", "OtherNorm", "MultijetNorm_SR1_ejets"} <= chosen
    assert not any(name.startswith(("JET_", "weight_", "ttbar_FSR")) for name in chosen)  # effects of a few %
    small = Posterior(bayeshf.load(data_path("thesis/4_bin.json")))
    assert small.yields is None
    sbottom = Posterior(bayeshf.load(data_path("sbottom/RegionA/BkgOnly.json"),
                                     patches=[data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json")]))
    assert sbottom.yields is None


@pytest.mark.parametrize("code", ["code4", "code1"])
def test_yield_factor_map_round_trips_and_its_log_jacobian_is_the_derivative(code):
    from bayeshf.posterior import Posterior

    model = _pulled_normsys(700, code)
    posterior = Posterior(model)
    assert posterior.yields is not None and posterior.yields.code == code
    k = int(posterior.free_index[posterior.yields.index[0]])
    theta = np.array(model.init, dtype=float)
    for alpha in (-4.5, -2.0, -1.0, -0.7, 0.0, 0.3, 1.0, 2.5):
        theta[k] = alpha
        z = posterior.unconstrain(theta)
        # z maps to the pyhf factor: the model's expected count over the nominal; linearly away from the walls
        factor = float(model.expected_counts(theta)[0]) / 1000.0
        zy = jnp.asarray(z[posterior.yields.index])
        assert float(posterior.yields.to_y(zy)[0]) == pytest.approx(factor, rel=1e-12)
        if abs(alpha) <= 3:
            assert abs(float(posterior.yields.log_wall_slope(zy)[0])) < 1e-2
        assert float(posterior.constrain(jnp.asarray(z))[k]) == pytest.approx(alpha, abs=1e-12)
        if code == "code1" and alpha == 0.0:
            continue  # code1 has a kink at 0: no central difference there
        # log |d alpha / d y| and the JVP of the inverse map against a central difference
        y, h = float(z[posterior.yields.index[0]]), 1e-6

        def inverse(v):
            return posterior.constrain(jnp.asarray(z).at[posterior.yields.index[0]].set(v))[k]

        slope = float(inverse(y + h) - inverse(y - h)) / (2 * h)
        jacobian = float(posterior.log_jacobian(jnp.asarray(z)) - Posterior.log_jacobian(
            _without_yields(posterior), jnp.asarray(z)))
        assert jacobian == pytest.approx(math.log(slope), abs=1e-6)
        assert float(jax.grad(inverse)(y)) == pytest.approx(slope, rel=1e-6)
    # every z lies inside the box [-5, 5], and the density falls smoothly to 0 at its ends (no cliff for a trajectory
    # to step off): finite, with a finite gradient, however far z goes
    z = jnp.asarray(posterior.unconstrain(np.array(model.init, dtype=float)))
    for far in (-1e4, -3.0, 30.0, 1e4):
        point = z.at[posterior.yields.index[0]].set(far)
        assert -5.0 <= float(posterior.constrain(point)[k]) <= 5.0
        value, grad = jax.value_and_grad(posterior.logdensity_fn)(point)
        assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


def _without_yields(posterior):
    import copy

    plain = copy.copy(posterior)
    plain.yields = None
    return plain


@pytest.mark.parametrize("n_observed", [620, 1150, 40])
def test_sampling_the_yield_factor_gives_the_posterior_of_alpha(n_observed):
    """alpha | n for n ~ Poisson(1000 f(alpha)), alpha ~ N(0, 1) on [-5, 5]: quantiles by quadrature (620: in the
    exponential branch below -1, 1150: in the code4 polynomial, 40: piled against the lower bound f(-5) = 31 events,
    where a hard end of the yield factor's box made trajectories diverge)."""
    from scipy import integrate, optimize

    model = _pulled_normsys(n_observed)
    posterior = sampling.posterior_for(model)
    assert posterior.yields is not None
    k = int(posterior.free_index[posterior.yields.index[0]])
    grid_theta = np.tile(np.asarray(model.init, dtype=float), (1, 1))

    def log_density(alpha):
        theta = grid_theta[0].copy()
        theta[k] = alpha
        mean = float(model.expected_counts(theta)[0])
        return n_observed * math.log(mean) - mean - 0.5 * alpha * alpha

    alphas = np.linspace(-5, 5, 4001)
    values = np.array([log_density(a) for a in alphas])
    weights = np.exp(values - values.max())
    cdf = integrate.cumulative_trapezoid(weights, alphas, initial=0.0)
    cdf /= cdf[-1]

    class Reference:
        @staticmethod
        def ppf(p):
            return float(np.interp(p, cdf, alphas))

    idata = sampling.sample(model, chains=CHAINS, warmup=300, draws=1500, seed=3, progress=False)
    draws = idata.posterior["norm"].values
    check_quantiles(draws, Reference, probs=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99))
    assert int(idata.sample_stats["diverging"].sum()) == 0
