"""Where interpolation drives an expected count to zero or below inside the box (the 'hole').

pyhf's logpdf is NaN or -inf there. The posterior (bayeshf.posterior.main_log_likelihood) equals pyhf
wherever every bin's Poisson term is within HOLE_DEPTH of its maximum, continues linearly below, is
finite everywhere, and its trajectories no longer blow up there. Oracles: pyhf's logpdf, a quadrature
of pyhf's density, leapfrog energy errors.
"""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayeshf
from bayeshf import sampling
from bayeshf.posterior import HOLE_DEPTH, main_log_likelihood
from tests.conftest import data_path, pyhf_model

COUPLED = "pyhf-validation/2bin_2channel_coupledhisto.json"


@pytest.fixture(scope="module")
def coupled():
    model = bayeshf.load(data_path(COUPLED))
    return model, sampling.posterior_for(model)


def _pyhf_pars(model, pyhf_model_, theta):
    out = np.array(pyhf_model_.config.suggested_init(), dtype=float)
    for i, name in enumerate(model.par_names):
        out[pyhf_model_.config.par_slice(name)] = theta[i]
    return out


@pytest.mark.parametrize("path", [COUPLED, "pyhf-validation/2bin_histosys.json"])
def test_equal_to_pyhf_where_counts_are_positive_and_finite_elsewhere(path):
    model = bayeshf.load(data_path(path))
    reference, data = pyhf_model(data_path(path))
    lower, upper = np.array(model.bounds, dtype=float).T
    rng = np.random.default_rng(7)
    observed = np.asarray(model.arrays.observed)
    term_max = np.sum(np.where(observed > 0, observed * np.log(np.maximum(observed, 1e-300)), 0.0) - observed)
    value_and_grad = jax.jit(jax.value_and_grad(lambda t: main_log_likelihood(model, t)))
    kinds = {"positive": 0, "hole": 0}
    for _ in range(300):
        theta = np.where(np.asarray(model.fixed, bool), np.asarray(model.init, float), rng.uniform(lower, upper))
        counts = np.asarray(model.expected_counts(theta))
        ours, grad = value_and_grad(jnp.asarray(theta))
        ours = float(ours) + float(model.log_constraint(theta))
        pyhf_value = float(reference.logpdf(_pyhf_pars(model, reference, theta), data)[0])
        assert np.isfinite(ours) and np.all(np.isfinite(np.asarray(grad)))
        terms = observed * np.log(np.maximum(counts, 1e-300)) - counts
        each_max = np.where(observed > 0, observed * np.log(np.maximum(observed, 1e-300)), 0.0) - observed
        if np.all(counts > 0) and np.all((observed == 0) | (terms > each_max - HOLE_DEPTH)):
            kinds["positive"] += 1
            np.testing.assert_allclose(ours, pyhf_value, rtol=1e-10, atol=1e-8)
        elif np.any((counts <= 0) & (observed > 0)):
            kinds["hole"] += 1
            assert not np.isfinite(pyhf_value)
            # continued below: never above the bins' joint maximum less HOLE_DEPTH
            main = ours - float(model.log_constraint(theta))
            assert main <= term_max - float(np.sum(jax.scipy.special.gammaln(observed + 1.0))) - HOLE_DEPTH
    assert kinds["positive"] >= 20 and (path != COUPLED or kinds["hole"] >= 20), kinds


def test_leapfrog_trajectories_do_not_blow_up_near_the_hole(coupled):
    """From a posterior point at a step size some chains adapt to (0.45, the run where seed 3 diverged)
    and the metric of that run, 8 leapfrog steps with fresh momenta: with pyhf's density 5% of them
    ended in NaN or an energy error above 1000 (mu flung to 0, a bin's count collapsing under the
    coupled histosys); with the continuation none."""
    model, posterior = coupled
    zmode, _, factor = sampling._laplace(posterior)
    imm, eps = np.array([2.847, 4.820]), 0.4508
    theta = np.asarray(model.init, dtype=float).copy()
    theta[model.par_names.index("coupled_histosys")], theta[model.par_names.index("mu")] = 1.1695, 1.2009
    u0 = np.linalg.solve(factor, np.asarray(posterior.unconstrain(theta)) - zmode)
    L, zm = jnp.asarray(factor), jnp.asarray(zmode)
    value_and_grad = jax.value_and_grad(lambda u: posterior.logdensity_fn(zm + L @ u))

    def energy_errors(p0, e):
        v0, g0 = value_and_grad(jnp.asarray(u0))
        h0 = -v0 + 0.5 * jnp.sum(p0 * p0 * imm)

        def step(carry, _):
            x, p, g = carry
            p = p + 0.5 * e * g
            x = x + e * imm * p
            v, g = value_and_grad(x)
            p = p + 0.5 * e * g
            return (x, p, g), -v + 0.5 * jnp.sum(p * p * imm) - h0

        return jax.lax.scan(step, (jnp.asarray(u0), p0, g0), None, length=8)[1]

    rng = np.random.default_rng(0)
    n = 2000
    momenta = rng.normal(size=(n, 2)) / np.sqrt(imm)
    steps = np.where(rng.uniform(size=n) < 0.5, eps, -eps)
    dh = np.asarray(jax.jit(jax.vmap(energy_errors))(jnp.asarray(momenta), jnp.asarray(steps)))
    assert np.all(np.isfinite(dh)) and np.abs(dh).max() < 1000.0, np.nanmax(np.abs(dh))


def test_sampling_matches_quadrature_of_pyhf_density_with_no_divergence(coupled):
    """NUTS at the defaults on seeds where pyhf's density gave a divergent transition (3, 8, 19 of 0-19,
    4 chains x (1000 + 1500)): none now, and the marginal quantiles of both parameters agree with a
    quadrature of pyhf's density (zero where it is not finite) within 4 Monte Carlo errors."""
    model, posterior = coupled
    names = posterior.free_names
    alpha = np.linspace(-5.0, 5.0, 1201)
    mu = np.linspace(0.0, 10.0, 1201)
    grid = np.zeros((alpha.size * mu.size, model.npars))
    aa, mm = np.meshgrid(alpha, mu, indexing="ij")
    grid[:, model.par_names.index("coupled_histosys")] = aa.ravel()
    grid[:, model.par_names.index("mu")] = mm.ravel()
    log_density = np.asarray(jax.jit(jax.vmap(posterior.log_posterior))(jnp.asarray(grid))).reshape(aa.shape)
    weight = np.exp(np.where(np.isfinite(log_density), log_density - np.nanmax(log_density), -np.inf))
    marginals = {"coupled_histosys": (alpha, weight.sum(axis=1)), "mu": (mu, weight.sum(axis=0))}
    draws = []
    for seed in (3, 8, 19):
        raw = sampling.run_chains(posterior, seed=seed, chains=4, warmup=1000, draws=1500, progress=False)
        assert int(np.asarray(raw.stats.diverging).sum()) == 0, seed
        draws.append(np.asarray(raw.stats.theta))
    theta = np.concatenate(draws, axis=0)  # (12, 1500, 2)
    for k, name in enumerate(names):
        x, w = marginals[name]
        cdf = np.cumsum(w) / w.sum()
        for p in (0.05, 0.25, 0.5, 0.75, 0.95):
            exact = float(np.interp(p, cdf, x))
            estimate = float(np.quantile(theta[..., k], p))
            mcse = float(az.mcse(theta[..., k], method="quantile", prob=p))
            assert abs(estimate - exact) < 4 * mcse + (x[1] - x[0]), (name, p, estimate, exact, mcse)


def test_tiny_observed_counts_keep_a_finite_gradient():
    """SRee_SRmm_Srem's empty bins hold 1e-8 events, where the continuation's c = n exp(-1 - K / n) underflows
    to 0: its slope n / c must not turn the (unselected) gradient into NaN. Value and gradient against pyhf."""
    path = "atlas-examples/SRee_SRmm_Srem_v2.json"
    model = bayeshf.load(data_path(path))
    reference, data = pyhf_model(data_path(path))
    observed = np.asarray(model.arrays.observed)
    assert np.any((observed > 0) & (observed < 1e-6))
    theta = np.asarray(model.init, dtype=float)
    value, grad = jax.value_and_grad(lambda t: main_log_likelihood(model, t))(jnp.asarray(theta))
    grad = np.asarray(grad) + np.asarray(jax.grad(lambda t: model.log_constraint(t))(jnp.asarray(theta)))

    def pyhf_logpdf(t):
        return float(reference.logpdf(_pyhf_pars(model, reference, t), data)[0])

    np.testing.assert_allclose(float(value) + float(model.log_constraint(theta)), pyhf_logpdf(theta), rtol=1e-10)
    h = 1e-6
    free = np.flatnonzero(~np.asarray(model.fixed, bool))
    central = [(pyhf_logpdf(theta + h * e) - pyhf_logpdf(theta - h * e)) / (2 * h) for e in np.eye(len(theta))[free]]
    np.testing.assert_allclose(grad[free], central, rtol=1e-5, atol=1e-6)
    z, covariance = sampling._laplace(sampling.posterior_for(model))[:2]
    assert np.all(np.isfinite(z)) and covariance is not None

