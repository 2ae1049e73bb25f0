"""The ``bayeshf`` command line: one module per command, each a thin wrapper.

Every command module defines ``register(subparsers)``, which adds its parser
and sets ``func`` (a callable taking the parsed arguments and returning an exit
code). Errors of ours (:class:`bayeshf.BayeshfError`) are printed as one
sentence with a nonzero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from bayeshf.errors import BayeshfError

#: command modules, in the order ``bayeshf --help`` lists them
COMMANDS = [
    "inspect",
    "julia",
    "sample",
    "priors",
    "plot",
    "datamc",
    "bench",
    "fit",
    "cls",
    "limit",
    "scan",
    "ranking",
    "significance",
]


def build_parser() -> argparse.ArgumentParser:
    from bayeshf import __version__

    parser = argparse.ArgumentParser(
        prog="bayeshf",
        description="Bayesian and frequentist inference on HistFactory (pyhf JSON) workspaces.",
    )
    parser.add_argument("--version", action="version", version=f"bayeshf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"bayeshf.cli.{name}").register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bayeshf: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    # other libraries' deprecation notices are not the user's business
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from bayeshf.runtime import configure

    # the benchmarks time cold compilation themselves: no persistent cache under them
    configure(compilation_cache=args.command != "bench")
    try:
        return int(args.func(args) or 0)
    except BayeshfError as error:
        print(f"bayeshf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bayeshf {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
