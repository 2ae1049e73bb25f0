"""``bayeshf patchset list``, and the grid and toy options of ``bayeshf cls`` / ``bayeshf limit``.

``bayeshf cls WS --patchset PS.json [--patches NAME ...]`` and ``bayeshf limit
WS --patchset PS.json`` run every point of a patchset (bayeshf.grid); JSON is a
list with one object per point, failing points carry an ``"error"`` sentence.
With ``--output-file`` the file is rewritten (atomically) after every batch,
so Ctrl-C keeps the points already computed. ``--scheduler ADDRESS`` sends
the batches to a Dask cluster. ``--calctype toybased --ntoys N`` tests with
toys (bayeshf.toys).
"""

from __future__ import annotations

import argparse
import sys

from bayeshf.cli.common import add_output_file_argument
from bayeshf.errors import BayeshfError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "patchset",
        help="inspect a HEPData patchset (list its points; check it against a workspace)",
        description="bayeshf patchset list PS.json [--workspace WS]: names, label values and digest of a patchset; "
        "with --workspace, also verify the digest against the background-only workspace.",
    )
    sub = parser.add_subparsers(dest="patchset_command", metavar="ACTION")
    listing = sub.add_parser("list", help="names, values, labels and digest of every point")
    listing.add_argument("patchset", metavar="PS.json", help="HEPData patchset (JSON, or gzip-compressed JSON)")
    listing.add_argument("--workspace", default=None, metavar="WS",
                         help="background-only workspace to verify the patchset's digest against")
    listing.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    add_output_file_argument(listing)
    listing.set_defaults(func=run_list)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    from bayeshf.cli.common import print_json
    from bayeshf.patchsets import read_patchset

    ps = read_patchset(args.patchset)
    verified = None
    if args.workspace:
        from bayeshf.workspace import read_json, validate

        spec, label = read_json(args.workspace, "workspace")
        validate(spec, label)
        ps.verify(spec, label)
        verified = label
    if args.json or args.output_file:
        document = ps.to_dict()
        document["verified_against"] = verified
        print_json(document, args)
        if args.json:
            return 0
    print(f"{ps.label}: {len(ps.points)} patches; {ps.description}")
    for algorithm, digest in ps.digests.items():
        print(f"digest {algorithm}: {digest}" + (f" (matches {verified})" if verified else ""))
    width = max([len("patch")] + [len(p.name) for p in ps.points])
    print(f"{'patch':<{width}}  " + "  ".join(f"{label:>10}" for label in ps.labels))
    for p in ps.points:
        print(f"{p.name:<{width}}  " + "  ".join(f"{v:>10g}" for v in p.values))
    return 0


# ------------------------------------------------------------------------------------------------
# options added to cls and limit


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """--patchset, --patches, --scheduler and --batch-size (grids)."""
    parser.add_argument("--patchset", default=None, metavar="PS.json",
                        help="run every point of this HEPData patchset (WORKSPACE is the background-only one); "
                        "JSON is a list with one object per point")
    parser.add_argument("--patches", nargs="+", default=None, metavar="NAME",
                        help="with --patchset: only these points")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="with --patchset: send batches of points to this Dask scheduler (tcp://host:8786); "
                        "default: in this process")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="with --patchset: points per batch (default 32)")


def add_toy_arguments(parser: argparse.ArgumentParser, *, with_seed: bool) -> None:
    """--calctype asymptotics|toybased and --ntoys (pyhf's names); --seed when the command has none yet."""
    parser.add_argument("--calctype", choices=["asymptotics", "toybased"], default="asymptotics",
                        help="asymptotic formulae (default) or toys (pyhf's ToyCalculator, fits batched)")
    parser.add_argument("--ntoys", type=int, default=2000, metavar="N",
                        help="with --calctype toybased: toys under s+b and under b each (default 2000)")
    if with_seed:
        parser.add_argument("--seed", type=int, default=0, help="with --calctype toybased: random seed (default 0)")


def _check_grid_args(args: argparse.Namespace) -> None:
    if args.patch:
        raise BayeshfError("--patchset runs the patchset's own points: drop --patch (choose points with --patches).")
    if getattr(args, "calctype", "asymptotics") != "asymptotics":
        raise BayeshfError("--patchset grids are asymptotic; --calctype toybased runs one point at a time (--patch).")
    if args.batch_size is not None and args.batch_size < 1:
        raise BayeshfError(f"--batch-size must be a positive number of points, got {args.batch_size}.")


def run_grid(args: argparse.Namespace, kind: str) -> int:
    """``cls``/``limit`` with --patchset (kind "cls", "limit" or "bayesian"): every point, JSON list, partial output kept on Ctrl-C."""
    from bayeshf import grid
    from bayeshf.cli.common import parse_interpcodes, print_json
    from bayeshf.io import write_json
    from bayeshf.workspace import check_modifier_settings

    _check_grid_args(args)
    codes = check_modifier_settings(parse_interpcodes(args.interpcode))
    output = getattr(args, "output_file", None)
    command = "cls" if kind == "cls" else "limit"

    def save(points):
        if output:
            write_json(output, [p.to_dict(kind) for p in points])

    common = dict(measurement=args.measurement, codes=codes, poi_name=args.poi_name, scheduler=args.scheduler,
                  batch_size=args.batch_size, progress=sys.stderr.isatty(), on_points=save,
                  test_stat=args.test_stat)
    try:
        if kind == "cls":
            value = 1.0 if args.poi_value is None else args.poi_value
            result = grid.hypotest_grid(args.workspace, args.patchset, args.patches, poi_value=value, **common)
        elif kind == "bayesian":
            del common["test_stat"]
            result = grid.credible_limit_grid(args.workspace, args.patchset, args.patches, level=args.level,
                                              seed=args.seed, **common)
        else:
            result = grid.upper_limit_grid(args.workspace, args.patchset, args.patches, level=args.level, **common)
    except KeyboardInterrupt:
        where = f"; the points computed so far are in {output}" if output else ""
        print(f"bayeshf {command}: interrupted{where}.", file=sys.stderr)
        return 130
    document = result.to_list()
    print_json(document, args)
    failed = [p for p in result.points if p.error]
    for p in failed:
        print(f"bayeshf {command}: {p.patch}: {p.error}", file=sys.stderr)
    for p in result.points:
        if p.bayes is not None and p.bayes.get("warning"):
            print(f"bayeshf {command}: warning: {p.patch}: {p.bayes['warning']}", file=sys.stderr)
    plot = getattr(args, "plot", None)
    if plot:
        from bayeshf.plots.contour import contour

        contour(document, out=plot, labels=result.labels, kind=kind)
        print(f"wrote {plot}", file=sys.stderr)
    return 1 if failed else 0


def run_toys(args: argparse.Namespace, model, value: float) -> dict:
    """The toy-based test of one POI value: the JSON document of ``bayeshf cls --calctype toybased``."""
    from bayeshf.toys import hypotest

    result = hypotest(model, value, test_stat=args.test_stat, ntoys=args.ntoys, seed=args.seed,
                      progress=sys.stderr.isatty())
    if result.n_failed:
        print(f"bayeshf cls: warning: {result.n_failed} of {2 * result.ntoys} toys had a fit that did not converge; "
              "they are left out of the distributions.", file=sys.stderr)
    return result.to_dict()


def run_toy_limit(args: argparse.Namespace, model) -> int:
    """``bayeshf limit --calctype toybased``: toy CLs on a scan of the POI, interpolated to the level."""
    from bayeshf.cli.common import print_json
    from bayeshf.toys import upper_limit

    if getattr(args, "method", "cls") != "cls" or getattr(args, "plot", None):
        raise BayeshfError("--calctype toybased gives the CLs limits only (no --method bayesian or --plot with it).")
    result = upper_limit(model, level=args.level, ntoys=args.ntoys, seed=args.seed, test_stat=args.test_stat,
                         progress=sys.stderr.isatty())
    if result.n_failed:
        print(f"bayeshf limit: warning: {result.n_failed} toys had a fit that did not converge; "
              "they are left out of the distributions.", file=sys.stderr)
    print_json(result.to_dict(), args)
    return 0
