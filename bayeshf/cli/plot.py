"""``bayeshf plot``: redraw plots from saved results (nothing is resampled)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bayeshf.errors import BayeshfError

#: plot kind -> (help, default output file name)
KINDS = {
    "corner": ("1D/2D posterior marginals of the POI and the parameters most correlated with it", "corner.png"),
    "ppc": ("observed counts over prior and posterior predictive bands, per channel", "ppc.png"),
    "trace": ("draws per chain and marginals", "trace.png"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="redraw corner, ppc or trace plots from a saved posterior.nc",
        description="Redraw a plot from a saved posterior (ArviZ netCDF written by `bayeshf sample`).",
    )
    parser.add_argument("kind", choices=list(KINDS), help="; ".join(f"{k}: {v[0]}" for k, v in KINDS.items()))
    parser.add_argument("posterior", metavar="POSTERIOR", help="posterior.nc written by `bayeshf sample`")
    parser.add_argument("--out", "-o", default=None, metavar="FILE",
                        help="output image (default: corner.png / ppc.png / trace.png next to POSTERIOR)")
    parser.add_argument("--vars", nargs="+", default=None, metavar="NAME",
                        help="parameters to show (corner, trace); default: the POI and those most correlated with it")
    parser.set_defaults(func=run)


def load_posterior(path: str | Path):
    """Read an InferenceData netCDF file; one-sentence errors."""
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise BayeshfError(f"{path}: no such file.")
    try:
        return az.from_netcdf(str(path))
    except Exception as error:  # OSError, ValueError from h5netcdf/netCDF4
        raise BayeshfError(f"{path}: not an ArviZ netCDF posterior ({type(error).__name__}).") from None


def run(args: argparse.Namespace) -> int:
    from bayeshf.plots import bayes

    idata = load_posterior(args.posterior)
    if "posterior" not in idata.groups():
        raise BayeshfError(f"{args.posterior}: the file has no posterior group.")
    out = Path(args.out) if args.out else Path(args.posterior).with_name(KINDS[args.kind][1])
    if args.kind == "corner":
        bayes.corner(idata, args.vars, out=out)
    elif args.kind == "ppc":
        bayes.ppc(idata, out=out)
    else:
        bayes.trace(idata, args.vars, out=out)
    print(f"wrote {out}")
    return 0
