"""Bayesian evidence (marginal likelihood) and Bayes factors, by bridge sampling.

The evidence of a workspace under its priors is

    Z = integral of L_main(theta) pi(theta) over the free parameters,

L_main the main Poisson term (pyhf's ``mainlogpdf``: the auxiliary
measurements enter through the priors derived from them, see
docs/statistics.md) and pi the *normalised* prior: every family truncated to
its bounds and renormalised there, a flat prior ``1 / (upper - lower)``.
Fixed parameters are not integrated over. The Bayes factor of
signal+background against background-only is ``B_10 = Z_sb / Z_b``.

Estimator: bridge sampling (Meng & Wong 1996) with the iterative scheme and
error measure of Gronau et al. (2017, after Frühwirth-Schnatter 2004), the
scheme BAT.jl's ``BridgeSampling`` integrator uses. Posterior draws come from
:func:`bayeshf.sampling.run_chains` on the unconstrained space of
:class:`bayeshf.posterior.Posterior` (``logdensity_fn`` includes the
Jacobian, so its integral over z is the integral over theta); the first half
of every chain fits a normal proposal (mean and covariance in z), the second
half and as many proposal draws enter the bridge. docs/sampling.md says why
this estimator.

>>> ev = log_evidence(bayeshf.load("tests/data/thesis/2_bin_corr.json"))   # doctest: +SKIP
>>> ev.log_evidence, ev.error                                               # doctest: +SKIP
>>> bf = bayes_factor(model)              # POI fixed at 0 as background-only   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.priors import PriorEntry, PriorSet, build_priors

#: posterior draws per chain taken by default (half fit the proposal, half enter the bridge)
DEFAULT_DRAWS = 4000
#: the iteration stops when log r moves less than this
TOLERANCE = 1e-10
MAX_ITERATIONS = 1000
#: log-density evaluations per compiled call
BATCH = 4096


@dataclasses.dataclass(frozen=True)
class Evidence:
    """``log_evidence`` (natural log of Z) and ``error``, its approximate standard deviation.

    ``error`` is the square root of the estimator's relative mean-squared error
    (Frühwirth-Schnatter 2004), i.e. the standard deviation of log Z when small.
    """

    log_evidence: float
    error: float
    iterations: int
    n_posterior: int
    n_proposal: int
    posterior_ess: float
    label: str = ""
    prior: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BayesFactor:
    """``log_bayes_factor`` = log Z_sb - log Z_b with ``error`` (the two errors in quadrature)."""

    log_bayes_factor: float
    error: float
    signal: Evidence
    background: Evidence
    background_only: str

    @property
    def bayes_factor(self) -> float:
        return math.exp(self.log_bayes_factor) if self.log_bayes_factor < 700 else math.inf

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["bayes_factor"] = self.bayes_factor
        return out


# ----------------------------------------------------------------------------- the normalised prior


def prior_log_mass(entry: PriorEntry) -> float:
    """log of the probability mass the entry's family puts on [lower, upper] (what truncation divides by).

    A flat prior gets ``log(upper - lower)``, its density being 1 inside; an
    unbounded flat prior is improper and has no evidence.
    """
    from scipy import stats

    lo, hi, p, family = entry.lower, entry.upper, entry.params, entry.family
    if family == "flat":
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise BayeshfError(f"the flat prior of {entry.name} is improper (unbounded), so the evidence is not "
                               "defined; give it bounds or a proper prior in a priors file.")
        return math.log(hi - lo)
    if family == "normal":
        d = stats.norm(p["mu"], p["sigma"])
    elif family == "lognormal":
        d = stats.lognorm(p["sigma"], scale=math.exp(p["mu"]))
    elif family == "gamma":
        d = stats.gamma(p["alpha"], scale=1.0 / p["beta"])
    elif family == "uniform":
        d = stats.uniform(p["low"], p["high"] - p["low"])
    elif family == "halfnormal":
        d = stats.halfnorm(scale=p["sigma"])
    elif family == "cauchy":
        d = stats.cauchy(p["loc"], p["scale"])
    else:
        raise BayeshfError(f"prior family {family!r} of {entry.name} has no normalisation here.")
    # the upper tail through the survival function keeps precision where cdf(hi) - cdf(lo) would cancel
    mass = (d.cdf(hi) - d.cdf(lo)) if d.cdf(lo) < 0.5 else (d.sf(lo) - d.sf(hi))
    if not mass > 0:
        raise BayeshfError(f"the prior of {entry.name} puts no mass on [{lo:g}, {hi:g}].")
    return math.log(mass)


def prior_log_normalisation(prior_set: PriorSet) -> float:
    """Sum of :func:`prior_log_mass` over the free parameters: log Z = log (integral of exp(logdensity)) - this."""
    return float(sum(prior_log_mass(prior_set.entries[i]) for i in prior_set.free_index))


def poi_fixed_at_zero(model, prior_set: PriorSet) -> PriorSet:
    """The same priors with the POI fixed at 0: background-only inside the signal+background workspace."""
    if model.poi_name is None:
        raise BayeshfError(f"{model.label} has no POI, so it has no background-only hypothesis to compare with.")
    index = list(prior_set.names).index(model.poi_name)
    entry = prior_set.entries[index]
    if entry.family == "fixed":
        raise BayeshfError(f"the POI {model.poi_name} of {model.label} is fixed, so there is no signal+background "
                           "hypothesis to compare.")
    if not entry.lower <= 0.0 <= entry.upper:
        raise BayeshfError(f"the POI {model.poi_name} of {model.label} cannot be 0 (bounds [{entry.lower:g}, "
                           f"{entry.upper:g}]); compare with a background-only workspace instead.")
    fixed = dataclasses.replace(entry, family="fixed", params={"value": 0.0}, lower=0.0, upper=0.0)
    entries = list(prior_set.entries)
    entries[index] = fixed
    return PriorSet(tuple(entries), shapesys=prior_set.shapesys)


# ----------------------------------------------------------------------------- bridge sampling


def _ess(values: np.ndarray) -> float:
    """Bulk effective sample size of (chains, draws) values (ArviZ)."""
    import arviz as az

    ess = float(az.ess(np.asarray(values, dtype=float)))
    return ess if math.isfinite(ess) and ess > 0 else float(values.size)


def bridge_sampling(log_q, posterior_z: np.ndarray, *, seed: int = 0, tolerance: float = TOLERANCE,
                    max_iterations: int = MAX_ITERATIONS) -> tuple[float, float, int, int, int, float]:
    """log of the integral of exp(log_q) over R^d, from posterior draws ``posterior_z`` (chains, draws, d).

    The first half of every chain fits a normal proposal g; the second half
    (N1 draws) and N2 = N1 draws of g enter the iterative estimator

        r <- mean_g[ l / (s1 l + s2 r) ] / mean_post[ 1 / (s1 l + s2 r) ],  l = q / g,

    with s1 = n_eff / (n_eff + N2), n_eff the posterior draws' median ESS.
    Returns (log Z, error of log Z, iterations, N1, N2, n_eff); the error is
    the square root of Frühwirth-Schnatter's relative mean-squared error with
    the posterior term's autocorrelation taken from its ESS.
    """
    from scipy import stats

    z = np.asarray(posterior_z, dtype=float)
    if z.ndim != 3 or z.shape[1] < 4:
        raise BayeshfError("bridge sampling needs posterior draws shaped (chains, draws >= 4, parameters).")
    chains, draws, dim = z.shape
    half = draws // 2
    fit, bridge = z[:, :half].reshape(-1, dim), z[:, half:]
    if not np.all(np.isfinite(z)):
        raise BayeshfError("some posterior draws lie on a bound of their parameter (infinite in the unconstrained "
                           "space); the evidence cannot be computed from them.")
    mean = fit.mean(axis=0)
    cov = np.atleast_2d(np.cov(fit, rowvar=False))
    cov = cov + np.eye(dim) * 1e-12 * max(1.0, float(np.max(np.diag(cov))))  # a constant direction stays invertible
    proposal = stats.multivariate_normal(mean, cov)
    n1 = bridge.shape[0] * bridge.shape[1]
    n2 = n1
    rng = np.random.default_rng(seed)
    proposal_z = np.asarray(proposal.rvs(size=n2, random_state=rng), dtype=float).reshape(n2, dim)

    flat_bridge = bridge.reshape(-1, dim)
    q_post, g_post = np.asarray(log_q(flat_bridge), dtype=float), proposal.logpdf(flat_bridge).reshape(-1)
    q_prop, g_prop = np.asarray(log_q(proposal_z), dtype=float), proposal.logpdf(proposal_z).reshape(-1)
    if not np.all(np.isfinite(q_post)):
        raise BayeshfError("the log posterior density is not finite at some posterior draws.")
    q_prop = np.where(np.isnan(q_prop), -np.inf, q_prop)
    l1, l2 = q_post - g_post, q_prop - g_prop  # log q/g at posterior and at proposal draws
    n_eff = float(np.median([_ess(bridge[..., k]) for k in range(dim)]))
    n_eff = min(n_eff, float(n1))
    s1, s2 = n_eff / (n_eff + n2), n2 / (n_eff + n2)
    shift = float(np.median(l1))
    e1, e2 = l1 - shift, l2 - shift
    log_r, iterations = 0.0, 0
    with np.errstate(over="ignore", divide="ignore"):
        for iterations in range(1, max_iterations + 1):
            r = math.exp(log_r)
            numerator = np.mean(1.0 / (s1 + s2 * r * np.exp(-e2)))  # l/(s1 l + s2 r), bounded by 1/s1
            denominator = np.mean(1.0 / (s1 * np.exp(e1) + s2 * r))
            new = math.log(numerator) - math.log(denominator)
            if abs(new - log_r) < tolerance:
                log_r = new
                break
            log_r = new
        else:
            raise BayeshfError(f"bridge sampling did not converge in {max_iterations} iterations.")
    log_z = log_r + shift
    # relative mean-squared error (Frühwirth-Schnatter 2004; Gronau et al. 2017, eq. 17) with s by the raw counts
    t1, t2 = n1 / (n1 + n2), n2 / (n1 + n2)
    with np.errstate(over="ignore"):
        f1 = 1.0 / (t1 + t2 * np.exp(-(l2 - log_z)))   # p/(t1 p + t2 g) at proposal draws, p = q / Z
        f2 = 1.0 / (t1 * np.exp(l1 - log_z) + t2)      # g/(t1 p + t2 g) at posterior draws
    term1 = np.var(f1) / np.mean(f1) ** 2 / n2
    term2 = np.var(f2) / np.mean(f2) ** 2 / _ess(f2.reshape(bridge.shape[:2]))
    error = float(math.sqrt(term1 + term2))
    return float(log_z), error, iterations, n1, n2, n_eff


def _batched(fn, batch: int = BATCH):
    """Host function of (n, d) arrays -> (n,) from a jitted vmap of ``fn`` (padded to full batches: one program)."""
    import jax

    vectorised = jax.jit(jax.vmap(fn))

    def call(z):
        z = np.asarray(z, dtype=float)
        out = np.empty(z.shape[0])
        for start in range(0, z.shape[0], batch):
            part = z[start:start + batch]
            padded = np.concatenate([part, np.repeat(part[-1:], batch - part.shape[0], axis=0)])
            out[start:start + part.shape[0]] = np.asarray(vectorised(padded))[:part.shape[0]]
        return out

    return call


# ----------------------------------------------------------------------------- public API


def log_evidence(model, *, priors=None, shapesys: str = "flat", chains: int = 4, warmup: int = 1000,
                 draws: int = DEFAULT_DRAWS, seed: int = 0, progress: bool = False) -> Evidence:
    """The log evidence of ``model`` under its priors (normalised, see the module docstring), with its error.

    priors: None (derived priors), a priors file or dict (:func:`bayeshf.priors.build_priors`), or a
    :class:`~bayeshf.priors.PriorSet`. The posterior draws are bayeshf's NUTS
    (:func:`bayeshf.sampling.run_chains`), ``chains`` x ``draws`` after ``warmup``; the same ``seed``
    gives the same answer.
    """
    from bayeshf.posterior import Posterior
    from bayeshf.sampling import run_chains

    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 8:
        raise BayeshfError(f"draws must be an integer of at least 8, got {draws!r}.")
    from bayeshf.sampling import posterior_for

    if priors is None:  # the posterior bayeshf.sample uses, cached on the model: its programs are reused
        posterior = posterior_for(model, shapesys=shapesys)
        prior_set = posterior.prior_set
    else:
        prior_set = priors if isinstance(priors, PriorSet) else build_priors(model, priors, shapesys=shapesys)
        posterior = None
    offset = prior_log_normalisation(prior_set)  # before sampling: an improper prior fails at once
    posterior = posterior or Posterior(model, prior_set)
    if posterior.ndim == 0:  # nothing to integrate: the evidence is the likelihood at the fixed values
        value = float(model.log_likelihood(posterior.fixed_base))
        return Evidence(log_evidence=value, error=0.0, iterations=0, n_posterior=0, n_proposal=0,
                        posterior_ess=0.0, label=str(model.label), prior="all parameters fixed")
    raw = run_chains(posterior, chains=chains, warmup=warmup, draws=draws, seed=seed, progress=progress)
    theta_free = np.asarray(raw.stats.theta, dtype=float)
    theta = np.broadcast_to(posterior.fixed_base, theta_free.shape[:-1] + posterior.fixed_base.shape).copy()
    theta[..., posterior.free_index] = theta_free
    z = np.asarray(posterior.unconstrain(theta), dtype=float)
    log_z, error, iterations, n1, n2, n_eff = bridge_sampling(_batched(posterior.logdensity_fn), z, seed=seed)
    return Evidence(log_evidence=log_z - offset, error=error, iterations=iterations, n_posterior=n1,
                    n_proposal=n2, posterior_ess=n_eff, label=str(model.label),
                    prior=f"derived, shapesys {prior_set.shapesys}" if priors is None else "given")


def bayes_factor(model_sb, model_b=None, *, priors=None, shapesys: str = "flat", **kwargs) -> BayesFactor:
    """log B_10 = log Z(signal+background) - log Z(background-only), with its error.

    Background-only is ``model_b`` when given (e.g. the workspace without the
    signal patch; ``priors`` apply to it when it has the same parameters as
    ``model_sb``, else its priors are derived), else ``model_sb`` with the POI fixed at 0 (same nuisance
    parameters and priors; the POI's prior range enters B_10, Lindley). Other
    keyword arguments go to :func:`log_evidence` for both.
    """
    prior_sb = priors if isinstance(priors, PriorSet) else build_priors(model_sb, priors, shapesys=shapesys)
    signal = log_evidence(model_sb, priors=priors, shapesys=shapesys, **kwargs)
    if model_b is None:
        background = log_evidence(model_sb, priors=poi_fixed_at_zero(model_sb, prior_sb), **kwargs)
        kind = f"{model_sb.poi_name} fixed at 0"
    else:
        same = list(model_b.par_names) == list(model_sb.par_names)
        background = log_evidence(model_b, priors=priors if same else None, shapesys=shapesys, **kwargs)
        kind = f"workspace {model_b.label}"
    return BayesFactor(log_bayes_factor=signal.log_evidence - background.log_evidence,
                       error=math.hypot(signal.error, background.error), signal=signal, background=background,
                       background_only=kind)
