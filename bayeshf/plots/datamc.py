"""Data versus model: stacked expected yields per sample, data points, uncertainty band, ratio panel.

Takes a :class:`~bayeshf.yields.YieldsResult` (pre-fit, post-fit or
posterior; nothing is refitted here) and draws one figure per channel, or one
summary figure with one bin per channel. Experiment styles come from mplhep
(``style="atlas"``, ``"cms"``, or ``"plain"`` for matplotlib's own).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.plots.bayes import _pyplot, _save

__all__ = ["STYLES", "data_mc", "data_mc_summary"]

STYLES = ("atlas", "cms", "plain")
_KIND_LABEL = {"prefit": "pre-fit", "postfit": "post-fit", "posterior": "posterior"}
_BAND_LABEL = {"prefit": "pre-fit uncertainty", "postfit": "post-fit uncertainty (Hessian)",
               "posterior": "posterior 68% of the expectation"}


@contextlib.contextmanager
def _style(style: str):
    plt = _pyplot()
    if style not in STYLES:
        raise BayeshfError(f"unknown style {style!r}: choose from {', '.join(STYLES)}.")
    if style == "plain":
        with plt.style.context("default"):
            yield
        return
    import logging

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # the styles name fonts few systems have
    try:
        import mplhep
    except ImportError:  # pragma: no cover - mplhep is in the [plot] extra
        raise BayeshfError(f"--style {style} needs mplhep: pip install 'bayeshf[plot]'.") from None
    with plt.style.context(mplhep.style.ATLAS if style == "atlas" else mplhep.style.CMS):
        yield


def _experiment_label(ax, style: str, text: str) -> None:
    if style != "plain":
        import mplhep

        (mplhep.atlas if style == "atlas" else mplhep.cms).label(text="Internal", data=True, ax=ax, rlabel="", loc=0)
    # inside the frame, top left: long channel names never collide with the experiment label
    ax.text(0.03, 0.96, text, transform=ax.transAxes, ha="left", va="top", fontsize=12)


def _draw(labels: Sequence[str], samples: Sequence[str], stack: np.ndarray, total: np.ndarray, band: np.ndarray,
          observed: np.ndarray, *, title: str, kind: str, style: str, xlabel: str, categorical: bool,
          predictive: np.ndarray | None = None):
    plt = _pyplot()
    n = total.size
    edges = np.arange(n + 1, dtype=float)
    order = np.argsort(stack.sum(axis=1))  # smallest on top of the stack, largest at the bottom
    with _style(style):
        width = (min(max(6.0, 0.35 * n + 3.0), 16.0) if categorical else 7.0) + 3.0
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(width, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1], "hspace": 0.06})
        colors = plt.get_cmap("tab20" if len(samples) > 10 else "tab10").colors
        # the stack with matplotlib's stairs (mplhep is optional): largest sample at the bottom
        bottom = np.zeros(n)
        for i in order[::-1]:
            ax.stairs(bottom + stack[i], edges, baseline=bottom.copy(), fill=True, color=colors[i % len(colors)],
                      label=samples[i], lw=0)
            bottom = bottom + stack[i]
        ax.stairs(total, edges, color="black", lw=0.8)
        ax.stairs(band[1], edges, baseline=band[0], fill=True, facecolor="none", edgecolor="0.3", hatch="////",
                  lw=0, label=_BAND_LABEL[kind])
        if predictive is not None:
            ax.stairs(predictive[0], edges, color="tab:purple", ls="--", lw=1)
            ax.stairs(predictive[1], edges, color="tab:purple", ls="--", lw=1, label="posterior predictive 68%")
        centres = edges[:-1] + 0.5
        err = np.sqrt(np.maximum(observed, 0.0))
        ax.errorbar(centres, observed, yerr=err, fmt="o", color="black", ms=4, label="data", zorder=5)
        top = float(max(np.max(band[1]), np.max(observed + err), 1e-9))
        positive = np.concatenate([total[total > 0], observed[observed > 0]])
        if positive.size and top / max(float(positive.min()), 1e-9) > 200:
            ax.set_yscale("log")
            ax.set_ylim(max(float(positive.min()) * 0.3, 1e-3), top * 30)
        else:
            ax.set_ylim(0, top * 1.3)
        ax.set_ylabel("events" if not categorical else "events per channel")
        # outside the frame, on the right: it can never hide a bin; samples listed top of the stack first
        handles, names = ax.get_legend_handles_labels()
        k = len(samples)
        ax.legend(handles[:k][::-1] + handles[k:], names[:k][::-1] + names[k:], fontsize=10, ncol=2 if len(samples) > 14 else 1, loc="upper left", frameon=False,
                  bbox_to_anchor=(1.02, 1.0))
        _experiment_label(ax, style, f"{title} ({_KIND_LABEL[kind]})")

        safe = np.where(total > 0, total, np.nan)
        rax.stairs(band[1] / safe, edges, baseline=band[0] / safe, fill=True, facecolor="none", edgecolor="0.3",
                   hatch="////", lw=0)
        rax.errorbar(centres, observed / safe, yerr=err / safe, fmt="o", color="black", ms=4)
        rax.axhline(1.0, color="black", lw=0.8, ls="--")
        ratio_points = np.concatenate([(observed + err) / safe, (observed - err) / safe, band[1] / safe,
                                       band[0] / safe])
        ratio_points = ratio_points[np.isfinite(ratio_points)]
        spread = float(np.max(np.abs(ratio_points - 1.0))) if ratio_points.size else 0.5
        half = min(max(0.25, np.ceil(spread * 1.15 * 4) / 4), 1.0)
        rax.set_ylim(max(0.0, 1 - half), 1 + half)
        rax.set_ylabel("data / model")
        rax.set_xlim(0, n)
        if categorical:
            upright = n > 6 or max(len(label) for label in labels) > 12
            rax.set_xticks(centres, labels, rotation=90 if upright else 0, fontsize=10 if n <= 20 else 8)
            rax.tick_params(axis="x", which="minor", bottom=False, top=False)
        elif n <= 30:
            rax.set_xticks(centres, [str(i) for i in range(n)])
            rax.tick_params(axis="x", which="minor", bottom=False, top=False)
        rax.set_xlabel(xlabel)
        fig.align_ylabels([ax, rax])
    return fig


def data_mc(result: Any, channel: str, *, style: str = "plain", out: str | Path | None = None):
    """Stacked samples, data, band and ratio for the bins of ``channel`` (a YieldsResult)."""
    sl = result.channel_slice(channel)
    predictive = None if result.predictive_band is None else result.predictive_band[:, sl]
    fig = _draw([str(i) for i in range(sl.stop - sl.start)], result.samples, result.yields[:, sl],
                result.total[sl], result.total_band[:, sl], result.observed[sl], title=channel, kind=result.kind,
                style=style, xlabel="bin", categorical=False, predictive=predictive)
    return _save(fig, out)


def data_mc_summary(result: Any, *, style: str = "plain", out: str | Path | None = None):
    """One bin per channel (the channel's total yields): the summary of a model with many channels."""
    band = np.stack([result.channel_total - result.channel_total_uncertainty,
                     result.channel_total + result.channel_total_uncertainty])
    if result.kind == "posterior" and result.channel_band is not None:
        band = result.channel_band
    observed = np.array([result.observed[result.channel_slice(c)].sum() for c in result.channels])
    fig = _draw(list(result.channels), result.samples, result.channel_yields, result.channel_total, band, observed,
                title=f"all {len(result.channels)} channels", kind=result.kind, style=style, xlabel="channel",
                categorical=True, predictive=result.channel_predictive_band)
    return _save(fig, out)
