"""Expected yields per sample and bin with uncertainties: pre-fit, post-fit and from a posterior.

Pre-fit: the parameters at their initial values, each constrained parameter
varied by its constraint width, uncorrelated (unconstrained and fixed
parameters contribute nothing), as cabinetry's pre-fit model. Post-fit: the
best fit and the Hessian covariance of a :class:`~bayeshf.fit.FitResult`,
correlations included. Both propagate linearly through the Jacobian of the
rates (``J C J^T``), per sample and bin, for the stacked total per bin, and
for the totals per channel. Bayesian: quantiles of the expected yields over
the draws of a saved posterior (no linearisation).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

import jax
import numpy as np

from bayeshf.errors import BayeshfError

if TYPE_CHECKING:  # annotations only
    from bayeshf.fit import FitResult
    from bayeshf.model import HistFactoryModel

__all__ = ["YieldsResult", "yields", "posterior_yields", "format_yields"]


@dataclasses.dataclass(frozen=True)
class YieldsResult:
    """Expected yields of every sample in every main bin (``yields[s, b]``) with uncertainties.

    ``total`` is the sum over samples with its own uncertainty (correlations
    between samples included); ``channel_total*`` sum over the bins of each
    channel. For ``kind == "posterior"`` the uncertainties are posterior
    standard deviations and ``total_band`` holds the 16% and 84% quantiles of
    the total per bin (``channel_band`` per channel; ``predictive_band`` and
    ``channel_predictive_band`` those of the saved posterior predictive counts,
    Poisson noise included); otherwise ``total_band`` is total -+ its uncertainty.
    """

    kind: str
    samples: tuple[str, ...]
    channels: tuple[str, ...]
    channel_nbins: Mapping[str, int]
    yields: np.ndarray
    uncertainties: np.ndarray
    total: np.ndarray
    total_uncertainty: np.ndarray
    total_band: np.ndarray
    channel_yields: np.ndarray
    channel_uncertainties: np.ndarray
    channel_total: np.ndarray
    channel_total_uncertainty: np.ndarray
    observed: np.ndarray
    channel_band: np.ndarray | None = None
    predictive_band: np.ndarray | None = None
    channel_predictive_band: np.ndarray | None = None

    def channel_slice(self, channel: str) -> slice:
        start = 0
        for name in self.channels:
            if name == channel:
                return slice(start, start + self.channel_nbins[name])
            start += self.channel_nbins[name]
        raise BayeshfError(f"the model has no channel named {channel!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Per channel: per sample and bin yields with uncertainties, totals, and the observed counts."""
        channels = {}
        for c, name in enumerate(self.channels):
            sl = self.channel_slice(name)
            channels[name] = {
                "samples": {s: {"yields": self.yields[i, sl].tolist(),
                                "uncertainties": self.uncertainties[i, sl].tolist(),
                                "total": float(self.channel_yields[i, c]),
                                "total_uncertainty": float(self.channel_uncertainties[i, c])}
                            for i, s in enumerate(self.samples)},
                "total": {"yields": self.total[sl].tolist(), "uncertainties": self.total_uncertainty[sl].tolist(),
                          "band": self.total_band[:, sl].tolist(), "total": float(self.channel_total[c]),
                          "total_uncertainty": float(self.channel_total_uncertainty[c])},
                "observed": {"yields": self.observed[sl].tolist(), "total": float(self.observed[sl].sum())},
            }
            if self.predictive_band is not None:
                channels[name]["total"]["predictive_band"] = self.predictive_band[:, sl].tolist()
        return {"kind": self.kind, "samples": list(self.samples), "channels": channels}

    def __repr__(self) -> str:
        return (f"YieldsResult({self.kind}: {len(self.samples)} samples, {len(self.channels)} channels, "
                f"{self.total.size} bins, total {self.total.sum():.6g}, observed {self.observed.sum():.6g})")


def _channel_matrix(model: Any) -> np.ndarray:
    """(B, C) 0/1 matrix summing bins into channels."""
    out = np.zeros((model.nmain, len(model.channels)))
    for c, name in enumerate(model.channels):
        out[model.channel_slices[name], c] = 1.0
    return out


def _linear(model: Any, pars: np.ndarray, covariance: np.ndarray, kind: str) -> YieldsResult:
    pars = np.asarray(pars, dtype=float)
    rates = np.asarray(model.expected_rates(pars))                      # (S, B)
    jac = np.asarray(jax.jacfwd(model.expected_rates)(pars))           # (S, B, P)
    S, B, P = jac.shape
    to_channel = _channel_matrix(model)

    def spread(j: np.ndarray) -> np.ndarray:  # sqrt(diag(J C J^T)) for J of shape (..., P)
        flat = j.reshape(-1, P)
        var = np.einsum("ip,pq,iq->i", flat, covariance, flat)
        return np.sqrt(np.maximum(var, 0.0)).reshape(j.shape[:-1])

    total = rates.sum(axis=0)
    total_unc = spread(jac.sum(axis=0))
    channel_jac = np.einsum("sbp,bc->scp", jac, to_channel)
    return YieldsResult(
        kind=kind, samples=tuple(model.samples), channels=tuple(model.channels),
        channel_nbins=dict(model.channel_nbins), yields=rates, uncertainties=spread(jac), total=total,
        total_uncertainty=total_unc, total_band=np.stack([total - total_unc, total + total_unc]),
        channel_yields=rates @ to_channel, channel_uncertainties=spread(channel_jac),
        channel_total=total @ to_channel, channel_total_uncertainty=spread(channel_jac.sum(axis=0)),
        observed=np.asarray(model.observed, dtype=float),
    )


def prefit_covariance(model: Any) -> np.ndarray:
    """Diagonal covariance of the constraint widths; 0 for unconstrained and fixed parameters."""
    width = np.zeros(model.npars)
    for pset in model.parameters:
        if pset.constraint == "normal":
            width[pset.slice] = pset.sigmas
        elif pset.constraint == "poisson":  # gamma factor around 1 with relative width 1/sqrt(tau)
            width[pset.slice] = 1.0 / np.sqrt(np.asarray(pset.factors, dtype=float))
    width[np.asarray(model.fixed, dtype=bool)] = 0.0
    return np.diag(width**2)


def yields(model: HistFactoryModel, fit_result: FitResult | None = None) -> YieldsResult:
    """Pre-fit (``fit_result=None``) or post-fit expected yields per sample and bin with uncertainties.

    Post-fit uses ``fit_result.bestfit`` and ``fit_result.covariance`` (the
    Hessian's, correlations included); parameters fixed in the fit contribute
    nothing.
    """
    if fit_result is None:
        return _linear(model, np.asarray(model.init, dtype=float), prefit_covariance(model), "prefit")
    bestfit = np.asarray(fit_result.bestfit, dtype=float)
    if bestfit.shape != (model.npars,) or list(fit_result.par_names) != list(model.par_names):
        raise BayeshfError("the fit result is not of this model (its parameters differ).")
    covariance = np.nan_to_num(np.asarray(fit_result.covariance, dtype=float))
    return _linear(model, bestfit, covariance, "postfit")


def posterior_theta(model: Any, idata: Any) -> np.ndarray:
    """Full parameter vectors (chains * draws, npars) from an InferenceData written by bayeshf."""
    if "posterior" not in idata.groups():
        raise BayeshfError("the InferenceData has no posterior group.")
    post = idata.posterior
    columns = []
    for pset in model.parameters:
        if pset.name not in post.data_vars:
            raise BayeshfError(f"the posterior has no parameter {pset.name!r}: it was sampled from another model.")
        values = np.asarray(post[pset.name].values, dtype=float)
        values = values.reshape(values.shape[0] * values.shape[1], -1)
        if values.shape[1] != pset.size:
            raise BayeshfError(f"the posterior's {pset.name!r} has {values.shape[1]} elements, the model "
                               f"{pset.size}: it was sampled from another model.")
        columns.append(values)
    return np.concatenate(columns, axis=1)


@jax.jit
def _rates_of_draws(model, thetas):
    return jax.vmap(model.expected_rates)(thetas)


def posterior_yields(model: HistFactoryModel, idata: Any, *, max_draws: int = 4000, seed: int = 0) -> YieldsResult:
    """Posterior mean and standard deviation of the expected yields; band: 16%/84% quantiles of the total.

    At most ``max_draws`` posterior draws are used (chosen at random, by ``seed``).
    """
    theta = posterior_theta(model, idata)
    chosen = np.arange(theta.shape[0])
    if theta.shape[0] > max_draws:
        chosen = np.sort(np.random.default_rng(seed).choice(theta.shape[0], max_draws, replace=False))
    rates = np.asarray(_rates_of_draws(model, theta[chosen]))            # (N, S, B)
    to_channel = _channel_matrix(model)
    total = rates.sum(axis=1)
    per_channel = rates @ to_channel                                      # (N, S, C)
    predictive = channel_predictive = None
    if "posterior_predictive" in idata.groups() and all(c in idata.posterior_predictive for c in model.channels):
        counts = np.concatenate([np.asarray(idata.posterior_predictive[c].values, dtype=float).reshape(
            -1, model.channel_nbins[c]) for c in model.channels], axis=1)
        if counts.shape[0] == theta.shape[0]:
            counts = counts[chosen]
            predictive = np.quantile(counts, [0.16, 0.84], axis=0)
            channel_predictive = np.quantile(counts @ to_channel, [0.16, 0.84], axis=0)
    return YieldsResult(
        kind="posterior", samples=tuple(model.samples), channels=tuple(model.channels),
        channel_nbins=dict(model.channel_nbins), yields=rates.mean(axis=0), uncertainties=rates.std(axis=0),
        total=total.mean(axis=0), total_uncertainty=total.std(axis=0),
        total_band=np.quantile(total, [0.16, 0.84], axis=0), channel_yields=per_channel.mean(axis=0),
        channel_uncertainties=per_channel.std(axis=0), channel_total=per_channel.sum(axis=1).mean(axis=0),
        channel_total_uncertainty=per_channel.sum(axis=1).std(axis=0),
        observed=np.asarray(model.observed, dtype=float),
        channel_band=np.quantile(per_channel.sum(axis=1), [0.16, 0.84], axis=0),
        predictive_band=predictive, channel_predictive_band=channel_predictive,
    )


def format_yields(result: YieldsResult, *, per_bin: bool = False) -> str:
    """A yield table per channel: samples, total and data (per bin with ``per_bin``, else channel totals)."""
    lines = []
    label = {"prefit": "pre-fit", "postfit": "post-fit", "posterior": "posterior"}[result.kind]
    width = max(12, *(len(s) for s in result.samples))
    for c, name in enumerate(result.channels):
        sl = result.channel_slice(name)
        if per_bin:
            rows = [(s, result.yields[i, sl], result.uncertainties[i, sl]) for i, s in enumerate(result.samples)]
            rows.append(("total", result.total[sl], result.total_uncertainty[sl]))
            observed = result.observed[sl]
            header = [f"bin {b}" for b in range(sl.stop - sl.start)]
        else:
            rows = [(s, result.channel_yields[i, c:c + 1], result.channel_uncertainties[i, c:c + 1])
                    for i, s in enumerate(result.samples)]
            rows.append(("total", result.channel_total[c:c + 1], result.channel_total_uncertainty[c:c + 1]))
            observed = result.observed[sl].sum(keepdims=True)
            header = ["yield"]
        lines.append(f"{name} ({label})")
        lines.append(f"  {'sample':<{width}}" + "".join(f"{h:>13}{'':11}" for h in header))
        for sample, values, errors in rows:
            lines.append(f"  {sample:<{width}}" + "".join(f"{v:>13.5g} +- {e:<7.2g}" for v, e in zip(values, errors)))
        lines.append(f"  {'data':<{width}}" + "".join(f"{v:>13.5g}{'':11}" for v in observed))
    return "\n".join(lines)
