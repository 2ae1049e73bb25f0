"""``bayeshf limit``: observed and expected CLs upper limits on the POI (JSON like pyhf's upper_limit)."""

from __future__ import annotations

import argparse

import numpy as np

from bayeshf.cli._freq import add_common, fmt, load_model, wrote
from bayeshf.cli.common import print_json, probability, seed


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "limit",
        help="CLs upper limit on the POI: observed and expected band (JSON)",
        description='Upper limits at CLs = level by root finding; prints {"obs": x, "exp": [5 values]} '
        "(expected at -2, -1, 0, +1, +2 sigma). --json adds the CLs values evaluated on the way.",
    )
    add_common(parser, plot_help="write CLs versus the POI with the expected band (Brazil band) to FILE")
    parser.add_argument("--level", type=probability, default=0.05, help="CLs level (default 0.05 for 95%% CL)")
    parser.add_argument("--test-stat", choices=["qtilde", "q"], default="qtilde", help="default qtilde")
    parser.add_argument("--method", choices=["cls", "bayesian"], default="cls",
                        help="cls (default), or bayesian: also sample the posterior (bayeshf sample's defaults) and "
                        "print the one-sided credible upper limit at 1 - level beside the CLs one (with --patchset: the credible "
                        "limit, its MC error and R-hat of every point, short chains per point)")
    parser.add_argument("--seed", type=seed, default=0, help="with --method bayesian: random seed (default 0)")
    from bayeshf.cli.patchset import add_grid_arguments

    add_grid_arguments(parser)
    from bayeshf.cli.patchset import add_toy_arguments

    add_toy_arguments(parser, with_seed=False)
    parser.set_defaults(func=run)


def _credible_limit(model, args: argparse.Namespace) -> dict:
    """The POI's one-sided credible upper limit at 1 - level from bayeshf sample's defaults (with --target-ess)."""
    import sys

    from bayeshf.cli.sample import DEFAULT_MAX_TIME, DEFAULT_TARGET_ESS
    from bayeshf.diagnostics import credible_upper_limit, summarize
    from bayeshf.errors import BayeshfError
    from bayeshf.sampling import auto_chunk, default_draws, sample

    if model.poi_name is None:
        raise BayeshfError("--method bayesian needs a POI, and the model has none.")
    draws = default_draws(model)
    idata = sample(model, seed=args.seed, draws=draws, target_ess=DEFAULT_TARGET_ESS, max_time=DEFAULT_MAX_TIME,
                   progress=sys.stderr.isatty(), chunk_size=auto_chunk(1000 + draws))
    summary = summarize(idata, var_names=[model.poi_name])
    limit, mcse = credible_upper_limit(idata.posterior[model.poi_name].values, 1.0 - args.level)
    for message in summary.warnings:
        print(f"bayeshf limit: warning: {message}", file=sys.stderr)
    return {"upper_limit": limit, "mcse": mcse, "credibility": 1.0 - args.level, "seed": args.seed,
            "converged": summary.convergence.reached if summary.convergence else None,
            "prior": "bayeshf's derived priors (flat on the POI's bounds), docs/statistics.md"}


def run(args: argparse.Namespace) -> int:
    from bayeshf.limits import cls_scan, upper_limit
    from bayeshf.teststats import AsymptoticCalculator

    if args.patchset:
        from bayeshf.cli.patchset import run_grid

        return run_grid(args, "limit" if args.method == "cls" else "bayesian")
    model = load_model(args)
    if args.calctype == "toybased":
        from bayeshf.cli.patchset import run_toy_limit

        return run_toy_limit(args, model)
    calc = AsymptoticCalculator(model, test_stat=args.test_stat, method=args.fit_method)
    result = upper_limit(calc, level=args.level)
    document = result.to_dict()
    if args.method == "bayesian":
        document["bayesian"] = _credible_limit(model, args)
    if args.json:
        document.update({"level": args.level, "test_stat": args.test_stat, "scan": result.scan.to_dict()})
        print_json(document, args)
    else:
        print_json(document, args)
        print(f"observed limit {fmt(result.obs)}, expected {fmt(result.exp[2])} "
              f"[{fmt(result.exp[1])}, {fmt(result.exp[3])}] at CLs = {args.level:g}", file=__import__("sys").stderr)
        if args.method == "bayesian":
            bayes = document["bayesian"]
            print(f"credible upper limit {fmt(bayes['upper_limit'])} (MC error {fmt(bayes['mcse'], 2)}) at "
                  f"{100 * bayes['credibility']:g}% credibility", file=__import__("sys").stderr)
    if args.plot:
        from bayeshf.plots import freq

        top = 1.25 * max(result.exp[4], result.obs)
        scan = cls_scan(calc, np.linspace(top / 40, top, 40), level=args.level)
        freq.brazil(scan, out=args.plot, limit=result, poi_name=model.poi_name)
        wrote(args.plot)
    return 0
