"""The workspaces the suites run on, as (name, spec dict) cases.

Real workspaces come from a data folder laid out like the repository's
tests/data (thesis/, sbottom/RegionA/, atlas-examples/): ``--data DIR``, else
``$BAYESHF_BENCH_DATA``, else the repository's tests/data next to the package,
else /work/shared/data. Generated cases use :mod:`bayeshf.generators`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from bayeshf.errors import BayeshfError
from bayeshf.generators import nbin_workspace

REPO = Path(__file__).resolve().parents[1]

#: case name -> (workspace path, patch path or None) relative to the data folder
REAL_CASES: dict[str, tuple[str, str | None]] = {
    "thesis_2_bin_uncorr": ("thesis/2_bin_uncorr.json", None),
    "thesis_2_bin_corr": ("thesis/2_bin_corr.json", None),
    "thesis_4_bin": ("thesis/4_bin.json", None),
    "sbottom_RegionA_1300_205_60": ("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json"),
    "ttbar_ljets": ("atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json", None),
}

THESIS_CASES = ["thesis_2_bin_uncorr", "thesis_2_bin_corr", "thesis_4_bin"]
ATLAS_CASES = ["sbottom_RegionA_1300_205_60", "ttbar_ljets"]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding thesis/, sbottom/ and atlas-examples/ (see the module docstring)."""
    candidates = [explicit, os.environ.get("BAYESHF_BENCH_DATA"), REPO / "tests" / "data", "/work/shared/data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "thesis").is_dir():
            return Path(candidate)
    if explicit:
        raise BayeshfError(f"{explicit}: no thesis/ folder inside, so it is not a benchmark data folder.")
    raise BayeshfError("no benchmark data folder found; pass --data DIR (a folder like the repository's tests/data).")


def _apply_patch(spec: dict[str, Any], patch: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    import jsonpatch

    try:
        return jsonpatch.apply_patch(copy.deepcopy(spec), patch)
    except jsonpatch.JsonPatchException as error:
        raise BayeshfError(f"{path}: the patch does not apply ({error}).") from error


def check_case(name: str) -> None:
    """Raise :class:`BayeshfError` unless ``name`` is a known case or ``nbin_<n>``."""
    if name.startswith("nbin_") and name[5:].isdigit() and int(name[5:]) > 0:
        return
    if name not in REAL_CASES:
        raise BayeshfError(f"unknown benchmark case {name!r}; known: {', '.join(REAL_CASES)} or nbin_<n>.")


def load_case(name: str, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """The (patched) workspace spec of a named case: a real one or ``nbin_<n>``."""
    check_case(name)
    if name.startswith("nbin_"):
        return nbin_workspace(int(name[5:]))
    folder = data_dir(data)
    workspace, patch = REAL_CASES[name]
    path = folder / workspace
    try:
        spec = json.loads(path.read_text())
        if patch is not None:
            spec = _apply_patch(spec, json.loads((folder / patch).read_text()), folder / patch)
    except OSError as error:
        raise BayeshfError(f"{path}: cannot read the benchmark workspace ({error.strerror}).") from error
    return spec
