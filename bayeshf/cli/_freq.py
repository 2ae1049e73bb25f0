"""Options and output shared by the frequentist commands (fit, cls, limit, scan, ranking, significance)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from bayeshf.cli.common import (add_output_file_argument, add_workspace_arguments, check_memory, model_from_args,
                                plot_file, print_json, require_poi)


def add_common(parser: argparse.ArgumentParser, *, plot_help: str) -> None:
    """Workspace arguments plus --json, --plot FILE and --fit-method."""
    add_workspace_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    add_output_file_argument(parser)
    parser.add_argument("--plot", metavar="FILE", type=plot_file, default=None, help=plot_help)
    parser.add_argument("--fit-method", default="trust-krylov",
                        choices=["trust-krylov", "trust-exact", "trust-ncg", "auto"],
                        help="minimiser (default: trust-krylov)")


def load_model(args: argparse.Namespace):
    """The model (the compilation cache is on: bayeshf.cli.main calls bayeshf.runtime.configure)."""
    model = model_from_args(args)
    if args.command in ("cls", "limit", "significance", "ranking"):
        require_poi(model, f"bayeshf {args.command}")
    check_memory(model, f"bayeshf {args.command}")
    return model


def emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    """The JSON document (--json, or to --output-file) or the table; with --output-file alone, both."""
    if getattr(args, "output_file", None):
        print_json(document, args)
        if not args.json:
            print(text)
    elif args.json:
        print_json(document)
    else:
        print(text)


def fmt(value: float | None, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def wrote(path: str) -> None:
    import sys

    print(f"wrote {path}", file=sys.stderr)
