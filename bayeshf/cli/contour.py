"""``bayeshf contour RESULTS.json --out contour.png``: exclusion contour of a grid's results.

RESULTS.json is the list written by ``bayeshf cls/limit WS --patchset PS.json
--output-file RESULTS.json``; ``--patchset`` (or ``--labels``) names the axes.
"""

from __future__ import annotations

import argparse
import sys

from bayeshf.errors import BayeshfError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "contour",
        help="exclusion contour (observed, expected, +-1 sigma) from grid results",
        description="Draw the exclusion contour of the results of `bayeshf cls|limit WS --patchset PS.json "
        "--output-file RESULTS.json`: interpolated on log CLs (or log of the limit on mu) over a triangulation.",
    )
    parser.add_argument("results", metavar="RESULTS.json", help="grid results (a JSON list, one object per point)")
    parser.add_argument("--out", default="contour.png", metavar="FILE", help="image to write (default contour.png)")
    parser.add_argument("--patchset", default=None, metavar="PS.json", help="patchset whose labels name the axes")
    parser.add_argument("--labels", nargs="+", default=None, metavar="NAME", help="axis names, one per coordinate")
    parser.add_argument("--level", type=float, default=0.05, help="CLs level of the contour (default 0.05)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bayeshf.plots.contour import contour
    from bayeshf.workspace import read_json

    points, label = read_json(args.results, "results")
    if not isinstance(points, list) or not all(isinstance(p, dict) and "values" in p for p in points):
        raise BayeshfError(f"{label}: not grid results (a JSON list of objects with \"values\", as "
                           "`bayeshf cls|limit --patchset ... --output-file` writes).")
    labels = args.labels
    if labels is None and args.patchset:
        from bayeshf.patchsets import read_patchset

        labels = list(read_patchset(args.patchset).labels)
    if not 0.0 < args.level < 1.0:
        raise BayeshfError(f"--level must lie in (0, 1), got {args.level}.")
    try:
        contour(points, out=args.out, labels=labels, level=args.level)
    except BayeshfError as error:
        raise BayeshfError(f"{label}: {error}") from None
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
