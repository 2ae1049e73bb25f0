"""Frequentist plots from result containers: pulls, correlations, ranking, scans, Brazil band.

Every function takes a result (``FitResult``, ``ImpactsResult``, ``ScanResult``,
``Scan2DResult``, ``CLsScanResult`` / ``UpperLimitResult``), never refits, and
returns a matplotlib Figure; ``out=`` also saves it atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bayeshf.plots.bayes import _pyplot, _save

__all__ = ["pulls", "correlation_matrix", "ranking", "scan", "scan_2d", "brazil"]


def pulls(fit_result: Any, model: Any, *, out: str | Path | None = None, max_pars: int = 60):
    """Pulls (theta_hat - centre) / prefit width with post-fit error bars, constrained parameters only."""
    from bayeshf.impacts import prefit_constraints

    plt = _pyplot()
    centre, width = prefit_constraints(model)
    keep = [i for i in range(model.npars) if np.isfinite(width[i]) and not fit_result.fixed[i]][:max_pars]
    pull = (fit_result.bestfit[keep] - centre[keep]) / width[keep]
    err = fit_result.uncertainties[keep] / width[keep]
    names = [model.par_names[i] for i in keep]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(keep) + 1.2))
    y = np.arange(len(keep))[::-1]
    ax.axvspan(-2, 2, color="#ffe066", zorder=0)
    ax.axvspan(-1, 1, color="#69db7c", zorder=0)
    ax.errorbar(pull, y, xerr=err, fmt="o", color="black", ms=3, capsize=0)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(-3, 3)
    ax.set_xlabel(r"$(\hat\theta - \theta_0)/\Delta\theta$")
    ax.set_title("pulls")
    fig.tight_layout()
    return _save(fig, out)


def correlation_matrix(fit_result: Any, *, out: str | Path | None = None, threshold: float = 0.0,
                       max_pars: int = 50):
    """Correlation matrix of the free parameters (those with any |rho| >= ``threshold`` off the diagonal)."""
    plt = _pyplot()
    corr = fit_result.correlation
    free = np.flatnonzero(fit_result.uncertainties > 0)
    off = np.abs(corr[np.ix_(free, free)] - np.eye(len(free)))
    free = free[off.max(axis=1, initial=0.0) >= threshold][:max_pars]
    sub = corr[np.ix_(free, free)]
    names = [fit_result.par_names[i] for i in free]
    size = 0.22 * len(free) + 2.5
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(sub, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(free)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(free)), names, fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="correlation")
    if len(free) <= 20:
        for i in range(len(free)):
            for j in range(len(free)):
                ax.text(j, i, f"{sub[i, j]:.2f}", ha="center", va="center", fontsize=5)
    fig.tight_layout()
    return _save(fig, out)


def ranking(impacts_result: Any, *, out: str | Path | None = None, max_pars: int = 20):
    """Impact ranking: pre-/post-fit impacts on the POI (bars) and pulls (points, top axis)."""
    plt = _pyplot()
    ranked = impacts_result.ranked()
    n = min(max_pars, len(ranked.par_names))
    y = np.arange(n)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * n + 1.5))
    pre_up, pre_down = np.nan_to_num(ranked.prefit_up[:n]), np.nan_to_num(ranked.prefit_down[:n])
    ax.barh(y, pre_up, color="none", edgecolor="#1c7ed6", label=r"pre-fit $+\Delta\theta$")
    ax.barh(y, pre_down, color="none", edgecolor="#e8590c", label=r"pre-fit $-\Delta\theta$")
    ax.barh(y, ranked.postfit_up[:n], color="#1c7ed6", alpha=0.7, label=r"post-fit $+\Delta\hat\theta$")
    ax.barh(y, ranked.postfit_down[:n], color="#e8590c", alpha=0.7, label=r"post-fit $-\Delta\hat\theta$")
    ax.set_yticks(y, ranked.par_names[:n], fontsize=7)
    ax.set_xlabel(rf"$\Delta\hat\mu$ ({ranked.poi_name})")
    ax.axvline(0, color="black", lw=0.8)
    top = ax.twiny()
    width = np.where(np.isfinite(ranked.prefit_uncertainty), ranked.prefit_uncertainty, 1.0)[:n]
    centre = np.where(np.isfinite(ranked.prefit_centre), ranked.prefit_centre, 0.0)[:n]
    top.errorbar((ranked.bestfit[:n] - centre) / width, y, xerr=ranked.postfit_uncertainty[:n] / width,
                 fmt="o", color="black", ms=3)
    top.set_xlim(-2, 2)
    top.set_xlabel(r"pull $(\hat\theta-\theta_0)/\Delta\theta$")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


def scan(scan_result: Any, *, out: str | Path | None = None):
    """Profile-likelihood scan with the 68% and 95% levels."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(scan_result.values, scan_result.delta_twice_nll, "o-", color="black", ms=3)
    for level, label in ((1.0, "68%"), (3.841458820694124, "95%")):
        ax.axhline(level, color="grey", ls="--", lw=0.8)
        ax.text(scan_result.values[0], level, label, va="bottom", fontsize=8, color="grey")
    ax.set_xlabel(scan_result.par_name)
    ax.set_ylabel(r"$-2\Delta\ln L$")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return _save(fig, out)


def scan_2d(scan_result: Any, *, out: str | Path | None = None):
    """2D profile likelihood: filled Delta(twice_nll) with the 68% and 95% (2 d.o.f.) contours."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    xx, yy = np.meshgrid(scan_result.values_x, scan_result.values_y, indexing="ij")
    filled = ax.contourf(xx, yy, scan_result.delta_twice_nll, levels=20, cmap="viridis_r")
    ax.contour(xx, yy, scan_result.delta_twice_nll, levels=[2.2788, 5.9915], colors=["white", "black"])
    ax.plot(*scan_result.bestfit, "k+", ms=10)
    fig.colorbar(filled, ax=ax, label=r"$-2\Delta\ln L$")
    ax.set_xlabel(scan_result.par_names[0])
    ax.set_ylabel(scan_result.par_names[1])
    fig.tight_layout()
    return _save(fig, out)


def brazil(cls_result: Any, *, out: str | Path | None = None, limit: Any = None, poi_name: str = r"$\mu$"):
    """CLs versus the POI: observed, expected median and the +-1, +-2 sigma bands (a CLsScanResult)."""
    plt = _pyplot()
    x = cls_result.poi_values
    exp = cls_result.CLs_exp
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.fill_between(x, exp[:, 0], exp[:, 4], color="#ffe066", label=r"expected $\pm 2\sigma$")
    ax.fill_between(x, exp[:, 1], exp[:, 3], color="#69db7c", label=r"expected $\pm 1\sigma$")
    ax.plot(x, exp[:, 2], "k--", lw=1, label="expected")
    ax.plot(x, cls_result.CLs_obs, "k-", marker="o", ms=2.5, lw=1.2, label="observed")
    ax.axhline(cls_result.level, color="red", lw=0.8, label=f"CLs = {cls_result.level:g}")
    if limit is not None:
        ax.axvline(limit.obs, color="black", lw=0.6, ls=":")
    ax.set_xlabel(poi_name)
    ax.set_ylabel(r"$\mathrm{CL}_s$")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)
