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


def _poi_label(name: str | None) -> str:
    return "POI" if not name else f"{name} (POI)"


def pulls(fit_result: Any, model: Any, *, out: str | Path | None = None, threshold: float = 0.0):
    """Pulls (theta_hat - centre) / prefit width with post-fit error bars, every constrained free parameter.

    ``threshold > 0`` keeps only parameters with |pull| >= threshold or a post-fit
    error below (1 - threshold) of the pre-fit width, and the title says so.
    """
    from bayeshf.impacts import prefit_constraints

    plt = _pyplot()
    centre, width = prefit_constraints(model)
    width = np.where(np.isfinite(width), width, 0.0)
    constrained = [i for i in range(model.npars) if width[i] > 0 and not fit_result.fixed[i]]
    pull_all = (fit_result.bestfit - centre) / np.where(width > 0, width, 1.0)
    err_all = fit_result.uncertainties / np.where(width > 0, width, 1.0)
    keep = [i for i in constrained if threshold <= 0 or abs(pull_all[i]) >= threshold or err_all[i] <= 1 - threshold]
    if not keep:
        keep = constrained
    pull, err = pull_all[keep], err_all[keep]
    names = [model.par_names[i] for i in keep]
    height = 0.22 * len(keep) + 1.4
    fig, ax = plt.subplots(figsize=(6.5, height))
    y = np.arange(len(keep))[::-1]
    ax.axvspan(-2, 2, color="#ffe066", zorder=0)
    ax.axvspan(-1, 1, color="#69db7c", zorder=0)
    ax.errorbar(np.clip(pull, -2.9, 2.9), y, xerr=err, fmt="o", color="black", ms=3, capsize=0)
    outside = np.abs(pull) > 2.9
    for yy, value in zip(y[outside], pull[outside]):  # beyond the axis: the value is written instead
        ax.text(np.sign(value) * 2.85, yy, f"{value:.1f}", ha="right" if value > 0 else "left", va="bottom", fontsize=6)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, names, fontsize=7)
    ax.set_ylim(-0.8, len(keep) - 0.2)
    ax.set_xlim(-3, 3)
    ax.set_xlabel(r"$(\hat\theta - \theta_0)/\Delta\theta$")
    title = f"pulls: all {len(constrained)} constrained parameters"
    if len(keep) < len(constrained):
        title = (f"pulls: {len(keep)} of {len(constrained)} constrained parameters\n"
                 f"(|pull| >= {threshold:g} or post-fit error <= {1 - threshold:g} of pre-fit)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def correlation_matrix(fit_result: Any, *, out: str | Path | None = None, threshold: float = 0.0):
    """Correlation matrix of the free parameters; ``threshold > 0`` keeps those with any |rho| >= threshold
    off the diagonal (and always the POI), and the title says how many were kept."""
    plt = _pyplot()
    corr = np.nan_to_num(fit_result.correlation)
    free = np.flatnonzero(fit_result.uncertainties > 0)
    off = np.abs(corr[np.ix_(free, free)] - np.eye(len(free)))
    selected = off.max(axis=1, initial=0.0) >= threshold
    poi = getattr(fit_result, "poi_index", None)
    if poi is not None:
        selected |= free == poi
    kept = free[selected]
    sub = corr[np.ix_(kept, kept)]
    names = [fit_result.par_names[i] + (" (POI)" if i == poi else "") for i in kept]
    n = len(kept)
    font = 7 if n <= 60 else max(3.0, 7 * 60 / n)
    size = min(0.2 * n + 3.0, 60.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(sub, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="correlation")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{sub[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(sub[i, j]) > 0.6 else "black")
    if n < len(free):
        ax.set_title(f"{n} of {len(free)} free parameters: those with some |correlation| >= {threshold:g}"
                     + (" and the POI" if poi is not None else ""), fontsize=9)
    else:
        ax.set_title(f"all {len(free)} free parameters", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def ranking(impacts_result: Any, *, out: str | Path | None = None, max_pars: int | None = 20):
    """Impact ranking: pre-/post-fit impacts on the POI (bars) and pulls (points, top axis).

    The ``max_pars`` largest post-fit impacts (``None``: all); the title says how many of how many.
    """
    plt = _pyplot()
    ranked = impacts_result.ranked()
    if ranked.method == "refit" and not np.any(np.nan_to_num(np.concatenate([ranked.postfit_up, ranked.postfit_down]))):
        import warnings

        warnings.warn(f"every refit impact on {ranked.poi_name} is zero (its best fit sits on a bound?); "
                      "impacts(..., method='hessian') gives the linear ones.", stacklevel=2)
    total = len(ranked.par_names)
    n = total if max_pars is None else min(max_pars, total)
    y = np.arange(n)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * n + 1.5))
    pre_up, pre_down = np.nan_to_num(ranked.prefit_up[:n]), np.nan_to_num(ranked.prefit_down[:n])
    ax.barh(y, pre_up, color="none", edgecolor="#1c7ed6", label=r"pre-fit $+\Delta\theta$")
    ax.barh(y, pre_down, color="none", edgecolor="#e8590c", label=r"pre-fit $-\Delta\theta$")
    ax.barh(y, ranked.postfit_up[:n], color="#1c7ed6", alpha=0.7, label=r"post-fit $+\Delta\hat\theta$")
    ax.barh(y, ranked.postfit_down[:n], color="#e8590c", alpha=0.7, label=r"post-fit $-\Delta\hat\theta$")
    ax.set_yticks(y, ranked.par_names[:n], fontsize=7)
    ax.set_xlabel(f"impact on {_poi_label(ranked.poi_name)} best fit ({ranked.method})")
    ax.set_title(f"all {total} parameters, by post-fit impact" if n == total
                 else f"the {n} largest post-fit impacts of {total} parameters", fontsize=9, loc="left")
    ax.axvline(0, color="black", lw=0.8)
    top = ax.twiny()
    width = np.where(np.isfinite(ranked.prefit_uncertainty), ranked.prefit_uncertainty, 1.0)[:n]
    centre = np.where(np.isfinite(ranked.prefit_centre), ranked.prefit_centre, 0.0)[:n]
    top.errorbar((ranked.bestfit[:n] - centre) / width, y, xerr=ranked.postfit_uncertainty[:n] / width,
                 fmt="o", color="black", ms=3)
    top.set_xlim(-2, 2)
    top.set_xlabel(r"pull $(\hat\theta-\theta_0)/\Delta\theta$")
    ax.set_ylim(-0.7, n - 0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, out)


def scan(scan_result: Any, *, out: str | Path | None = None, poi_name: str | None = None):
    """Profile-likelihood scan with the best fit, the Gaussian approximation of the Hessian error,
    and the 68% and 95% levels and intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.3))
    x = np.asarray(scan_result.values, dtype=float)
    ax.plot(x, scan_result.delta_twice_nll, "o-", color="black", ms=3, label="profile likelihood")
    best, sigma = float(scan_result.bestfit), float(scan_result.uncertainty)
    if np.isfinite(sigma) and sigma > 0:
        fine = np.linspace(x.min(), x.max(), 200)
        ax.plot(fine, ((fine - best) / sigma) ** 2, "--", color="tab:blue", lw=1,
                label=rf"Gaussian approximation ($\pm${sigma:.3g}, Hessian)")
    ax.axvline(best, color="tab:red", lw=0.8)
    ax.plot([best], [0.0], marker="*", color="tab:red", ms=11, ls="none", clip_on=False,
            label=f"best fit {best:.4g}")
    for level, label, interval in ((1.0, "68%", scan_result.interval_68),
                                   (3.841458820694124, "95%", scan_result.interval_95)):
        low, high = (float(v) if v is not None else np.nan for v in interval)
        text = label + (f" interval [{low:.4g}, {high:.4g}]" if np.isfinite(low) and np.isfinite(high)
                        else " level (interval not closed on the scan)")
        ax.axhline(level, color="grey", ls=":" if level < 2 else "-.", lw=0.8, label=text)
    name = scan_result.par_name
    ax.set_xlabel(_poi_label(name) if poi_name is not None and name == poi_name else name)
    ax.set_ylabel(r"$-2\Delta\ln L$")
    top = float(np.nanmax(scan_result.delta_twice_nll))
    ax.set_ylim(0, max(top, 4.5) * 1.35)
    ax.set_xlim(x.min(), x.max())
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    return _save(fig, out)


def scan_2d(scan_result: Any, *, out: str | Path | None = None, poi_name: str | None = None):
    """2D profile likelihood: filled Delta(twice_nll) with the 68% and 95% (2 d.o.f.) contours and the best fit."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.8))
    xx, yy = np.meshgrid(scan_result.values_x, scan_result.values_y, indexing="ij")
    filled = ax.contourf(xx, yy, scan_result.delta_twice_nll, levels=20, cmap="viridis_r")
    ax.contour(xx, yy, scan_result.delta_twice_nll, levels=[2.2788, 5.9915], colors=["white", "black"])
    ax.plot(*scan_result.bestfit, "k+", ms=10)
    fig.colorbar(filled, ax=ax, label=r"$-2\Delta\ln L$")
    best = scan_result.bestfit
    ax.legend(handles=[Line2D([], [], color="white", label="68% CL (2 d.o.f.)"),
                       Line2D([], [], color="black", label="95% CL (2 d.o.f.)"),
                       Line2D([], [], color="black", marker="+", ls="none", ms=10,
                              label=f"best fit ({best[0]:.3g}, {best[1]:.3g})")],
              fontsize=8, loc="upper right", facecolor="0.85")
    names = [n if n != poi_name else _poi_label(n) for n in scan_result.par_names]
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    fig.tight_layout()
    return _save(fig, out)


def brazil(cls_result: Any, *, out: str | Path | None = None, limit: Any = None, poi_name: str | None = None):
    """CLs versus the POI: observed, expected median and the +-1, +-2 sigma bands (a CLsScanResult);
    with ``limit`` (an UpperLimitResult) the observed and expected limits are marked and written on it."""
    plt = _pyplot()
    x = cls_result.poi_values
    exp = cls_result.CLs_exp
    fig, ax = plt.subplots(figsize=(6, 4.3))
    ax.fill_between(x, exp[:, 0], exp[:, 4], color="#ffe066", label=r"expected $\pm 2\sigma$")
    ax.fill_between(x, exp[:, 1], exp[:, 3], color="#69db7c", label=r"expected $\pm 1\sigma$")
    ax.plot(x, exp[:, 2], "k--", lw=1, label="expected")
    ax.plot(x, cls_result.CLs_obs, "k-", marker="o", ms=2.5, lw=1.2, label="observed")
    ax.axhline(cls_result.level, color="red", lw=0.8, label=f"CLs = {cls_result.level:g}")
    if limit is not None:
        ax.axvline(limit.obs, color="black", lw=0.8, ls=":")
        ax.axvline(limit.exp[2], color="black", lw=0.8, ls="--", alpha=0.5)
        text = (f"{1 - cls_result.level:.0%} CL upper limits\nobserved {limit.obs:.4g}\n"
                f"expected {limit.exp[2]:.4g}\n"
                rf"$\pm1\sigma$ [{limit.exp[1]:.3g}, {limit.exp[3]:.3g}]" "\n"
                rf"$\pm2\sigma$ [{limit.exp[0]:.3g}, {limit.exp[4]:.3g}]")
        ax.text(0.97, 0.55, text, transform=ax.transAxes, ha="right", va="center", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
    ax.set_xlabel(_poi_label(poi_name))
    ax.set_ylabel(r"$\mathrm{CL}_s$")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(float(np.min(x)), float(np.max(x)))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return _save(fig, out)
