"""Assemble ``arviz.InferenceData`` from parameter draws of a HistFactory model.

:func:`from_parameter_draws` is the one place that names variables and
dimensions, used by the blackjax driver (:mod:`bayeshf.sampling`) and usable by
any other backend (the Julia bridge) that produces full parameter vectors.

Layout: posterior has one variable per parameter set (``mu``; ``staterror_SR``
with dimension ``staterror_SR_bin``), fixed elements included at their value;
posterior_predictive / prior_predictive / observed_data have one variable per
channel with dimension ``<channel>_bin`` (predictive counts as int64);
log_likelihood has one variable, ``main_bins`` (dimension ``main_bin``,
labelled ``<channel>[<bin>]``), the Poisson log-likelihood of every main bin at
every draw, so ``az.loo``, ``az.waic`` and ``az.compare`` work without a
``var_name`` (the constraint terms are priors here, not data).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from bayeshf import __version__
from bayeshf.assemble import Group, assemble  # noqa: F401  (the groups are this module's)
from bayeshf.chains import algorithm
from bayeshf.stored import stored_jit


def _set_arrays(model, theta: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, Any]]:
    """Split full parameter draws (..., npars) into per-set variables, dims and coords."""
    variables, dims, coords = {}, {}, {}
    for pset in model.parameters:
        values = theta[..., pset.slice]
        if getattr(pset, "is_scalar", pset.size == 1):
            variables[pset.name] = values[..., 0]
            dims[pset.name] = []
        else:
            dim = f"{pset.name}_bin"
            variables[pset.name] = values
            dims[pset.name] = [dim]
            coords[dim] = np.arange(pset.size)
    return variables, dims, coords


def _channel_arrays(model, counts: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, Any]]:
    variables, dims, coords = {}, {}, {}
    for channel in model.channels:
        dim = f"{channel}_bin"
        variables[channel] = counts[..., model.channel_slices[channel]]
        dims[channel] = [dim]
        coords[dim] = np.arange(model.channel_nbins[channel])
    return variables, dims, coords


@stored_jit
def _rates(model, thetas):
    return jax.vmap(model.expected_counts)(thetas)


def expected_main(model, theta: np.ndarray) -> np.ndarray:
    """Expected main-bin counts at each parameter vector (..., npars) -> (..., nmain), in one jitted, vmapped call."""
    theta = np.asarray(theta, dtype=float)
    flat = theta.reshape(-1, theta.shape[-1])
    rates = np.maximum(np.asarray(_rates(model, flat)), 0.0)  # NumPy straight in: jnp.asarray stages a copy
    return rates.reshape(theta.shape[:-1] + (rates.shape[-1],))


def predictive_counts(model, theta: np.ndarray, rng: np.random.Generator, rates: np.ndarray | None = None) -> np.ndarray:
    """Poisson draws (int64) of the main-bin counts at each parameter vector (..., npars) -> (..., nmain).

    The Poisson draws are made on the host (numpy), which avoids compiling
    jax's Poisson sampler; ``rates`` (from :func:`expected_main`) saves recomputing them.
    """
    rates = expected_main(model, theta) if rates is None else rates
    return rng.poisson(rates).astype(np.int64)


def pointwise_log_likelihood(observed: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Poisson log-likelihood of each observed main bin at each draw's rates (..., nmain)."""
    from scipy.special import gammaln, xlogy

    observed = np.asarray(observed, dtype=float)
    return xlogy(observed, rates) - rates - gammaln(observed + 1.0)


def _log_likelihood_group(model, observed: np.ndarray, rates: np.ndarray) -> Group:
    labels = [f"{c}[{i}]" for c in model.channels for i in range(model.channel_nbins[c])]
    return Group({"main_bins": pointwise_log_likelihood(observed, rates)}, {"main_bins": ["main_bin"]},
                 {"main_bin": labels})


def _as_counts(values: np.ndarray) -> np.ndarray:
    """Integral observed counts as int64 (like the predictive draws); Asimov-like data stay float."""
    values = np.asarray(values, dtype=float)
    return values.astype(np.int64) if np.all(values == np.round(values)) and np.all(values >= 0) else values


def from_parameter_draws(model, theta: np.ndarray, *, sample_stats: Mapping[str, np.ndarray] | None = None,
                         prior_set=None, seed: int = 0, prior_draws: int = 1000,
                         attrs: Mapping[str, Any] | None = None):
    """InferenceData from full parameter draws ``theta`` of shape (chains, draws, npars).

    Adds posterior_predictive (Poisson draws at each posterior draw),
    observed_data, and, when ``prior_set`` is given and proper, prior and
    prior_predictive groups with ``prior_draws`` draws (one chain).
    """
    return assemble(*parameter_draw_groups(model, theta, sample_stats=sample_stats, prior_set=prior_set, seed=seed,
                                           prior_draws=prior_draws, attrs=attrs))


def parameter_draw_groups(model, theta: np.ndarray, *, sample_stats: Mapping[str, np.ndarray] | None = None,
                          prior_set=None, seed: int = 0, prior_draws: int = 1000,
                          attrs: Mapping[str, Any] | None = None) -> tuple[dict[str, Group], dict[str, Any]]:
    """The groups and attributes of :func:`from_parameter_draws` as NumPy arrays (no ArviZ, no xarray)."""
    theta = np.asarray(theta, dtype=float)
    rng = np.random.default_rng([seed, 7])
    groups = {"posterior": Group(*_set_arrays(model, theta))}
    rates = expected_main(model, theta)
    counts = predictive_counts(model, theta, rng, rates)
    groups["posterior_predictive"] = Group(*_channel_arrays(model, counts))
    observed = np.asarray(model.observed, dtype=float)
    groups["log_likelihood"] = _log_likelihood_group(model, observed, rates)
    groups["observed_data"] = Group(*_channel_arrays(model, _as_counts(observed)), chain_draw=False)
    if sample_stats:
        groups["sample_stats"] = Group(dict(sample_stats), {k: [] for k in sample_stats}, {})
    if prior_set is not None and prior_draws > 0:
        try:
            prior_key = _prior_key(seed)
            prior_theta = np.asarray(prior_set.sample(prior_key, prior_draws))[None]
        except Exception:  # improper prior: no prior groups
            prior_theta = None
        if prior_theta is not None:
            groups["prior"] = Group(*_set_arrays(model, prior_theta))
            prior_counts = predictive_counts(model, prior_theta, rng)
            groups["prior_predictive"] = Group(*_channel_arrays(model, prior_counts))
    all_attrs = {"created_by": f"bayeshf {__version__}", "poi": model.poi_name or "",
                 "par_names": list(model.par_names)}
    all_attrs.update(attrs or {})
    return groups, all_attrs


@stored_jit
def _prior_key(seed):
    """The prior draws' key of ``seed`` in one program (each eager random call compiles one)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 7)


def inference_groups(posterior, raw, *, seed: int, settings: Mapping[str, Any],
                     prior_draws: int) -> tuple[dict[str, Group], dict[str, Any]]:
    """The groups and attributes of the blackjax driver's :class:`bayeshf.sampling.RawDraws` as NumPy arrays
    (:func:`assemble` makes the InferenceData)."""
    stats = raw.stats
    base = posterior.fixed_base
    theta = np.array(np.broadcast_to(base, stats.theta.shape[:-1] + base.shape), dtype=float)
    theta[..., posterior.free_index] = stats.theta
    sample_stats = {
        "lp": stats.lp, "diverging": stats.diverging.astype(bool), "acceptance_rate": stats.acceptance_rate,
        "energy": stats.energy, "n_steps": stats.n_steps.astype(np.int64), "step_size": stats.step_size,
    }
    if algorithm(settings.get("sampler", "")) == "nuts":
        sample_stats["tree_depth"] = stats.tree_depth.astype(np.int64)
    attrs = dict(settings)
    attrs.update(interrupted=bool(raw.interrupted), draws_done=int(raw.draws_done))
    return parameter_draw_groups(posterior.model, theta, sample_stats=sample_stats, prior_set=posterior.prior_set,
                                 seed=seed, prior_draws=prior_draws, attrs=attrs)
