"""BAT.jl's weighted samples -> equal-length chains -> ``arviz.InferenceData``.

BAT returns one ``DensitySampleVector`` for all chains: variates ``v``,
log-densities ``logd``, weights and ``info.chainid`` / ``info.stepno``. With
``RandomWalk`` (``RepetitionWeighting``) a weight is the number of steps the
chain stayed at that point, so expanding each sample by its weight gives back
the Markov chain step by step. Chain ids need not be 1..n (BAT's chain-pool
initialisation keeps the best candidates), so they are renumbered in sorted
order and kept in the ``bat_chain_ids`` attribute; chains are cut to the
length of the shortest so that ``chain`` x ``draw`` is rectangular.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from bayeshf.errors import BayeshfError


@dataclass(frozen=True)
class BATSamples:
    """Flat arrays as the Julia half returns them (one row per stored BAT sample).

    ``v``: (nsamples, npars) full parameter vectors (fixed parameters filled in);
    ``logd``: log posterior density (BAT's, up to a constant); ``weight``:
    multiplicity (integer for random-walk MH, 1 for HMC); ``chainid`` and
    ``stepno``: BAT's ``info.chainid`` and ``info.stepno``.
    """

    v: np.ndarray
    logd: np.ndarray
    weight: np.ndarray
    chainid: np.ndarray
    stepno: np.ndarray

    @classmethod
    def from_arrays(cls, v, logd, weight, chainid, stepno) -> "BATSamples":
        """Copy and check the arrays (raises :class:`BayeshfError` on inconsistent shapes)."""
        v = np.array(v, dtype=float, copy=True)
        if v.ndim != 2:
            raise BayeshfError(f"BAT samples must be a (nsamples, npars) matrix, got shape {v.shape}.")
        n = v.shape[0]
        arrays = [np.array(a, copy=True).reshape(-1) for a in (logd, weight, chainid, stepno)]
        if any(a.shape[0] != n for a in arrays):
            raise BayeshfError(f"BAT sample arrays disagree in length ({n} variates, "
                               f"{[a.shape[0] for a in arrays]} logd/weight/chainid/stepno).")
        logd, weight, chainid, stepno = arrays
        weight = weight.astype(float)
        if n == 0:
            raise BayeshfError("BAT returned no samples.")
        if np.any(~np.isfinite(weight)) or np.any(weight < 0) or not np.any(weight > 0):
            raise BayeshfError("BAT sample weights must be finite, non-negative and not all zero.")
        return cls(v, logd.astype(float), weight, chainid.astype(np.int64), stepno.astype(np.int64))


def _integer_weights(weight: np.ndarray) -> bool:
    return bool(np.all(weight == np.round(weight)))


def _systematic_resample(weight: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` systematic-resampling draws (Kitagawa 1996): deterministic given the seed."""
    cumulative = np.cumsum(weight) / np.sum(weight)
    cumulative[-1] = 1.0
    positions = (rng.uniform() + np.arange(n)) / n
    return np.searchsorted(cumulative, positions, side="right")


def expand_chains(samples: BATSamples, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(theta (chains, draws, npars), logd (chains, draws), chain ids)`` from BAT's weighted samples.

    Integer weights are expanded by repetition (the Markov chain step by
    step); non-integer weights are turned into round(sum of weights) draws
    per chain by systematic resampling with ``seed``. Within a chain, samples
    are ordered by step number; all chains are cut to the shortest length.
    """
    ids = np.unique(samples.chainid)
    integer = _integer_weights(samples.weight)
    rng = np.random.default_rng(seed)
    per_chain = []
    for chain in ids:  # a host loop over a handful of chains, after sampling
        rows = np.flatnonzero(samples.chainid == chain)
        rows = rows[np.argsort(samples.stepno[rows], kind="stable")]
        weight = samples.weight[rows]
        if integer:
            index = np.repeat(rows, weight.astype(np.int64))
        else:
            n = max(int(round(weight.sum())), 1)
            index = rows[_systematic_resample(weight, n, rng)]
        per_chain.append(index)
    length = min(len(index) for index in per_chain)
    if length == 0:
        raise BayeshfError("a BAT chain has no samples of positive weight.")
    index = np.stack([index[:length] for index in per_chain])
    return samples.v[index], samples.logd[index], ids


def to_inference_data(samples: BATSamples, model, *, prior_set=None, seed: int = 0, prior_draws: int = 1000,
                      attrs: Mapping[str, Any] | None = None):
    """InferenceData in bayeshf's layout (:func:`bayeshf.idata.from_parameter_draws`) from BAT samples.

    ``sample_stats`` holds ``lp`` (BAT's log-density of each draw); the
    original BAT chain ids are in the ``bat_chain_ids`` attribute.
    """
    from bayeshf.idata import from_parameter_draws

    if samples.v.shape[1] != model.npars:
        raise BayeshfError(f"BAT returned {samples.v.shape[1]} parameters per sample but the model has {model.npars}.")
    theta, logd, ids = expand_chains(samples, seed=seed)
    all_attrs = {"bat_chain_ids": [int(i) for i in ids], "bat_stored_samples": int(samples.v.shape[0])}
    all_attrs.update(attrs or {})
    return from_parameter_draws(model, theta, sample_stats={"lp": logd}, prior_set=prior_set, seed=seed,
                                prior_draws=prior_draws, attrs=all_attrs)
