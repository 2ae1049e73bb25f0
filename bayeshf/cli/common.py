"""Arguments and helpers shared by every command that reads a workspace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bayeshf.errors import BayeshfError


def add_workspace_arguments(parser: argparse.ArgumentParser) -> None:
    """WORKSPACE plus --patch (repeatable), --measurement and --interpcode."""
    parser.add_argument("workspace", metavar="WORKSPACE",
                        help="pyhf JSON workspace, a HEPData patchset (with --patch NAME), or - for standard input")
    parser.add_argument("--patch", "-p", action="append", default=[], metavar="P",
                        help="JSON patch file to apply, or a patch name when WORKSPACE is a patchset (repeatable)")
    parser.add_argument("--measurement", "-m", default=None, metavar="NAME",
                        help="measurement to use (default: the first in the workspace)")
    parser.add_argument("--interpcode", action="append", default=[], metavar="MOD=CODE",
                        help="interpolation code, e.g. normsys=code1 or histosys=code0 (default: pyhf 0.7's code4/code4p)")
    parser.add_argument("--poi", dest="poi_name", default=None, metavar="NAME",
                        help="parameter of interest (default: the measurement's)")


def parse_interpcodes(values: list[str]) -> dict[str, dict[str, str]] | None:
    """Turn ``["normsys=code1", "histosys=code0"]`` into pyhf's modifier_settings."""
    if not values:
        return None
    settings: dict[str, dict[str, str]] = {}
    for value in values:
        modifier, sep, code = value.partition("=")
        if not sep or not code:
            raise BayeshfError(f"--interpcode {value!r} is not of the form MODIFIER=CODE, e.g. normsys=code1.")
        settings[modifier.strip()] = {"interpcode": code.strip()}
    return settings


def model_from_args(args: argparse.Namespace):
    """Load the model named by the workspace arguments."""
    from bayeshf.workspace import load

    return load(
        args.workspace,
        patches=args.patch or None,
        measurement=args.measurement,
        modifier_settings=parse_interpcodes(args.interpcode),
        poi_name=getattr(args, "poi_name", None),
    )


def add_output_file_argument(parser: argparse.ArgumentParser) -> None:
    """pyhf's --output-file: the JSON document goes to FILE (atomically) instead of standard output."""
    parser.add_argument("--output-file", default=None, metavar="FILE",
                        help="write the JSON document to FILE instead of printing it (as pyhf's --output-file)")


def print_json(obj: Any, args: argparse.Namespace | None = None) -> None:
    """Print ``obj`` as strict JSON (NaN/Infinity as null), or write it to ``args.output_file``."""
    from bayeshf.io import dumps_json, write_json

    output_file = getattr(args, "output_file", None)
    if output_file:
        write_json(output_file, obj)
        print(f"wrote {output_file}", file=sys.stderr)
        return
    sys.stdout.write(dumps_json(obj) + "\n")
