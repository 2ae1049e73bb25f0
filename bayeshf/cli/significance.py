"""``bayeshf significance``: discovery significance from the q0 test statistic."""

from __future__ import annotations

import argparse

from bayeshf.cli._freq import add_common, emit, fmt, load_model, wrote


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "significance",
        help="discovery p-value and significance (q0), observed and expected",
        description="Asymptotic test of the background-only hypothesis (POI = 0) with q0: observed p0 and "
        "Z, and the expected ones for the signal at POI = 1 (median and band).",
    )
    add_common(parser, plot_help="write the profile-likelihood scan of the POI from 0 to FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bayeshf.teststats import significance

    model = load_model(args)
    result = significance(model, method=args.fit_method)
    text = (f"observed: p0 = {fmt(result.p0_obs)}, Z = {fmt(result.Z_obs, 4)} sigma\n"
            f"expected (POI = 1): p0 = {fmt(result.p0_exp[2])}, Z = {fmt(result.Z_exp[2], 4)} sigma "
            f"(+-1 sigma band: Z in [{fmt(result.Z_exp[3], 4)}, {fmt(result.Z_exp[1], 4)}])")
    emit(args, result.to_dict(), text)
    if args.plot:
        import numpy as np

        import bayeshf
        from bayeshf.plots import freq
        from bayeshf.scans import profile_scan

        best = bayeshf.fit(model, method=args.fit_method)
        low, high = model.bounds[model.poi_index]
        start = max(low, 0.0)
        stop = min(high, max(best.poi + 3.0 * best.poi_uncertainty, start + 3.0 * best.poi_uncertainty))
        scan = profile_scan(model, np.linspace(start, stop, 21), method=args.fit_method, global_fit=best)
        freq.scan(scan, out=args.plot, poi_name=model.poi_name)
        wrote(args.plot)
    return 0
