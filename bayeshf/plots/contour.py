"""Exclusion contours over a signal grid (the output of ``bayeshf cls/limit --patchset``).

Interpolated as analyses do: on log CLs (or log of the upper limit on the
signal strength, excluded where it is below 1) over a Delaunay triangulation
of the points (matplotlib.tri), observed and expected lines at the level, the
+-1 sigma band filled, the points marked (failed ones as crosses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.plots.bayes import _pyplot, _save

__all__ = ["contour", "grid_arrays"]


def _axes(values: np.ndarray) -> list[int]:
    """The first two coordinates that vary over the grid."""
    varying = [j for j in range(values.shape[1]) if np.ptp(values[:, j]) > 0]
    if len(varying) < 2:
        raise BayeshfError("a contour needs points spread over two coordinates; these vary in fewer.")
    return varying[:2]


def grid_arrays(points: Sequence[Mapping[str, Any]], kind: str | None = None):
    """(values (n, d), quantity (n, 6): observed then the band in pyhf's order, ok mask, kind) from result dicts."""
    if not points:
        raise BayeshfError("the results hold no points.")
    if kind is None:
        kind = "cls" if any("CLs_obs" in p for p in points) else "limit"
    head, band = ("CLs_obs", "CLs_exp") if kind == "cls" else ("obs", "exp")
    values, quantity, ok = [], [], []
    for p in points:
        values.append([float(v) for v in p.get("values", [])])
        good = not p.get("error") and p.get(head) is not None and p.get(band) is not None
        quantity.append([p[head], *p[band]] if good else [np.nan] * 6)
        ok.append(good)
    widths = {len(v) for v in values}
    if len(widths) != 1:
        raise BayeshfError("the points have different numbers of coordinates (values).")
    q = np.array(quantity, dtype=float)
    return np.array(values, dtype=float), q, np.array(ok), kind


def contour(points: Sequence[Mapping[str, Any]], *, out: str | Path | None = None, labels: Sequence[str] | None = None,
            kind: str | None = None, level: float = 0.05, title: str | None = None):
    """Observed and expected exclusion contours with the +-1 sigma band; returns the Figure."""
    import matplotlib.tri as mtri

    values, q, ok, kind = grid_arrays(points, kind)
    ix, iy = _axes(values)
    x, y = values[:, ix], values[:, iy]
    good = ok & np.all(np.isfinite(q) & (q > 0), axis=1)
    if good.sum() < 3:
        raise BayeshfError("a contour needs at least three points with results.")
    # excluded where the interpolated quantity is below 0: log(CLs / level), or log(limit on mu / 1)
    threshold = level if kind == "cls" else 1.0
    z = np.log(q[good] / threshold)
    # triangulate in axis-scaled coordinates so long thin triangles do not follow the units' ratio
    sx, sy = np.ptp(x[good]) or 1.0, np.ptp(y[good]) or 1.0
    scaled = mtri.Triangulation(x[good] / sx, y[good] / sy)
    tri = mtri.Triangulation(x[good], y[good], triangles=scaled.triangles)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    # +-1 sigma band: where the -1 and +1 sigma expected values lie on opposite sides of the threshold
    straddle = z[:, 2] * z[:, 4]
    ax.tricontourf(tri, straddle, levels=[-np.inf, 0.0], colors=["#ffd54f"], alpha=0.8)
    ax.tricontour(tri, z[:, 3], levels=[0.0], colors="black", linestyles="--", linewidths=2.0)
    ax.tricontour(tri, z[:, 0], levels=[0.0], colors="#c62828", linewidths=2.5)
    ax.scatter(x[good], y[good], s=12, color="0.45", zorder=3)
    if np.any(~good):
        ax.scatter(x[~good], y[~good], s=40, marker="x", color="#c62828", zorder=4)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color="#c62828", lw=2.5, label="observed"),
               Line2D([], [], color="black", ls="--", lw=2.0, label="expected"),
               Patch(color="#ffd54f", alpha=0.8, label=r"expected $\pm 1\sigma$"),
               Line2D([], [], color="0.45", marker="o", ls="", ms=4, label="grid points")]
    if np.any(~good):
        handles.append(Line2D([], [], color="#c62828", marker="x", ls="", ms=7, label="failed points"))
    ax.legend(handles=handles, loc="best", fontsize=11, framealpha=0.9)
    names = list(labels) if labels else []
    ax.set_xlabel(names[ix] if ix < len(names) else f"values[{ix}]", fontsize=13)
    ax.set_ylabel(names[iy] if iy < len(names) else f"values[{iy}]", fontsize=13)
    what = f"CLs < {level:g}" if kind == "cls" else "upper limit on the signal strength < 1"
    ax.set_title(title or f"Excluded where {what}", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.set_xlim(x.min() - 0.03 * sx, x.max() + 0.03 * sx)
    ax.set_ylim(y.min() - 0.03 * sy, y.max() + 0.03 * sy)
    fig.tight_layout()
    return _save(fig, out)
