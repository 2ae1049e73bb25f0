"""``bayeshf scan``: profile-likelihood scan of the POI (or any parameter; two for a contour)."""

from __future__ import annotations

import argparse

import numpy as np

from bayeshf.cli._freq import add_common, emit, fmt, load_model, wrote
from bayeshf.cli.common import check_parameter, finite_float, int_range, require_poi


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="profile-likelihood scan of the POI (or --par; --par2 for a 2D scan)",
        description="-2 Delta ln L along a grid of one parameter (default the POI, best fit +-3 sigma) with the "
        "others profiled; with --par2, over a grid of two parameters.",
    )
    add_common(parser, plot_help="write the scan (or the 2D contour plot) to FILE")
    parser.add_argument("--par", default=None, metavar="NAME", help="parameter to scan (default: the POI)")
    parser.add_argument("--par2", default=None, metavar="NAME", help="second parameter: 2D scan")
    parser.add_argument("--range", nargs=2, type=finite_float, default=None, metavar=("LOW", "HIGH"),
                        help="scan range of --par (default: best fit +-3 sigma within the bounds)")
    parser.add_argument("--range2", nargs=2, type=finite_float, default=None, metavar=("LOW", "HIGH"),
                        help="scan range of --par2")
    parser.add_argument("--points", type=int_range(2, 10_000), default=21, help="grid points per parameter (default 21; 2D: 15)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bayeshf.errors import BayeshfError
    from bayeshf.scans import profile_scan, profile_scan_2d

    if args.points < 2:
        raise BayeshfError("--points must be at least 2.")
    for option in ("range", "range2"):
        if getattr(args, option) is not None and not args.__dict__[option][0] < args.__dict__[option][1]:
            raise BayeshfError(f"--{option} {args.__dict__[option][0]:g} {args.__dict__[option][1]:g}: LOW must be below HIGH.")
    model = load_model(args)
    for option in ("par", "par2"):
        if getattr(args, option) is not None:
            check_parameter(model, getattr(args, option), f"--{option}")
    if args.par is None:
        require_poi(model, "a scan without --par")
    grid = None if args.range is None else np.linspace(*args.range, args.points)
    if args.par2 is None:
        result = profile_scan(model, grid, par=args.par, npoints=args.points, method=args.fit_method)
        lines = [f"{result.par_name}: best fit {fmt(result.bestfit)} +- {fmt(result.uncertainty, 4)}, "
                 f"68% [{fmt(result.interval_68[0])}, {fmt(result.interval_68[1])}], "
                 f"95% [{fmt(result.interval_95[0])}, {fmt(result.interval_95[1])}]",
                 f"{'value':>14} {'-2 Delta ln L':>14}"]
        lines += [f"{fmt(v):>14} {fmt(d):>14}" for v, d in zip(result.values, result.delta_twice_nll)]
    else:
        par = args.par if args.par is not None else model.poi_name
        if par is None:
            raise BayeshfError("the model has no POI: name the first parameter with --par.")
        points = args.points if args.points != 21 else 15
        grid2 = None if args.range2 is None else np.linspace(*args.range2, points)
        grid = None if args.range is None else np.linspace(*args.range, points)
        result = profile_scan_2d(model, (par, args.par2), grid, grid2, npoints=points, method=args.fit_method)
        lines = [f"2D scan of {result.par_names[0]} x {result.par_names[1]}, best fit "
                 f"({fmt(result.bestfit[0])}, {fmt(result.bestfit[1])}); -2 Delta ln L rows = {result.par_names[0]}"]
        lines += [" ".join(f"{d:8.3f}" for d in row) for row in result.delta_twice_nll]
    emit(args, result.to_dict(), "\n".join(lines))
    if args.plot:
        from bayeshf.plots import freq

        if args.par2 is None:
            freq.scan(result, out=args.plot, poi_name=model.poi_name)
        else:
            freq.scan_2d(result, out=args.plot, poi_name=model.poi_name)
        wrote(args.plot)
    return 0
