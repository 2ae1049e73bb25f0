"""``bayeshf limit``: observed and expected CLs upper limits on the POI (JSON like pyhf's upper_limit)."""

from __future__ import annotations

import argparse

import numpy as np

from bayeshf.cli._freq import add_common, fmt, load_model, wrote
from bayeshf.cli.common import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "limit",
        help="CLs upper limit on the POI: observed and expected band (JSON)",
        description='Upper limits at CLs = level by root finding; prints {"obs": x, "exp": [5 values]} '
        "(expected at -2, -1, 0, +1, +2 sigma). --json adds the CLs values evaluated on the way.",
    )
    add_common(parser, plot_help="write CLs versus the POI with the expected band (Brazil band) to FILE")
    parser.add_argument("--level", type=float, default=0.05, help="CLs level (default 0.05 for 95%% CL)")
    parser.add_argument("--test-stat", choices=["qtilde", "q"], default="qtilde", help="default qtilde")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bayeshf.limits import cls_scan, upper_limit
    from bayeshf.teststats import AsymptoticCalculator

    model = load_model(args)
    calc = AsymptoticCalculator(model, test_stat=args.test_stat, method=args.fit_method)
    result = upper_limit(calc, level=args.level)
    document = result.to_dict()
    if args.json:
        document.update({"level": args.level, "test_stat": args.test_stat, "scan": result.scan.to_dict()})
        print_json(document, args)
    else:
        print_json(document, args)
        print(f"observed limit {fmt(result.obs)}, expected {fmt(result.exp[2])} "
              f"[{fmt(result.exp[1])}, {fmt(result.exp[3])}] at CLs = {args.level:g}", file=__import__("sys").stderr)
    if args.plot:
        from bayeshf.plots import freq

        top = 1.25 * max(result.exp[4], result.obs)
        scan = cls_scan(calc, np.linspace(top / 40, top, 40), level=args.level)
        freq.brazil(scan, out=args.plot, limit=result, poi_name=model.poi_name)
        wrote(args.plot)
    return 0
