"""``bayeshf bench SUITE``: run a benchmark suite of the repository's ``benchmarks/`` (as ``python -m benchmarks``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from bayeshf.errors import BayeshfError

MISSING = ("the benchmarks are a tool of the bayeshf repository, not part of the installed package: "
           "clone the repository, install it with pip install -e '.[bench]' and run "
           "bayeshf bench (or python -m benchmarks) there.")


def _benchmarks() -> ModuleType | None:
    """The repository's ``benchmarks`` package: beside an editable install of bayeshf, or in the working directory."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "benchmarks" / "__init__.py").is_file() and (root / "bayeshf").is_dir():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            try:
                module = importlib.import_module("benchmarks")
            except ImportError:
                return None
            if hasattr(module, "add_arguments"):
                return module
    return None


def register(subparsers: argparse._SubParsersAction) -> None:
    benchmarks = _benchmarks()
    help_text = "time bayeshf against pyhf, NextStat, blackjax and the Julia runners (repository checkout only)"
    if benchmarks is None:
        parser = subparsers.add_parser("bench", help=help_text, add_help=False, prefix_chars="\0")
        parser.add_argument("arguments", nargs="*")
    else:
        parser = subparsers.add_parser("bench", help=help_text,
                                       description=benchmarks.__doc__.split("\n\n")[0] + " Suites: "
                                       + ", ".join([*benchmarks.SUITES, "report", "all"]) + ".")
        benchmarks.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    benchmarks = _benchmarks()
    if benchmarks is None:
        raise BayeshfError(MISSING)
    argv = sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else [args.suite]
    return benchmarks.run(args, argv)
