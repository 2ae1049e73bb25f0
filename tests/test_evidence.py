"""Evidence and Bayes factors (bayeshf.evidence): bridge sampling against closed forms and brute-force integrals.

Oracles: a counting model whose evidence has a closed form under a Gamma
prior (conjugate terms of a binomial expansion) and under the default flat
prior (a difference of regularised incomplete gamma functions); Simpson's rule on
a grid over the 2- and 3-parameter thesis models; a Gaussian integral of known
value for the estimator alone (and its error estimate over many seeds);
scipy.integrate.quad for the prior normalisations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special, stats

import bayeshf
from bayeshf.errors import BayeshfError
from bayeshf.evidence import (bayes_factor, bridge_sampling, log_evidence, poi_fixed_at_zero, prior_log_mass,
                              prior_log_normalisation)
from bayeshf.priors import PriorEntry, PriorSet, build_priors

DATA = Path(__file__).resolve().parent / "data"
#: agreement required, in units of the stated error (plus the grid's own numerical error)
SIGMAS = 4.0


def _counting(s=5.0, b=10.0, n=18.0, upper=10.0):
    return {"channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [s], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "background", "data": [b], "modifiers": []}]}],
        "observations": [{"name": "SR", "data": [n]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "mu", "bounds": [[0.0, upper]], "inits": [1.0]}]}}],
        "version": "1.0.0"}


# ----------------------------------------------------------------------------- prior normalisation


@pytest.mark.parametrize("family, params, lower, upper", [
    ("normal", {"mu": 0.0, "sigma": 1.0}, -5.0, 5.0),
    ("normal", {"mu": 1.0, "sigma": 0.1}, 1e-10, 10.0),
    ("normal", {"mu": 0.0, "sigma": 1.0}, 3.0, 9.0),   # far tail: mass through the survival function
    ("gamma", {"alpha": 26.0, "beta": 25.0}, 1e-10, 10.0),
    ("gamma", {"alpha": 1.5, "beta": 0.5}, 0.0, 4.0),
    ("lognormal", {"mu": 0.1, "sigma": 0.4}, 0.5, 2.0),
    ("uniform", {"low": -1.0, "high": 4.0}, 0.0, 3.0),
    ("halfnormal", {"sigma": 2.0}, 0.0, 5.0),
    ("cauchy", {"loc": 1.0, "scale": 0.5}, -2.0, 6.0),
    ("flat", {}, -3.0, 7.0),
])
def test_prior_log_mass_normalises_log_prob(family, params, lower, upper):
    """exp(log_prob - log mass) integrates to 1 over [lower, upper] (quad)."""
    entry = PriorEntry("x", family, params, lower, upper)
    prior_set = PriorSet((entry,))
    log_mass = prior_log_mass(entry)
    total, error = integrate.quad(lambda x: math.exp(float(prior_set.log_prob(np.array([x]))) - log_mass),
                                  lower, upper, limit=400, points=[params.get("mu", 0.0)] if family == "normal"
                                  and lower < params["mu"] < upper else None)
    assert total == pytest.approx(1.0, abs=1e-8 + 10 * error)


def test_improper_flat_prior_has_no_evidence():
    with pytest.raises(BayeshfError, match="improper"):
        prior_log_mass(PriorEntry("mu", "flat", {}, 0.0, math.inf))


def test_poi_fixed_at_zero_keeps_the_other_priors():
    model = bayeshf.load(DATA / "thesis" / "2_bin_uncorr.json")
    prior_set = build_priors(model)
    background = poi_fixed_at_zero(model, prior_set)
    i = model.par_names.index(model.poi_name)
    assert background.fixed[i] and background.fixed_values[i] == 0.0
    assert [e for k, e in enumerate(background.entries) if k != i] == \
        [e for k, e in enumerate(prior_set.entries) if k != i]
    assert prior_log_normalisation(background) == pytest.approx(
        prior_log_normalisation(prior_set) - prior_log_mass(prior_set.entries[i]))
    with pytest.raises(BayeshfError, match="fixed"):
        poi_fixed_at_zero(model, background)


# ----------------------------------------------------------------------------- the estimator alone


def _gaussian_problem(dim, seed, chains=4, draws=1000):
    """log q = log of c N(mean, cov) (c known) and exact iid posterior draws shaped (chains, draws, dim)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + np.eye(dim) * 0.5
    mean = rng.normal(size=dim)
    target = stats.multivariate_normal(mean, cov)
    log_c = 3.7
    draws_ = target.rvs(size=chains * draws, random_state=rng).reshape(chains, draws, dim)
    return (lambda z: target.logpdf(z).reshape(-1) + log_c), draws_, log_c


def test_bridge_sampling_on_a_known_integral_and_its_error():
    """A Gaussian of known integral (a Student-t posterior would do as well): the estimate is right and the
    stated error is honest over 20 seeds (RMS of the standardised deviations near 1, none beyond 4)."""
    deviations = []
    for seed in range(20):
        log_q, z, log_c = _gaussian_problem(3, seed)
        log_z, error, iterations, n1, n2, n_eff = bridge_sampling(log_q, z, seed=seed)
        assert 0 < error < 0.05 and iterations >= 1 and n1 == n2 == 2000
        deviations.append((log_z - log_c) / error)
    deviations = np.array(deviations)
    assert np.all(np.abs(deviations) < SIGMAS)
    assert 0.4 < math.sqrt(np.mean(deviations ** 2)) < 2.0


def test_bridge_sampling_error_grows_with_fewer_draws():
    log_q, z, _ = _gaussian_problem(4, 3)
    many = bridge_sampling(log_q, z, seed=1)[1]
    assert bridge_sampling(log_q, z, seed=1) == bridge_sampling(log_q, z, seed=1)  # same seed, same answer
    few = bridge_sampling(log_q, z[:, :100], seed=1)[1]
    assert few > 2 * many


def test_bridge_sampling_refuses_bad_draws():
    log_q, z, _ = _gaussian_problem(2, 0)
    with pytest.raises(BayeshfError):
        bridge_sampling(log_q, z[0])
    z = z.copy()
    z[0, -1, 0] = np.inf
    with pytest.raises(BayeshfError, match="bound"):
        bridge_sampling(log_q, z)


# ----------------------------------------------------------------------------- on models


@pytest.fixture(scope="module")
def counting():
    """One model object for the tests below: its posterior (and compiled chains) are cached on it."""
    return bayeshf.load(_counting())


def _gamma_prior_log_evidence(s, b, n, upper, alpha, beta):
    """n ~ Poisson(s mu + b), mu ~ Gamma(alpha, rate beta) truncated to [0, upper]: expand (s mu + b)^n and
    integrate each power of mu against the Gamma density (regularised incomplete gamma P for the cut)."""
    k = np.arange(n + 1)
    terms = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1) + (n - k) * math.log(b)
             + k * math.log(s) + alpha * math.log(beta) - special.gammaln(alpha) + special.gammaln(alpha + k)
             + np.log(special.gammainc(alpha + k, (beta + s) * upper)) - (alpha + k) * math.log(beta + s))
    return float(-b - special.gammaln(n + 1) + special.logsumexp(terms)
                 - math.log(special.gammainc(alpha, beta * upper)))


def test_conjugate_gamma_prior_closed_form_and_bayes_factor(counting):
    """Poisson counts with a Gamma prior on the signal strength (priors dict): the closed form above (checked
    against quad here too); background-only (mu = 0, nothing left to integrate) is Poisson(n | b)."""
    s, b, n, upper, alpha, beta = 5.0, 10.0, 18, 10.0, 2.0, 0.5
    exact = _gamma_prior_log_evidence(s, b, n, upper, alpha, beta)
    density = stats.gamma(alpha, scale=1 / beta)
    numeric = integrate.quad(lambda mu: stats.poisson.pmf(n, s * mu + b) * density.pdf(mu), 0, upper)[0]
    assert exact == pytest.approx(math.log(numeric / density.cdf(upper)), abs=1e-10)
    priors = {"priors": {"mu": {"family": "gamma", "alpha": alpha, "beta": beta}}}
    result = bayes_factor(counting, priors=priors, draws=2000, seed=0)
    ev = result.signal
    assert 0 < ev.error < 0.02
    assert abs(ev.log_evidence - exact) < SIGMAS * ev.error
    assert result.background.error == 0.0
    assert result.background.log_evidence == pytest.approx(stats.poisson.logpmf(n, b), rel=1e-12)
    assert result.log_bayes_factor == pytest.approx(exact - stats.poisson.logpmf(n, b), abs=SIGMAS * ev.error)
    assert "mu fixed at 0" in result.background_only


def _grid_log_evidence(model, draws_theta, points):
    """log of the integral of L_main * normalised prior, Simpson's rule on a grid around the posterior."""
    import jax

    prior_set = build_priors(model)
    free = prior_set.free_index
    mean, sd = draws_theta.mean(axis=0), draws_theta.std(axis=0)
    axes = []
    for k, i in enumerate(free):
        lo = max(prior_set.lower[i], mean[k] - 10 * sd[k])
        hi = min(prior_set.upper[i], mean[k] + 10 * sd[k])
        axes.append(np.linspace(lo, hi, points))
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(free))
    theta = np.tile(np.where(prior_set.fixed, prior_set.fixed_values, np.asarray(model.init, dtype=float)),
                    (mesh.shape[0], 1))
    theta[:, free] = mesh
    fn = jax.jit(jax.vmap(lambda t: model.log_likelihood(t) + prior_set.log_prob(t)))
    values = np.concatenate([np.asarray(fn(theta[k:k + 65536])) for k in range(0, theta.shape[0], 65536)])
    values = np.where(np.isnan(values), -np.inf, values)  # negative expected counts: no probability
    values = values.reshape((points,) * len(free)) - prior_log_normalisation(prior_set)
    shift = values.max()
    integral = np.exp(values - shift)
    for axis in reversed(axes):
        integral = integrate.simpson(integral, x=axis, axis=-1)
    return float(np.log(integral) + shift)


@pytest.mark.parametrize("source, points", [("thesis/2_bin_corr.json", 401), ("thesis/2_bin_uncorr.json", 81)])
def test_thesis_models_against_a_grid_integral(source, points):
    """2 (mu, one histosys) and 3 parameters (mu, two shapesys gammas): bridge sampling vs Simpson's rule."""
    from bayeshf.sampling import posterior_for, run_chains

    model = bayeshf.load(DATA / source)
    ev = log_evidence(model, draws=2000, seed=1)
    assert 0 < ev.error < 0.03
    posterior = posterior_for(model)  # the grid's range from other draws of the same (compiled) posterior
    raw = run_chains(posterior, chains=4, warmup=1000, draws=2000, seed=7, progress=False)
    grid = _grid_log_evidence(model, np.asarray(raw.stats.theta).reshape(-1, posterior.ndim), points)
    coarse = _grid_log_evidence(model, np.asarray(raw.stats.theta).reshape(-1, posterior.ndim), points // 2 + 1)
    numerical = abs(grid - coarse)  # the grid's own error, from halving it
    assert numerical < 1e-3
    assert abs(ev.log_evidence - grid) < SIGMAS * ev.error + numerical


def test_cli_evidence_prints_and_writes_json(tmp_path, capsys):
    from bayeshf.cli import main

    """--bayes-factor (POI fixed at 0: nothing left to integrate, exact) and --background WS (a workspace whose
    signal is 0: its likelihood does not depend on mu, so Z_b = Poisson(n | b) once more, now by bridge sampling)."""
    path = tmp_path / "counting.json"
    path.write_text(json.dumps(_counting()))
    exact = stats.poisson.logpmf(18.0, 10.0)
    out = tmp_path / "evidence.json"
    assert main(["evidence", str(path), "--bayes-factor", "--draws", "1000", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert "log Z" in printed and "log B_10" in printed and "mu fixed at 0" in printed
    # mu ~ Uniform(0, U): Z = [P(n+1, sU+b) - P(n+1, b)] / (U s), P the regularised lower incomplete gamma
    uniform = math.log((special.gammainc(19, 5.0 * 10.0 + 10.0) - special.gammainc(19, 10.0)) / (10.0 * 5.0))
    signal = document["signal_plus_background"]
    assert 0 < signal["error"] < 0.03 and abs(signal["log_evidence"] - uniform) < SIGMAS * signal["error"]
    assert set(document) >= {"signal_plus_background", "background_only", "log_bayes_factor", "error"}
    assert document["background_only"]["log_evidence"] == pytest.approx(exact, rel=1e-12)
    no_signal = _counting()
    no_signal["channels"][0]["samples"][0]["data"] = [0.0]
    background = tmp_path / "background.json"
    background.write_text(json.dumps(no_signal))
    assert main(["evidence", str(path), "--background", str(background), "--draws", "1000", "--json", str(out),
                 "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert document["background_only_is"].startswith("workspace")
    b = document["background_only"]
    assert abs(b["log_evidence"] - exact) <= SIGMAS * b["error"] + 1e-9
    assert document["log_bayes_factor"] == pytest.approx(
        document["signal_plus_background"]["log_evidence"] - b["log_evidence"])


def test_cli_evidence_bad_input_is_one_sentence(tmp_path, capsys):
    from bayeshf.cli import main

    path = tmp_path / "counting.json"
    path.write_text(json.dumps(_counting()))
    priors = tmp_path / "priors.json"
    priors.write_text(json.dumps({"priors": {"mu": {"family": "flat", "bounds": [0.0, None]}}}))
    code = main(["evidence", str(path), "--priors", str(priors), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("bayeshf evidence: error:")
