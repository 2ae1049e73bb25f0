"""``bayeshf evidence``: log evidence of a workspace under its priors, and the Bayes factor s+b vs b."""

from __future__ import annotations

import argparse
import sys

from bayeshf.cli.common import (SEED_MAX, add_workspace_arguments, check_memory, int_range, model_from_args,
                                writable_file)
from bayeshf.errors import BayeshfError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evidence",
        help="log evidence (marginal likelihood) by bridge sampling, and the Bayes factor s+b vs b",
        description="Estimate log Z = log of the integral of L_main x prior (normalised priors) by bridge "
        "sampling on bayeshf's NUTS draws, with its error; with --bayes-factor also log B_10 = log Z(s+b) - "
        "log Z(b), background-only being the POI fixed at 0 or --background WORKSPACE (docs/sampling.md).",
    )
    add_workspace_arguments(parser)
    parser.add_argument("--priors", default=None, metavar="FILE", help="priors file (JSON or YAML) overriding the derived priors")
    parser.add_argument("--shapesys", choices=["flat", "unit-mean"], default="flat",
                        help="shapesys prior convention (as bayeshf sample)")
    parser.add_argument("--bayes-factor", action="store_true",
                        help="also the evidence of background-only and log B_10 (default background-only: POI fixed at 0)")
    parser.add_argument("--background", default=None, metavar="WORKSPACE",
                        help="background-only workspace (e.g. without the signal patch; --priors apply when it has "
                        "the same parameters, else derived priors) instead of the POI fixed at 0; implies --bayes-factor")
    parser.add_argument("--chains", type=int_range(1, 10_000), default=4, help="chains (default 4)")
    parser.add_argument("--warmup", type=int_range(0, 10**8), default=1000, help="warm-up steps per chain (default 1000)")
    parser.add_argument("--draws", type=int_range(8, 10**8), default=4000,
                        help="draws per chain (default 4000: the first half fits the proposal, the second enters the bridge)")
    parser.add_argument("--seed", type=int_range(0, SEED_MAX), default=0, help="random seed (default 0); same seed, same answer")
    parser.add_argument("--json", dest="json_file", type=writable_file, default=None, metavar="FILE", help="also write the results to FILE (JSON)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _line(name: str, ev) -> str:
    return (f"{name:<24} log Z = {ev.log_evidence:12.5f} +- {ev.error:.5f}   "
            f"({ev.n_posterior} posterior + {ev.n_proposal} proposal draws, posterior ESS {ev.posterior_ess:.0f})")


def run(args: argparse.Namespace) -> int:
    from bayeshf.evidence import bayes_factor, log_evidence

    model = model_from_args(args)
    check_memory(model, "bayeshf evidence", chains=args.chains, steps=args.warmup + args.draws)
    options = dict(chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed, progress=not args.quiet)
    document: dict
    if args.bayes_factor or args.background:
        background = None
        if args.background:
            from bayeshf.cli.common import parse_interpcodes
            from bayeshf.workspace import load

            background = load(args.background, measurement=args.measurement,
                              modifier_settings=parse_interpcodes(args.interpcode))
        priors = args.priors
        result = bayes_factor(model, background, priors=priors, shapesys=args.shapesys, **options)
        print(_line("signal+background", result.signal))
        print(_line("background-only", result.background) + f"   [{result.background_only}]")
        print(f"{'':<24} log B_10 = {result.log_bayes_factor:.5f} +- {result.error:.5f}   "
              f"(B_10 = {result.bayes_factor:.4g})")
        document = {"signal_plus_background": result.signal.to_dict(), "background_only": result.background.to_dict(),
                    "background_only_is": result.background_only, "log_bayes_factor": result.log_bayes_factor,
                    "bayes_factor": result.bayes_factor, "error": result.error}
    else:
        ev = log_evidence(model, priors=args.priors, shapesys=args.shapesys, **options)
        print(_line(str(model.label), ev))
        document = ev.to_dict()
    if args.json_file:
        from bayeshf.io import write_json

        try:
            write_json(args.json_file, document)
        except OSError as error:
            raise BayeshfError(f"{args.json_file}: cannot write the results ({error.strerror or error}).") from error
        print(f"wrote {args.json_file}", file=sys.stderr)
    return 0
