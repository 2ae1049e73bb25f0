"""bayeshf's sampling kernels (bayeshf.kernels): its parts against blackjax's, its draws against known distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import bayeshf
from bayeshf import kernels as nuts, sampling
from bayeshf.generators import nbin_workspace


def _blackjax_turning_sequence(momenta, imm):
    """blackjax's iterative (numpyro) criterion over the steps of one doubling: turning flag per step."""
    from blackjax.mcmc import metrics, termination

    metric = metrics.default_metric(imm)
    new_state, update, is_met = termination.iterative_uturn_numpyro(metric.check_turning)
    from blackjax.mcmc.integrators import IntegratorState

    def body(carry, x):
        state, p_sum = carry
        i, p = x
        p_sum = p_sum + p
        state = update(state, p_sum, p, i)
        return (state, p_sum), is_met(state, p_sum, p)

    state = new_state(IntegratorState(momenta[0], 0.0, momenta[0], momenta[0]), 10)
    run = jax.jit(lambda s, m: jax.lax.scan(body, (s, jnp.zeros_like(m[0])), (jnp.arange(m.shape[0]), m))[1])
    return run(state, momenta)


@jax.jit
def _ours_turning_sequence(momenta, imm):
    d = momenta.shape[1]

    def body(carry, x):
        ckpt, p_sum = carry
        i, p = x
        p_sum = p_sum + p
        ckpt = nuts.checkpoint_update(ckpt, i, p, p_sum)
        return (ckpt, p_sum), nuts.checkpoint_turning(ckpt, i, p, p_sum, imm)

    return jax.lax.scan(body, (jnp.zeros((11, 2 * d)), jnp.zeros(d)), (jnp.arange(momenta.shape[0]), momenta))[1]


@pytest.mark.parametrize("dense", [False, True])
def test_checkpoint_criterion_equals_blackjax_iterative_uturn(dense):
    rng = np.random.default_rng(1)
    d = 3
    checked = 0
    for trial in range(12):
        # a slowly rotating momentum with noise: some sequences turn early, some late, some never
        steps = 2 ** rng.integers(2, 6)
        angle = rng.uniform(0.05, 0.6) * np.arange(steps)
        base = np.stack([np.cos(angle), np.sin(angle), 0.3 * np.ones(steps)], axis=1)
        momenta = jnp.asarray(base + rng.normal(0, rng.uniform(0, 0.4), (steps, d)))
        if dense:
            a = rng.normal(size=(d, d))
            imm = jnp.asarray(a @ a.T + d * np.eye(d))
        else:
            imm = jnp.asarray(rng.uniform(0.2, 3.0, d))
        ours = np.asarray(_ours_turning_sequence(momenta, imm))
        theirs = np.asarray(_blackjax_turning_sequence(momenta, imm))
        np.testing.assert_array_equal(ours, theirs, err_msg=f"trial {trial}")
        checked += int(theirs.sum())
    assert checked > 0  # the sequences did exercise turning subtrees


def test_uniform_stream_is_uniform_and_uncorrelated():
    seeds = jax.random.bits(jax.random.key(0), (64,), jnp.uint64)
    counters = jnp.arange(2100)
    u = np.asarray(jax.vmap(lambda s: nuts._uniform(s, counters))(seeds))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    # neighbouring counters and neighbouring seeds are not correlated (SE of a correlation ~ 1/sqrt(n))
    for a, b in ((u[:, :-1], u[:, 1:]), (u[:-1], u[1:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size)


def _run_kernel(logdensity, x0, imm, step_size, n, seed=0, chains=4):
    import blackjax

    step = jax.jit(nuts.build_step(logdensity, 10))

    def one_chain(key, x):
        state = blackjax.mcmc.hmc.init(x, logdensity)

        def body(s, k):
            s, info = step(k, s, step_size, imm)
            return s, (s.position, info[1], info[3])

        return jax.lax.scan(body, state, jax.random.split(key, n))[1]

    keys = jax.random.split(jax.random.key(seed), chains)
    return jax.jit(jax.vmap(one_chain))(keys, jnp.broadcast_to(x0, (chains,) + x0.shape))


@pytest.mark.parametrize("dense", [False, True])
def test_kernel_samples_a_correlated_gaussian(dense):
    # N(mu, cov) with strong correlation and unequal scales; the metric is deliberately not the covariance
    mu = jnp.asarray([1.0, -2.0, 0.5])
    cov = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.2], [0.1, 0.2, 0.25]])
    prec = jnp.asarray(np.linalg.inv(cov))

    def logdensity(x):
        r = x - mu
        return -0.5 * r @ prec @ r

    imm = jnp.asarray(np.diag(cov) * 1.5 if not dense else cov * 0.7 + 0.3 * np.eye(3))
    draws, divergent, n_steps = _run_kernel(logdensity, jnp.zeros(3), imm, 0.4, 3000)
    x = np.asarray(draws)[:, 500:]
    assert not np.asarray(divergent).any()
    assert np.asarray(n_steps).max() > 1
    import arviz as az

    ess = az.ess(az.convert_to_dataset(x)).to_array().values.min()
    assert ess > 1000
    se = np.sqrt(np.diag(cov) / ess)
    np.testing.assert_array_less(np.abs(x.reshape(-1, 3).mean(0) - np.asarray(mu)), 5 * se)
    # the covariance within a few percent (relative SE of a variance ~ sqrt(2 / ess))
    sample_cov = np.cov(x.reshape(-1, 3).T)
    np.testing.assert_allclose(np.diag(sample_cov), np.diag(cov), rtol=6 * np.sqrt(2 / ess))
    assert abs(np.corrcoef(x.reshape(-1, 3).T)[0, 1] - 0.8) < 0.05


def test_kernel_is_deterministic_in_the_key():
    def logdensity(x):
        return -0.5 * jnp.sum(x * x) - jnp.sum(jnp.abs(x) ** 3) / 3

    a = _run_kernel(logdensity, jnp.ones(4), jnp.ones(4), 0.5, 50, seed=3)
    b = _run_kernel(logdensity, jnp.ones(4), jnp.ones(4), 0.5, 50, seed=3)
    c = _run_kernel(logdensity, jnp.ones(4), jnp.ones(4), 0.5, 50, seed=4)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def test_kernel_reports_divergence_and_keeps_the_state():
    # a funnel-like wall: any step of size 5 from the origin of a steep quartic diverges
    def logdensity(x):
        return -1e4 * jnp.sum(x ** 4)

    draws, divergent, n_steps = _run_kernel(logdensity, jnp.full(2, 0.1), jnp.ones(2), 5.0, 5, chains=1)
    assert np.asarray(divergent).all()
    np.testing.assert_allclose(np.asarray(draws)[0], 0.1)


def test_nuts_and_blackjax_nuts_sample_the_same_posterior():
    model = bayeshf.load(nbin_workspace(3))
    runs = {name: sampling.sample(model, sampler=name, chains=4, warmup=500, draws=1500, seed=2, progress=False,
                                  prior_draws=0)
            for name in ("nuts", "blackjax-nuts")}
    import arviz as az

    for name in runs["nuts"].posterior.data_vars:
        a, b = (runs[k].posterior[name] for k in runs)
        se = np.hypot(az.mcse(runs["nuts"], var_names=[name])[name].values,
                      az.mcse(runs["blackjax-nuts"], var_names=[name])[name].values)
        diff = a.mean(("chain", "draw")).values - b.mean(("chain", "draw")).values
        assert np.all(np.abs(diff) < 5 * se), (name, diff, se)
        sd_a, sd_b = a.std(("chain", "draw")).values, b.std(("chain", "draw")).values
        np.testing.assert_allclose(sd_a, sd_b, rtol=0.1)
    for idata in runs.values():
        assert int(idata.sample_stats["diverging"].sum()) == 0
        assert float(az.rhat(idata).to_array().max()) < 1.01
        assert "tree_depth" in idata.sample_stats


def _run_hmc(logdensity, x0, imm, step_size, n_leapfrog, n, seed=0, chains=4):
    import blackjax

    step = nuts.build_hmc_step(logdensity, n_leapfrog)

    def one_chain(key, x):
        state = blackjax.mcmc.hmc.init(x, logdensity)

        def body(s, k):
            s, info = step(k, s, step_size, imm)
            return s, (s.position, info[0], info[1])

        return jax.lax.scan(body, state, jax.random.split(key, n))[1]

    keys = jax.random.split(jax.random.key(seed), chains)
    return jax.jit(jax.vmap(one_chain))(keys, jnp.broadcast_to(x0, (chains,) + x0.shape))


@pytest.mark.parametrize("dense", [False, True])
def test_hmc_kernel_samples_a_correlated_gaussian(dense):
    mu = jnp.asarray([1.0, -2.0, 0.5])
    cov = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.2], [0.1, 0.2, 0.25]])
    prec = jnp.asarray(np.linalg.inv(cov))

    def logdensity(x):
        r = x - mu
        return -0.5 * r @ prec @ r

    imm = jnp.asarray(np.diag(cov) if not dense else cov)
    # jittered path lengths are not needed here: 7 steps of 0.3 is far from a periodic orbit of this target
    draws, p_accept, divergent = _run_hmc(logdensity, jnp.zeros(3), imm, 0.3, 7, 4000)
    x = np.asarray(draws)[:, 500:].reshape(-1, 3)
    assert not np.asarray(divergent).any()
    assert 0.5 < float(np.mean(p_accept)) < 1.0  # the Metropolis step does reject sometimes
    import arviz as az

    ess = az.ess(az.convert_to_dataset(np.asarray(draws)[:, 500:])).to_array().values.min()
    se = np.sqrt(np.diag(cov) / ess)
    np.testing.assert_array_less(np.abs(x.mean(0) - np.asarray(mu)), 5 * se)
    np.testing.assert_allclose(np.diag(np.cov(x.T)), np.diag(cov), rtol=6 * np.sqrt(2 / ess))


def test_hmc_kernel_rejects_by_the_energy_error():
    """A step size far too large: the end point's energy is much higher, so the state stays put."""
    def logdensity(x):
        return -0.5 * jnp.sum(x * x) * 100.0

    draws, p_accept, divergent = _run_hmc(logdensity, jnp.full(2, 0.01), jnp.ones(2), 1.0, 3, 20, chains=2)
    assert float(np.max(p_accept)) < 1e-3
    np.testing.assert_allclose(np.asarray(draws), 0.01)


def test_hmc_and_blackjax_hmc_sample_the_same_posterior():
    model = bayeshf.load(nbin_workspace(3))
    runs = {name: sampling.sample(model, sampler=name, chains=4, warmup=500, draws=1500, seed=2, progress=False,
                                  prior_draws=0, num_integration_steps=8)
            for name in ("hmc", "blackjax-hmc")}
    import arviz as az

    for name in runs["hmc"].posterior.data_vars:
        a, b = (runs[k].posterior[name] for k in runs)
        se = np.hypot(az.mcse(runs["hmc"], var_names=[name])[name].values,
                      az.mcse(runs["blackjax-hmc"], var_names=[name])[name].values)
        diff = a.mean(("chain", "draw")).values - b.mean(("chain", "draw")).values
        assert np.all(np.abs(diff) < 5 * se), (name, diff, se)
        np.testing.assert_allclose(a.std(("chain", "draw")).values, b.std(("chain", "draw")).values, rtol=0.1)
    for idata in runs.values():  # static HMC mixes slower than NUTS: converged, not necessarily to 1.01
        assert float(az.rhat(idata).to_array().max()) < 1.05
        assert "tree_depth" not in idata.sample_stats


@pytest.mark.parametrize("dense", [False, True])
def test_mh_kernel_samples_a_correlated_gaussian(dense):
    import blackjax

    mu = jnp.asarray([1.0, -2.0, 0.5])
    cov = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.2], [0.1, 0.2, 0.25]])
    prec = jnp.asarray(np.linalg.inv(cov))

    def logdensity(x):
        r = x - mu
        return -0.5 * r @ prec @ r

    imm = jnp.asarray(np.diag(cov) if not dense else cov)
    step = nuts.build_mh_step(logdensity)

    def one_chain(key):
        def body(s, k):
            s, info = step(k, s, 1.2, imm)
            return s, (s.position, info[0])

        return jax.lax.scan(body, blackjax.mcmc.random_walk.init(mu, logdensity), jax.random.split(key, 20000))[1]

    draws, p_accept = jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(5), 4))
    x = np.asarray(draws)[:, 1000:]
    assert 0.1 < float(np.mean(p_accept)) < 0.9
    import arviz as az

    ess = az.ess(az.convert_to_dataset(x)).to_array().values.min()
    assert ess > 500
    flat = x.reshape(-1, 3)
    np.testing.assert_array_less(np.abs(flat.mean(0) - np.asarray(mu)), 5 * np.sqrt(np.diag(cov) / ess))
    np.testing.assert_allclose(np.diag(np.cov(flat.T)), np.diag(cov), rtol=6 * np.sqrt(2 / ess))


def test_mh_and_blackjax_mh_sample_the_same_posterior():
    model = bayeshf.load(nbin_workspace(2))
    runs = {name: sampling.sample(model, sampler=name, chains=4, warmup=1000, draws=6000, seed=4, progress=False,
                                  prior_draws=0)
            for name in ("mh", "blackjax-mh")}
    import arviz as az

    for name in runs["mh"].posterior.data_vars:
        a, b = (runs[k].posterior[name] for k in runs)
        se = np.hypot(az.mcse(runs["mh"], var_names=[name])[name].values,
                      az.mcse(runs["blackjax-mh"], var_names=[name])[name].values)
        diff = a.mean(("chain", "draw")).values - b.mean(("chain", "draw")).values
        assert np.all(np.abs(diff) < 5 * se), (name, diff, se)
        np.testing.assert_allclose(a.std(("chain", "draw")).values, b.std(("chain", "draw")).values, rtol=0.1)
    accept = {k: float(v.sample_stats["acceptance_rate"].mean()) for k, v in runs.items()}
    assert abs(accept["mh"] - accept["blackjax-mh"]) < 0.05  # same adaptation target, same proposal family
