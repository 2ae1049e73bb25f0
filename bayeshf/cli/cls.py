"""``bayeshf cls``: asymptotic CLs of one POI value (observed and the expected band).

The POI value is given with ``--poi-value`` (alias ``--mu``); ``--poi`` stays
the POI *name*, as for every command. (A positional value is not accepted:
argparse cannot tell it from a ``--patch`` file once options are interleaved.)
Output is JSON shaped like ``pyhf cls``: ``{"CLs_obs": x, "CLs_exp": [5 values]}``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from bayeshf.cli._freq import add_common, load_model, wrote
from bayeshf.cli.common import check_poi_value, finite_float, print_json, probability


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cls",
        help="asymptotic CLs at one POI value (JSON like pyhf cls)",
        description="Asymptotic hypothesis test of one POI value with q~ (default), q or q0; prints "
        '{"CLs_obs": x, "CLs_exp": [5 values]} (for q0: p0 values).',
    )
    add_common(parser, plot_help="write CLs versus the POI with the expected band (Brazil band) to FILE")
    parser.add_argument("--poi-value", "--mu", "--test-poi", dest="poi_value", type=finite_float, default=None, metavar="X",
                        help="POI value to test (default 1.0; 0 for q0); `--poi 1.0` (a number) means the same")
    parser.add_argument("--test-stat", choices=["qtilde", "q", "q0"], default="qtilde",
                        help="test statistic (default qtilde)")
    parser.add_argument("--level", type=probability, default=0.05, help="CLs level drawn on the plot (default 0.05)")
    from bayeshf.cli.patchset import add_grid_arguments, add_toy_arguments

    add_toy_arguments(parser, with_seed=True)
    add_grid_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bayeshf.errors import BayeshfError
    from bayeshf.teststats import AsymptoticCalculator

    if args.poi_name is not None and args.poi_value is None:  # `bayeshf cls WS --poi 1.0`: a value, not a name
        try:
            args.poi_value, args.poi_name = float(args.poi_name), None
        except ValueError:
            pass
        else:
            if not math.isfinite(args.poi_value):
                raise BayeshfError(f"--poi {args.poi_value}: the tested POI value must be a finite number.")
    value = args.poi_value
    if value is None:
        value = 0.0 if args.test_stat == "q0" else 1.0
    if args.patchset:
        from bayeshf.cli.patchset import run_grid

        return run_grid(args, "cls")
    model = load_model(args)
    check_poi_value(model, value)
    if args.calctype == "toybased":
        from bayeshf.cli.patchset import run_toys

        print_json(run_toys(args, model, value), args)
        return 0
    calc = AsymptoticCalculator(model, test_stat=args.test_stat, method=args.fit_method)
    result = calc.hypotest(value)
    if args.test_stat == "q0":
        document = {"CLs_obs": result.CLsb_obs, "CLs_exp": list(result.CLsb_exp)}
    else:
        document = {"CLs_obs": result.CLs_obs, "CLs_exp": list(result.CLs_exp)}
    if args.json:
        document.update({"poi_value": value, "test_stat": args.test_stat, "CLsb_obs": result.CLsb_obs,
                         "CLb_obs": result.CLb_obs})
    print_json(document, args)
    if args.plot:
        if args.test_stat == "q0":
            raise BayeshfError("--plot draws CLs against the POI, which needs --test-stat qtilde or q.")
        from bayeshf.limits import cls_scan
        from bayeshf.plots import freq

        top = max(2.0 * value, 1.0) if value > 0 else 1.0
        scan = cls_scan(calc, np.linspace(top / 40, top, 40), level=args.level)
        freq.brazil(scan, out=args.plot, poi_name=model.poi_name)
        wrote(args.plot)
    return 0
