"""Exclusion contours over a signal grid (the output of ``bayeshf cls/limit --patchset``).

Interpolated as analyses do: on log CLs (or log of the upper limit on the
signal strength, excluded where it is below 1) over a Delaunay triangulation
of the points (matplotlib.tri), linearly within each triangle. Every curve
(observed, expected, the +-1 sigma edges) is interpolated on the same
triangulation, and linear interpolation keeps the pointwise order of the band
(-1 sigma <= expected <= +1 sigma), so the band always encloses the expected
line. The observed excluded side is hatched, the points are marked (failed
ones as crosses). Bayesian grids (``limit --method bayesian``) draw the
credible upper limit's contour alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.plots.bayes import _pyplot, _save

__all__ = ["contour", "grid_arrays"]

#: axis names when neither the results nor the caller give the patchset's labels
DEFAULT_AXIS_NAMES = ("first grid coordinate", "second grid coordinate", "third grid coordinate")
OBSERVED, EXPECTED, BAND, EXCLUDED = "#c62828", "black", "#ffd54f", "#e57373"


def _axes(values: np.ndarray) -> list[int]:
    """The first two coordinates that vary over the grid."""
    varying = [j for j in range(values.shape[1]) if np.ptp(values[:, j]) > 0]
    if len(varying) < 2:
        raise BayeshfError("a contour needs points spread over two coordinates; these vary in fewer.")
    return varying[:2]


def _kind(points: Sequence[Mapping[str, Any]]) -> str:
    if any("CLs_obs" in p for p in points):
        return "cls"
    if any("upper_limit" in p for p in points):
        return "bayesian"
    return "limit"


def grid_arrays(points: Sequence[Mapping[str, Any]], kind: str | None = None):
    """(values (n, d), quantity (n, 6): observed then the band in pyhf's order, ok mask, kind) from result dicts.

    Limits above the POI's bound (a point with ``poi_bound``) read as the bound when it exceeds 1 (the point is
    not excluded there); Bayesian results have the credible limit in every column.
    """
    if not points:
        raise BayeshfError("the results hold no points.")
    kind = kind or _kind(points)
    values, quantity, ok = [], [], []
    for p in points:
        values.append([float(v) for v in p.get("values", [])])
        if kind == "bayesian":
            row = [p.get("upper_limit")] * 6
        elif kind == "cls":
            row = [p.get("CLs_obs"), *(p.get("CLs_exp") or [None] * 5)]
        else:
            row = [p.get("obs"), *(p.get("exp") or [None] * 5)]
            bound = p.get("poi_bound")
            if p.get("error") and bound is not None and float(bound) > 1.0:
                row = [float(bound) if v is None else v for v in row]
            elif p.get("error"):
                row = [None] * 6
        if kind == "cls" and p.get("error"):
            row = [None] * 6
        good = len(row) == 6 and all(v is not None for v in row)
        quantity.append([float(v) for v in row] if good else [np.nan] * 6)
        ok.append(good)
    widths = {len(v) for v in values}
    if len(widths) != 1:
        raise BayeshfError("the points have different numbers of coordinates (values).")
    return np.array(values, dtype=float), np.array(quantity, dtype=float), np.array(ok), kind


def _triangulation(x: np.ndarray, y: np.ndarray):
    """Delaunay in axis-scaled coordinates (so triangles do not follow the units' ratio), slivers on the hull masked."""
    import matplotlib.tri as mtri

    sx, sy = np.ptp(x) or 1.0, np.ptp(y) or 1.0
    scaled = mtri.Triangulation(x / sx, y / sy)
    tri = mtri.Triangulation(x, y, triangles=scaled.triangles)
    flat = mtri.TriAnalyzer(scaled).get_flat_tri_mask(min_circle_ratio=0.01)
    if not flat.all():
        tri.set_mask(flat)
    return tri


def contour(points: Sequence[Mapping[str, Any]], *, out: str | Path | None = None, labels: Sequence[str] | None = None,
            kind: str | None = None, level: float = 0.05, title: str | None = None):
    """Observed and expected exclusion contours with the +-1 sigma band; returns the Figure."""
    values, q, ok, kind = grid_arrays(points, kind)
    ix, iy = _axes(values)
    x, y = values[:, ix], values[:, iy]
    good = ok & np.all(np.isfinite(q) & (q > 0), axis=1)
    if good.sum() < 3:
        raise BayeshfError("a contour needs at least three points with results.")
    # excluded where the interpolated quantity is below 0: log(CLs / level), or log(limit on mu / 1)
    threshold = level if kind == "cls" else 1.0
    z = np.log(q[good] / threshold)
    tri = _triangulation(x[good], y[good])
    low = float(np.min(z)) - 1.0
    high = float(np.max(z)) + 1.0

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 5.6))
    handles = []
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def excluded(column, **style):  # the region below 0 of one curve, filled
        if np.min(z[:, column]) < 0.0:
            ax.tricontourf(tri, z[:, column], levels=[low, 0.0], **style)

    if kind != "bayesian":
        # the band: inside the -1 sigma curve's excluded region, outside the +1 sigma one's (painted over)
        excluded(2, colors=[BAND], zorder=1)
        excluded(4, colors=["white"], zorder=1.1)
        handles.append(Patch(facecolor=BAND, label=r"expected $\pm 1\sigma$"))
    # the observed excluded side: hatched, as exclusion plots mark it
    import matplotlib as mpl

    with mpl.rc_context({"hatch.color": EXCLUDED, "hatch.linewidth": 0.8}):
        excluded(0, colors="none", hatches=["////"], zorder=1.2)
    if kind != "bayesian":
        if np.min(z[:, 3]) < 0.0 < np.max(z[:, 3]):
            ax.tricontour(tri, z[:, 3], levels=[0.0], colors=EXPECTED, linestyles="--", linewidths=2.0, zorder=3)
        handles.insert(0, Line2D([], [], color=EXPECTED, ls="--", lw=2.0, label="expected"))
    observed = "observed" if kind != "bayesian" else f"{100 * (1 - level):g}% credible limit on $\\mu$ = 1"
    if np.min(z[:, 0]) < 0.0 < np.max(z[:, 0]):
        ax.tricontour(tri, z[:, 0], levels=[0.0], colors=OBSERVED, linewidths=2.5, zorder=4)
    handles.insert(0, Line2D([], [], color=OBSERVED, lw=2.5, label=observed))
    handles.append(Patch(facecolor="none", edgecolor=EXCLUDED, hatch="////", label="excluded (observed)"))
    ax.scatter(x[good], y[good], s=9, color="0.35", zorder=5, linewidths=0)
    handles.append(Line2D([], [], color="0.35", marker="o", ls="", ms=3.5, label=f"grid points ({int(good.sum())})"))
    if np.any(~good):
        ax.scatter(x[~good], y[~good], s=36, marker="x", color=OBSERVED, zorder=5)
        handles.append(Line2D([], [], color=OBSERVED, marker="x", ls="", ms=6,
                              label=f"no result ({int((~good).sum())})"))
    # outside the axes: the legend never covers a line
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=10,
              frameon=False)
    names = [str(n) for n in labels] if labels else []
    ax.set_xlabel(names[ix] if ix < len(names) else DEFAULT_AXIS_NAMES[min(ix, 2)], fontsize=13)
    ax.set_ylabel(names[iy] if iy < len(names) else DEFAULT_AXIS_NAMES[min(iy, 2)], fontsize=13)
    if title is None:
        title = {"cls": f"Exclusion at {100 * (1 - level):g}% CL (CLs < {level:g})",
                 "limit": f"Exclusion at {100 * (1 - level):g}% CL (CLs upper limit on $\\mu$ < 1)",
                 "bayesian": f"{100 * (1 - level):g}% credible upper limit on $\\mu$ < 1"}[kind]
    ax.set_title(title, fontsize=12)
    ax.tick_params(labelsize=11)
    sx, sy = np.ptp(x) or 1.0, np.ptp(y) or 1.0
    ax.set_xlim(x.min() - 0.03 * sx, x.max() + 0.03 * sx)
    ax.set_ylim(y.min() - 0.03 * sy, y.max() + 0.03 * sy)
    fig.tight_layout()
    return _save(fig, out)
