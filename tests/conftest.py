"""Shared fixtures: the workspaces in tests/data and pyhf as the oracle."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# pytest-xdist runs one worker per core already: one JAX CPU device per worker, not one per core each
# (tests/test_runtime.py checks the split over several devices in a subprocess of its own)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("BAYESHF_CPU_DEVICES", "1")

DATA = Path(__file__).parent / "data"

#: every workspace in tests/data, with the patch it is tested with (signal patches for sbottom)
WORKSPACES = [
    ("thesis/2_bin_uncorr.json", None),
    ("thesis/2_bin_corr.json", None),
    ("thesis/4_bin.json", None),
    *[(f"pyhf-validation/{p.name}", None) for p in sorted((DATA / "pyhf-validation").glob("*.json"))],
    ("atlas-examples/SRee_SRmm_Srem_v2.json", None),
    ("atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json", None),
    ("sbottom/RegionA/BkgOnly.json", None),
    ("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json"),
    ("sbottom/RegionB/BkgOnly.json", "sbottom/RegionB/patch.sbottom_1000_205_60.json"),
    ("sbottom/RegionC/BkgOnly.json", "sbottom/RegionC/patch.sbottom_1600_850_60.json"),
]


def workspace_id(case) -> str:
    path, patch = case
    return Path(path).stem + ("+" + Path(patch).stem.replace("patch.", "") if patch else "")


def data_path(relative: str) -> Path:
    return DATA / relative


def pyhf_model(path, patch=None, modifier_settings=None, backend="numpy"):
    """(pyhf model, data) built by pyhf itself, the oracle."""
    import jsonpatch
    import pyhf

    pyhf.set_backend(backend)
    spec = json.loads(Path(path).read_text())
    if patch:
        spec = jsonpatch.JsonPatch(json.loads(Path(patch).read_text())).apply(spec)
    workspace = pyhf.Workspace(spec)
    kwargs = {"modifier_settings": modifier_settings} if modifier_settings else {}
    poi = spec["measurements"][0]["config"]["poi"]
    names = {m["name"] for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]}
    if poi not in names:
        kwargs["poi_name"] = None
    model = workspace.model(**kwargs)
    return model, workspace.data(model)


@pytest.fixture(autouse=True)
def _quiet_background_only():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not in the model.*")
        yield
