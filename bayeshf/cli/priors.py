"""``bayeshf priors``: the table of priors a workspace gets (derived, or overridden by a file)."""

from __future__ import annotations

import argparse
import math

from bayeshf.cli.common import add_output_file_argument, add_workspace_arguments, model_from_args, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "priors",
        help="print the prior of every parameter (derived from the constraints, or from --priors)",
        description="Print the prior of every scalar parameter: family, parameters, support and where it "
        "comes from (the derived flat-reference priors, or a priors file).",
    )
    add_workspace_arguments(parser)
    parser.add_argument("--priors", default=None, metavar="FILE", help="priors file (JSON or YAML)")
    parser.add_argument("--shapesys", choices=["flat", "unit-mean"], default="flat",
                        help="shapesys prior convention (default flat: Gamma(aux+1, rate tau))")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_output_file_argument(parser)
    parser.set_defaults(func=run)


def _number(value: float) -> str:
    return "inf" if value == math.inf else "-inf" if value == -math.inf else f"{value:.6g}"


def format_priors(prior_set) -> str:
    """Fixed-width table: parameter, prior, support, source."""
    rows = [(e.name, e.describe() if e.family != "fixed" else f"fixed at {e.params['value']:.6g}",
             f"[{_number(e.lower)}, {_number(e.upper)}]", e.source) for e in prior_set.entries]
    header = ("parameter", "prior", "support", "source")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "-" * (sum(widths) + 6)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bayeshf.priors import build_priors

    model = model_from_args(args)
    prior_set = build_priors(model, args.priors, shapesys=args.shapesys)
    if args.json or args.output_file:
        rows = prior_set.table()
        for row in rows:
            row["lower"], row["upper"] = (None if not math.isfinite(row[k]) else row[k] for k in ("lower", "upper"))
        print_json({"workspace": model.label, "shapesys": prior_set.shapesys, "priors": rows}, args)
    else:
        print(format_priors(prior_set))
    return 0
