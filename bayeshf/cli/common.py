"""Arguments and helpers shared by every command that reads a workspace."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
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
    parser.add_argument("--output-file", type=writable_file, default=None, metavar="FILE",
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


# -- argument checks (argparse types): bad arguments fail before any model is loaded ----------------

#: seeds jax.random.PRNGKey takes (a C long, not negative)
SEED_MAX = 2**63 - 1
#: image formats matplotlib writes (an unknown suffix would fail only after the work)
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".eps", ".ps", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".pgf")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite float."""
    return _number(text)


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not strictly between 0 and 1")
    return value


def int_range(low: int, high: int):
    """argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high:,}")
        return value

    parse.__name__ = "integer"
    return parse


seed = int_range(0, SEED_MAX)


def _existing_ancestor(path: Path) -> Path:
    """The nearest existing ancestor of ``path``; an error if it is not a directory."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{path}: {parent} is a file, not a directory")
            return parent
    return Path("/")  # pragma: no cover


def _probe_writable(directory: Path, shown: Path) -> None:
    """Create and remove a file in ``directory``: the only reliable test (root, read-only mounts, /proc)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".bayeshf-probe-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{shown}: cannot write in {directory} ({error.strerror or error})") from None


def output_dir(text: str) -> Path:
    """argparse type: a directory that exists and is writable, or can be created."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not an output directory")
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{path}: a file of that name exists; give a directory")
        _probe_writable(path, path)
    else:
        _probe_writable(_existing_ancestor(path), path)
    return path


def writable_file(text: str) -> str:
    """argparse type: a file (an image or a document) that can be written; checked before the work."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not an output file")
    path = Path(text)
    if path.is_dir() or text.endswith(os.sep):
        raise argparse.ArgumentTypeError(f"{path}: is a directory; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{path}: the file is not writable")
        parent = path.absolute().parent
    else:
        parent = _existing_ancestor(path)
    _probe_writable(parent, path)
    return text


def plot_file(text: str) -> str:
    """argparse type: an image file matplotlib can write (by its suffix), in a writable place."""
    text = writable_file(text)
    suffix = Path(text).suffix.lower()
    if suffix and suffix not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: matplotlib cannot write {suffix} files; use one of "
                                         f"{', '.join(s for s in PLOT_SUFFIXES[:4])}")
    return text


def require_poi(model, what: str) -> None:
    """One sentence naming the file when a command needs a POI the model does not have."""
    if model.poi_name is None:
        raise BayeshfError(f"{model.label}: the model has no parameter of interest, which {what} needs; "
                           "choose one with --poi NAME.")


def check_poi_value(model, value: float, option: str = "--poi-value") -> None:
    """A tested POI value inside the POI's bounds (pyhf refuses a fit started outside them)."""
    low, high = model.bounds[model.poi_index]
    if not low <= value <= high:
        raise BayeshfError(f"{model.label}: {option} {value:g} is outside the bounds [{low:g}, {high:g}] "
                           f"of the parameter of interest '{model.poi_name}'.")


def check_parameter(model, name: str, option: str) -> None:
    """A parameter name given on the command line must be one of the model's."""
    if name not in model.par_names and name not in model.par_order:
        raise BayeshfError(f"{model.label}: {option}: the model has no parameter named '{name}'.")


def available_memory() -> tuple[int, str] | None:
    """Bytes this process may still use and where the figure comes from (None if unknown).

    The smallest of BAYESHF_MEMORY_LIMIT (bytes), the address-space limit (ulimit -v), the cgroup's
    memory.max less its usage, and MemAvailable of /proc/meminfo.
    """
    import resource

    found = []
    setting = os.environ.get("BAYESHF_MEMORY_LIMIT")
    if setting:
        try:
            found.append((int(float(setting)), "BAYESHF_MEMORY_LIMIT"))
        except ValueError:
            raise BayeshfError(f"BAYESHF_MEMORY_LIMIT={setting!r} is not a number of bytes.") from None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            used = 0
        found.append((soft - used, "the address-space limit (ulimit -v)"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            current = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append((int(limit) - current, "the cgroup memory limit"))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "available memory"))
    except (OSError, ValueError, IndexError):
        pass
    return min(found) if found else None


def memory_needed(model, *, chains: int = 0, steps: int = 0) -> int:
    """Bytes a fit (and, with chains and steps, a sampling run) of ``model`` needs, roughly.

    The Hessian (forward over reverse, vectorised over the parameters) holds about ten arrays of
    npars x max(npars, samples x bins) float64 (measured: fits of 500-2000-bin shapesys models).
    """
    npars, cells = model.npars, len(model.samples) * model.nmain
    need = 10 * 8 * npars * max(npars, cells) + 200 * 2**20
    if chains:
        # positions, records, predictive counts and the pointwise log-likelihood
        need += 3 * 8 * chains * steps * (2 * npars + 2 * model.nmain)
    return need


def check_memory(model, what: str, **kwargs) -> None:
    """Refuse, in one sentence, a run that would exhaust memory (a MemoryError or an abort inside XLA)."""
    available = available_memory()
    if available is None:
        return
    need = memory_needed(model, **kwargs)
    if need > available[0]:
        raise BayeshfError(f"{model.label}: {what} of this model ({model.npars:,} parameters, {model.nmain:,} bins) "
                           f"needs about {need / 2**30:.1f} GiB of memory, more than the {max(available[0], 0) / 2**30:.1f} "
                           f"GiB of {available[1]}.")


def check_netcdf_names(model) -> None:
    """Channel and parameter names become netCDF variables, where a '/' is not allowed: say so before sampling."""
    for kind, names in (("channel", model.channels), ("parameter", model.par_order)):
        for name in names:
            if "/" in name:
                raise BayeshfError(f"{model.label}: the {kind} name '{name}' contains a '/', which a netCDF "
                                   "posterior cannot hold; rename it (a JSON patch will do).")
