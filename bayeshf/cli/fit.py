"""``bayeshf fit``: maximum-likelihood fit with Hessian uncertainties and correlations."""

from __future__ import annotations

import argparse

from bayeshf.cli._freq import add_common, emit, fmt, load_model, wrote


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="maximum-likelihood fit: best fit, uncertainties, correlations, twice_nll",
        description="Fit the model to its observed data with a trust-region Newton method; print the best fit "
        "and Hessian uncertainties (a table, or JSON with --json).",
    )
    add_common(parser, plot_help="write the pulls plot to FILE (e.g. pulls.png)")
    parser.add_argument("--correlation-plot", metavar="FILE", default=None,
                        help="write the correlation matrix plot to FILE")
    parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                        help="hold a parameter fixed at VALUE (repeatable)")
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

    model = load_model(args)
    result = bayeshf.fit(model, method=args.fit_method, fixed=_fixed(args.fix))
    lines = [
        f"twice_nll  {result.twice_nll:.10g}   ({'converged' if result.success else 'NOT converged'}: "
        f"{result.message}; {result.iterations} iterations, edm {result.edm:.2g})",
        f"{'parameter':<48} {'value':>12} {'uncertainty':>12}",
    ]
    for i, name in enumerate(result.par_names):
        note = " (fixed)" if result.fixed[i] else (" (at bound)" if result.at_bound[i] else "")
        lines.append(f"{name:<48} {fmt(result.bestfit[i], 8):>12} {fmt(result.uncertainties[i], 4):>12}{note}")
    emit(args, pyhf_fit_keys(result, model), "\n".join(lines))
    if args.plot:
        from bayeshf.plots import freq

        freq.pulls(result, model, out=args.plot)
        wrote(args.plot)
    if args.correlation_plot:
        from bayeshf.plots import freq

        freq.correlation_matrix(result, out=args.correlation_plot)
        wrote(args.correlation_plot)
    return 0 if result.success else 1
