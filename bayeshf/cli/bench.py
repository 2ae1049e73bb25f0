"""``bayeshf bench SUITE``: run a benchmark suite (the same harness as ``python -m benchmarks``)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from bayeshf.bench import __doc__ as bench_doc, add_arguments

    parser = subparsers.add_parser(
        "bench",
        help="time bayeshf against pyhf, NextStat, blackjax and the Julia runners",
        description=bench_doc.split("\n\n")[0] + " Suites: logdensity, sampling, fit, nbin, large, report, all.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bayeshf.bench import run as run_bench

    argv = sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else [args.suite]
    return run_bench(args, argv)
