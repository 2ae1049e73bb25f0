"""``bayeshf datamc``: data versus the stacked model per channel, pre-fit, post-fit and from a posterior."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bayeshf.cli.common import add_workspace_arguments, check_memory, model_from_args

#: more channels than this get one summary figure (one bin per channel) unless --all-channels
MAX_CHANNELS = 12


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "datamc",
        help="data/model plots (stacked samples, ratio panel, uncertainty band) and yield tables",
        description="Per channel: the expected yields of every sample stacked, the data, a ratio panel and the "
        "uncertainty band, pre-fit (constraint widths), post-fit (--fit: Hessian errors propagated through "
        "the yields, correlations included) and Bayesian (--posterior: the posterior of the expected yields "
        "and the posterior predictive 68%% interval); writes DIR/yields.json and prints a yield table.",
    )
    add_workspace_arguments(parser)
    parser.add_argument("--fit", action="store_true", help="also the post-fit model (maximum-likelihood fit)")
    parser.add_argument("--posterior", default=None, metavar="FILE",
                        help="also the posterior model from a posterior.nc written by `bayeshf sample` of this workspace")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory (PNGs and yields.json)")
    parser.add_argument("--style", choices=["atlas", "cms", "plain"], default="plain",
                        help="plot style (atlas/cms through mplhep; default plain)")
    parser.add_argument("--max-channels", type=int, default=MAX_CHANNELS, metavar="N",
                        help=f"with more than N channels draw one summary figure, one bin per channel "
                        f"(default {MAX_CHANNELS})")
    parser.add_argument("--all-channels", action="store_true",
                        help="one figure per channel however many channels there are (and the summary)")
    parser.add_argument("--per-bin", action="store_true", help="print the yield table per bin, not per channel")
    parser.set_defaults(func=run)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "channel"


def run(args: argparse.Namespace) -> int:
    import bayeshf
    from bayeshf.errors import BayeshfError
    from bayeshf.io import write_json
    from bayeshf.plots import datamc
    from bayeshf.yields import format_yields, posterior_yields, yields

    if args.max_channels < 1:
        raise BayeshfError("--max-channels must be at least 1.")
    idata = None
    if args.posterior:
        from bayeshf.cli.plot import load_posterior

        idata = load_posterior(args.posterior)
    model = model_from_args(args)
    if args.fit:
        check_memory(model, "bayeshf datamc --fit")
    results = [yields(model)]
    status = 0
    if args.fit:
        fit_result = bayeshf.fit(model)
        if fit_result.success:
            results.append(yields(model, fit_result))
        else:
            print(f"bayeshf datamc: error: the fit did not converge ({fit_result.message}); no post-fit model "
                  "is drawn.", file=sys.stderr)
            status = 1
    if idata is not None:
        results.append(posterior_yields(model, idata))
    plt = datamc._pyplot()
    out = Path(args.out)
    many = len(model.channels) > args.max_channels
    written = []
    for result in results:
        print(format_yields(result, per_bin=args.per_bin))
        if many:
            path = out / f"{result.kind}_summary.png"
            plt.close(datamc.data_mc_summary(result, style=args.style, out=path))
            written.append(path)
        if not many or args.all_channels:
            for channel in model.channels:
                path = out / f"{result.kind}_{_file_name(channel)}.png"
                plt.close(datamc.data_mc(result, channel, style=args.style, out=path))
                written.append(path)
    if many and not args.all_channels:
        print(f"{len(model.channels)} channels (more than --max-channels {args.max_channels}): one summary figure "
              "per model, one bin per channel; --all-channels draws every channel.", file=sys.stderr)
    write_json(out / "yields.json", {r.kind: r.to_dict() for r in results})
    written.append(out / "yields.json")
    print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written[:6])
          + (", ..." if len(written) > 6 else ""), file=sys.stderr)
    return status
