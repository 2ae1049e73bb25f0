"""Posterior plots from an ``arviz.InferenceData``: corner, predictive checks, traces.

Every function takes the InferenceData (nothing resamples to draw) and returns
a matplotlib Figure; ``out=`` also saves it (atomically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bayeshf.diagnostics import scalar_draws
from bayeshf.errors import BayeshfError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path | None, dpi: int = 120):
    if out is not None:
        from bayeshf.io import atomic_path

        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png", bbox_inches="tight")
    return fig


def default_corner_vars(idata, *, max_vars: int = 6) -> list[str]:
    """The POI and the free parameters most correlated with it (by |Pearson r|)."""
    draws = scalar_draws(idata)
    if not draws:
        raise BayeshfError("the posterior holds no free parameter to plot.")
    names = list(draws)
    poi = str(idata.posterior.attrs.get("poi", "") or "")
    if poi not in draws:
        return names[:max_vars]
    x = draws[poi].ravel()
    scores = []
    for name in names:
        if name == poi:
            continue
        y = draws[name].ravel()
        r = np.corrcoef(x, y)[0, 1] if np.std(y) > 0 and np.std(x) > 0 else 0.0
        scores.append((-abs(np.nan_to_num(r)), name))
    return [poi] + [name for _, name in sorted(scores)[: max_vars - 1]]


def corner(idata, var_names: list[str] | None = None, *, out: str | Path | None = None, group: str = "posterior",
           markers: Any = None, marker_label: str = "MAP"):
    """Corner plot (1D and 2D marginals with 16/50/84% quantiles) of ``var_names``.

    Names are scalar parameter names (``staterror_SR[0]``) or parameter sets
    (all elements); default: :func:`default_corner_vars`. ``markers`` (a
    {name: value} mapping, or a FitResult: its best fit) marks a point on every
    panel, e.g. the MAP (with the default flat reference priors, the
    maximum-likelihood fit); default: the ``map`` attribute of the posterior if
    the file has one. Titles carry the median and the 68% interval only (the
    names are the axis labels), so they fit above their panels.
    """
    import corner as corner_lib

    draws = scalar_draws(idata) if group == "posterior" else _group_draws(idata, group)
    var_names = list(var_names) if var_names else default_corner_vars(idata)
    chosen = []
    for name in var_names:
        matches = [k for k in draws if k == name or k.split("[")[0] == name]
        if not matches:
            raise BayeshfError(f"{name!r} is not a free parameter of the posterior; "
                               f"choose from {', '.join(list(draws)[:8])}{', ...' if len(draws) > 8 else ''}.")
        chosen += [m for m in matches if m not in chosen]
    data = np.column_stack([draws[name].ravel() for name in chosen])
    truths = _marker_values(idata, chosen, markers) if group == "posterior" else None
    q = np.quantile(data, [0.16, 0.5, 0.84], axis=0)
    titles = [rf"${q[1, i]:.3g}^{{+{q[2, i] - q[1, i]:.2g}}}_{{-{q[1, i] - q[0, i]:.2g}}}$" for i in range(len(chosen))]
    n = len(chosen)
    font = 10 if n <= 4 else (8 if n <= 8 else 6)
    labels = [_wrap(name, 18 if n > 4 else 26) for name in chosen]
    fig = corner_lib.corner(data, labels=labels, quantiles=[0.16, 0.5, 0.84], label_kwargs={"fontsize": font},
                            truths=truths, truth_color="tab:red", max_n_ticks=3, labelpad=0.1)
    for ax in fig.axes:
        ax.tick_params(labelsize=max(font - 2, 5))
    for i, title in enumerate(titles):  # on the diagonal, numbers only
        fig.axes[i * n + i].set_title(title, fontsize=font)
    if truths is not None:
        from matplotlib.lines import Line2D

        # the empty upper triangle holds the legend
        fig.legend(handles=[Line2D([], [], color="tab:red", marker="s", label=marker_label)], loc="upper right",
                   bbox_to_anchor=(0.97, 0.75), fontsize=font + 1, frameon=False)
    return _save(fig, out)


def _wrap(name: str, width: int) -> str:
    """Break long parameter names at underscores so axis labels stay within their panel."""
    if len(name) <= width:
        return name
    lines, line = [], ""
    for part in name.split("_"):
        piece = part if not line else "_" + part
        if line and len(line) + len(piece) > width:
            lines.append(line + "_")
            line = part
        else:
            line += piece
    return "\n".join(lines + [line])


def _marker_values(idata, chosen: list[str], markers: Any) -> list[float | None] | None:
    """Marker value per chosen scalar name from a mapping, a FitResult or the posterior's ``map`` attribute."""
    if markers is None:
        stored = idata.posterior.attrs.get("map", None)
        names = idata.posterior.attrs.get("par_names", None)
        if stored is None or names is None or len(np.atleast_1d(stored)) != len(np.atleast_1d(names)):
            return None
        markers = dict(zip([str(n) for n in np.atleast_1d(names)], np.atleast_1d(stored).astype(float)))
    elif hasattr(markers, "bestfit") and hasattr(markers, "par_names"):
        markers = dict(zip(markers.par_names, np.asarray(markers.bestfit, dtype=float)))
    values = [markers.get(name) for name in chosen]
    return None if all(v is None for v in values) else [None if v is None else float(v) for v in values]


def _group_draws(idata, group: str) -> dict[str, np.ndarray]:
    data = getattr(idata, group)
    out = {}
    for name, var in data.data_vars.items():
        values = np.asarray(var.values, dtype=float)
        if values.ndim == 2:
            out[str(name)] = values
        else:
            out.update({f"{name}[{i}]": values[..., i] for i in range(values.shape[-1])})
    return out


#: predictive-check panels drawn at most (thousands of channels took minutes, then memory)
MAX_PPC_PANELS = 20


def _farthest_channels(idata, channels: list[str], keep: int) -> list[str]:
    """The ``keep`` channels whose observed counts lie farthest from the posterior predictive median, in
    units of its 68% half-width, in their original order."""
    scores = []
    for channel in channels:
        counts = np.asarray(idata.posterior_predictive[channel].values, dtype=float)
        counts = counts.reshape(-1, counts.shape[-1])
        q16, q50, q84 = np.quantile(counts, [0.16, 0.5, 0.84], axis=0)
        observed = np.asarray(idata.observed_data[channel].values, dtype=float)
        scores.append(float(np.max(np.abs(observed - q50) / np.maximum((q84 - q16) / 2, 0.5))))
    chosen = set(np.argsort(scores)[::-1][:keep].tolist())
    return [c for i, c in enumerate(channels) if i in chosen]


def ppc(idata, *, out: str | Path | None = None, max_panels: int = MAX_PPC_PANELS):
    """Per channel: observed counts over the prior and posterior predictive 68%/95% bands.

    With more than ``max_panels`` channels, the ``max_panels`` farthest from the posterior predictive
    median are drawn and the figure says so.
    """
    plt = _pyplot()
    if "posterior_predictive" not in idata.groups():
        raise BayeshfError("the InferenceData has no posterior_predictive group to plot.")
    channels = list(idata.posterior_predictive.data_vars)
    total = len(channels)
    if total > max_panels:
        channels = _farthest_channels(idata, channels, max_panels)
    fig, axes = plt.subplots(len(channels), 1, figsize=(7, 2.8 * len(channels)), squeeze=False)
    for ax, channel in zip(axes[:, 0], channels):
        bands = [("posterior_predictive", "tab:blue", "posterior predictive")]
        if "prior_predictive" in idata.groups():
            bands.insert(0, ("prior_predictive", "tab:gray", "prior predictive"))
        top = 0.0
        for group, color, label in bands:
            counts = np.asarray(getattr(idata, group)[channel].values, dtype=float)
            counts = counts.reshape(-1, counts.shape[-1])
            bins = np.arange(counts.shape[-1] + 1)
            q = np.quantile(counts, [0.025, 0.16, 0.5, 0.84, 0.975], axis=0)
            ax.fill_between(bins, np.append(q[0], q[0][-1]), np.append(q[4], q[4][-1]), step="post",
                            color=color, alpha=0.2, lw=0)
            ax.fill_between(bins, np.append(q[1], q[1][-1]), np.append(q[3], q[3][-1]), step="post",
                            color=color, alpha=0.35, lw=0, label=f"{label} 68% / 95%")
            ax.stairs(q[2], bins, color=color, lw=1)
            if group == "posterior_predictive":
                top = max(top, float(q[4].max()))
        observed = np.asarray(idata.observed_data[channel].values, dtype=float)
        top = max(top, float((observed + np.sqrt(observed)).max()))
        ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)  # the prior band may extend beyond: it is context
        centres = np.arange(observed.size) + 0.5
        ax.errorbar(centres, observed, yerr=np.sqrt(observed), fmt="o", color="black", ms=4, label="observed")
        ax.set_title(channel, fontsize=10)
        ax.set_xlabel("bin")
        ax.set_ylabel("events")
        ax.set_xlim(0, observed.size)
        if observed.size <= 30:  # integer bins, labelled at their centres
            ax.set_xticks(centres, [str(i) for i in range(observed.size)])
        ax.legend(fontsize=8)
    if total > len(channels):
        fig.suptitle(f"{len(channels)} of {total:,} channels: those farthest from the posterior predictive median",
                     fontsize=11, y=1 - 0.15 / fig.get_figheight(), va="top")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # room for the note
    else:
        fig.tight_layout()
    return _save(fig, out)


def trace(idata, var_names: list[str] | None = None, *, out: str | Path | None = None, max_vars: int = 8):
    """Trace (draw index vs value, one line per chain) and marginal per parameter."""
    plt = _pyplot()
    draws = scalar_draws(idata)
    names = list(var_names) if var_names else default_corner_vars(idata, max_vars=max_vars)
    chosen = [k for name in names for k in draws if k == name or k.split("[")[0] == name]
    if not chosen:
        raise BayeshfError("none of the requested parameters is a free parameter of the posterior.")
    fig, axes = plt.subplots(len(chosen), 2, figsize=(10, 1.9 * len(chosen)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for (ax_trace, ax_hist), name in zip(axes, chosen):
        values = draws[name]
        for chain, series in enumerate(values):
            ax_trace.plot(series, lw=0.5, alpha=0.8, label=f"chain {chain}")
            ax_hist.hist(series, bins=40, histtype="step", density=True)
        ax_trace.set_ylabel(name, fontsize=8)
    axes[-1, 0].set_xlabel("draw")
    fig.tight_layout()
    return _save(fig, out)
