"""``bayeshf fit``: maximum-likelihood fit with Hessian uncertainties and correlations."""

from __future__ import annotations

import argparse
import math

from bayeshf.cli._freq import add_common, emit, fmt, load_model, wrote
from bayeshf.cli.common import check_parameter, plot_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="maximum-likelihood fit: best fit, uncertainties, correlations, twice_nll",
        description="Fit the model to its observed data with a trust-region Newton method; print the best fit "
        "and Hessian uncertainties (a table, or JSON with --json).",
    )
    add_common(parser, plot_help="write the pulls plot to FILE (e.g. pulls.png)")
    parser.add_argument("--value", dest="json", action="store_true",
                        help="as --json (pyhf fit's flag for twice_nll, which the JSON always carries)")
    parser.add_argument("--correlation-plot", metavar="FILE", type=plot_file, default=None,
                        help="write the correlation matrix plot to FILE")
    parser.add_argument("--pulls-threshold", type=float, default=0.0, metavar="T",
                        help="pulls plot: only parameters with |pull| >= T or a post-fit error <= 1-T of the "
                        "pre-fit width (default 0: all; the plot states the cut)")
    parser.add_argument("--correlation-threshold", type=float, default=0.0, metavar="RHO",
                        help="correlation plot: only parameters with some |correlation| >= RHO, and the POI "
                        "(default 0: all; the plot states the cut)")
    parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                        help="hold a parameter fixed at VALUE (repeatable)")
    parser.add_argument("--minos", nargs="+", default=None, metavar="PAR",
                        help="asymmetric profile-likelihood (MINOS) errors of these parameters, or `all`")
    parser.set_defaults(func=run)


def _fixed(values: list[str]) -> dict[str, float] | None:
    from bayeshf.errors import BayeshfError

    out: dict[str, float] = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise BayeshfError(f"--fix {item!r} is not of the form NAME=VALUE, e.g. mu=1.")
        if not math.isfinite(out[name]):
            raise BayeshfError(f"--fix {item!r}: the value must be a finite number.")
    return out or None


def pyhf_fit_keys(result, model) -> dict:
    """``result.to_dict()`` plus pyhf fit's keys: ``mle_parameters`` {set name: [values]} and ``twice_nll``."""
    document = result.to_dict()
    document["mle_parameters"] = {p.name: [float(v) for v in result.bestfit[p.slice]]
                                  for p in model.parameters}
    document["twice_nll"] = float(result.twice_nll)
    return document


def run(args: argparse.Namespace) -> int:
    import bayeshf
    from bayeshf.errors import BayeshfError

    fixed = _fixed(args.fix)
    model = load_model(args)
    for name, value in (fixed or {}).items():
        check_parameter(model, name, "--fix")
        if name in model.par_names:
            low, high = model.bounds[model.par_names.index(name)]
            if not low <= value <= high:
                raise BayeshfError(f"{model.label}: --fix {name}={value:g} is outside the bounds [{low:g}, {high:g}] of {name}.")
    minos_pars = None
    if args.minos is not None:
        if "all" in args.minos:
            minos_pars = [n for i, n in enumerate(model.par_names) if not (model.fixed[i] or n in (fixed or {}))]
        else:
            for name in args.minos:
                if name not in model.par_names:
                    raise BayeshfError(f"{model.label}: --minos {name!r} is not a parameter of the model.")
                if name in (fixed or {}) or model.fixed[model.par_names.index(name)]:
                    raise BayeshfError(f"{model.label}: --minos {name!r} is a fixed parameter; MINOS needs a free one.")
            minos_pars = list(dict.fromkeys(args.minos))
    result = bayeshf.fit(model, method=args.fit_method, fixed=fixed)
    if not result.success:
        import sys

        print(f"bayeshf fit: error: the fit did not converge ({result.message}); its numbers are not a minimum.",
              file=sys.stderr)
    intervals = {}
    if minos_pars and result.success:
        from bayeshf.scans import minos

        intervals = minos(model, minos_pars, fit_result=result, fixed=fixed, method=args.fit_method)
    lines = [
        f"twice_nll  {result.twice_nll:.10g}   ({'converged' if result.success else 'NOT converged'}: "
        f"{result.message}; {result.iterations} iterations, edm {result.edm:.2g})",
        f"goodness of fit (saturated model): p = {fmt(result.gof_pvalue, 4)} with {result.gof_ndof} degrees of freedom",
        f"{'parameter':<48} {'value':>12} {'uncertainty':>12}" + (f" {'minos -':>12} {'minos +':>12}" if intervals else ""),
    ]
    for i, name in enumerate(result.par_names):
        note = " (fixed)" if result.fixed[i] else (" (at bound)" if result.at_bound[i] else "")
        extra = ""
        if intervals:
            m = intervals.get(name)
            extra = (f" {fmt(m.lower, 4) + ('*' if m.lower_at_bound else ''):>12} "
                     f"{fmt(m.upper, 4) + ('*' if m.upper_at_bound else ''):>12}") if m else f" {'':>12} {'':>12}"
        lines.append(f"{name:<48} {fmt(result.bestfit[i], 8):>12} {fmt(result.uncertainties[i], 4):>12}{extra}{note}")
    if intervals and any(m.lower_at_bound or m.upper_at_bound for m in intervals.values()):
        lines.append("* the interval reaches the parameter's bound before twice_nll rises by 1")
    document = pyhf_fit_keys(result, model)
    if intervals:
        document["minos"] = {name: m.to_dict() for name, m in intervals.items()}
    emit(args, document, "\n".join(lines))
    if args.plot:
        from bayeshf.plots import freq

        freq.pulls(result, model, out=args.plot, threshold=args.pulls_threshold)
        wrote(args.plot)
    if args.correlation_plot:
        from bayeshf.plots import freq

        freq.correlation_matrix(result, out=args.correlation_plot, threshold=args.correlation_threshold)
        wrote(args.correlation_plot)
    return 0 if result.success else 1
