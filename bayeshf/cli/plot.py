"""``bayeshf plot``: redraw plots from saved results (nothing is resampled)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bayeshf.cli.common import plot_file
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
    parser.add_argument("--out", "-o", type=plot_file, default=None, metavar="FILE",
                        help="output image (default: corner.png / ppc.png / trace.png next to POSTERIOR)")
    parser.add_argument("--mark", default=None, metavar="FIT_JSON",
                        help="corner: mark the best fit of a `bayeshf fit --json` or `pyhf fit` document (the MAP "
                        "under the default flat reference priors)")
    parser.add_argument("--vars", nargs="+", default=None, metavar="NAME",
                        help="parameters to show (corner, trace); default: the POI and those most correlated with it")
    parser.set_defaults(func=run)


def load_posterior(path: str | Path):
    """Read an InferenceData netCDF file; one-sentence errors."""
    import arviz as az

    from bayeshf.workspace import read_bytes

    path = Path(path)
    read_bytes(path, str(path), "posterior", size_only=True)  # a regular file of sane size
    try:
        return az.from_netcdf(str(path))
    except Exception as error:  # OSError, ValueError from h5netcdf/netCDF4
        raise BayeshfError(f"{path}: not an ArviZ netCDF posterior ({type(error).__name__}).") from None


def fit_markers(path: str) -> dict[str, float]:
    """{scalar parameter name: value} from a fit document: bayeshf's (par_names, bestfit) or pyhf's mle_parameters."""
    from bayeshf.workspace import parse_json, read_bytes

    document = parse_json(read_bytes(path, path, "fit result").decode("utf-8", "replace"), path)
    if isinstance(document, dict) and isinstance(document.get("par_names"), list) \
            and isinstance(document.get("bestfit"), list):
        return {str(n): float(v) for n, v in zip(document["par_names"], document["bestfit"]) if v is not None}
    if isinstance(document, dict) and isinstance(document.get("mle_parameters"), dict):
        out = {}
        for name, values in document["mle_parameters"].items():
            values = values if isinstance(values, list) else [values]
            for i, value in enumerate(values):
                out[name if len(values) == 1 else f"{name}[{i}]"] = float(value)
        return out
    raise BayeshfError(f"{path}: not a fit result (no par_names/bestfit nor pyhf's mle_parameters).")


def run(args: argparse.Namespace) -> int:
    from bayeshf.plots import bayes

    idata = load_posterior(args.posterior)
    if "posterior" not in idata.groups():
        raise BayeshfError(f"{args.posterior}: the file has no posterior group.")
    out = Path(args.out) if args.out else Path(args.posterior).with_name(KINDS[args.kind][1])
    if args.kind == "corner":
        markers = None if args.mark is None else fit_markers(args.mark)
        bayes.corner(idata, args.vars, out=out, markers=markers,
                     marker_label=f"best fit ({Path(args.mark).name})" if args.mark else "MAP")
    elif args.kind == "ppc":
        bayes.ppc(idata, out=out)
    else:
        bayes.trace(idata, args.vars, out=out)
    print(f"wrote {out}")
    return 0
