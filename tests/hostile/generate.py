"""A corpus of hostile and malformed inputs for every ``bayeshf`` command.

``cases(directory)`` writes the input files of every case into ``directory``
and returns the :class:`Case` list; ``python tests/hostile/generate.py DIR``
does the same from the shell and writes ``DIR/cases.json`` (argv per case), so
the corpus can be replayed by hand::

    python tests/hostile/generate.py /tmp/hostile
    bayeshf fit /tmp/hostile/numbers-yield-1e308/workspace.json

A case whose ``argv`` starts with ``WORKSPACE_COMMANDS`` is run through every
command that reads a workspace. ``expect`` is ``"error"`` (exit 2, one line
naming ``names``) or ``"no-crash"`` (a degenerate but legal input: exit 0, 1 or
2, never a traceback).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

#: bayeshf's limit on an input file's size (bayeshf.workspace.MAX_FILE_BYTES)
MAX_FILE_BYTES = 2**31

#: a workspace that passes validation samples briefly
SAMPLE_ARGS = ["--chains", "1", "--warmup", "20", "--draws", "20", "--target-ess", "0", "--no-plots", "--quiet"]

#: every command that reads a workspace (a case with command "*" runs through all of them)
WORKSPACE_COMMANDS = ("inspect", "fit", "sample", "cls", "limit", "priors", "scan", "ranking", "significance",
                      "evidence", "datamc")


@dataclasses.dataclass
class Case:
    name: str
    category: str
    argv: list[str]  # "*" as the command: every workspace command
    expect: str = "error"  # "error" | "no-crash"
    names: str | None = None  # the message must contain this (the file, or the option)
    subprocess: bool = False  # needs a process of its own (hangs, signals, resource limits)
    stdin: bytes | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    only: tuple[str, ...] | None = None  # with "*": just these commands

    def commands(self) -> list[list[str]]:
        if self.argv[0] != "*":
            return [self.argv]
        out_dir = str(Path(self.argv[1]).parent / "out") if self.argv[1] != "-" else "/nonexistent/out"
        runs = []
        for command in self.only or WORKSPACE_COMMANDS:
            extra = {"sample": SAMPLE_ARGS + ["--out", out_dir], "datamc": ["--out", out_dir],
                     "evidence": ["--chains", "1", "--warmup", "20", "--draws", "20"]}.get(command, [])
            runs.append([command] + self.argv[1:] + extra)
        return runs


def base_spec() -> dict:
    """A small valid workspace using all seven modifier types."""
    return {
        "channels": [
            {"name": "SR", "samples": [
                {"name": "signal", "data": [5.0, 10.0], "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None}]},
                {"name": "background", "data": [50.0, 60.0], "modifiers": [
                    {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                    {"name": "bkg_shape", "type": "histosys",
                     "data": {"hi_data": [52.0, 63.0], "lo_data": [48.0, 58.0]}},
                    {"name": "stat_SR", "type": "staterror", "data": [3.0, 4.0]},
                    {"name": "uncorr", "type": "shapesys", "data": [5.0, 6.0]}]}]},
            {"name": "CR", "samples": [
                {"name": "background", "data": [100.0], "modifiers": [
                    {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                    {"name": "cr_free", "type": "shapefactor", "data": None}]}]},
        ],
        "observations": [{"name": "SR", "data": [56.0, 72.0]}, {"name": "CR", "data": [101.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.5, 1.5]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


def _spec_with(path: tuple, value: Any) -> dict:
    spec = base_spec()
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return spec


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def cases(directory: str | os.PathLike) -> list[Case]:
    """Write every case's files under ``directory``; return the cases."""
    root = Path(directory)
    out: list[Case] = []

    def add(name, category, files, argv, **kwargs):
        case_dir = root / name
        case_dir.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            path = case_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            elif isinstance(content, str):
                path.write_text(content)
            else:
                path.write_text(json.dumps(content))
        argv = [a.replace("{d}", str(case_dir)) for a in argv]
        names = kwargs.pop("names", None)
        if names is not None:
            names = names.replace("{d}", str(case_dir))
        out.append(Case(name, category, argv, names=names, **kwargs))

    def ws(name, category, spec_or_text, extra=(), **kwargs):
        kwargs.setdefault("names", "workspace.json")
        add(name, category, {"workspace.json": spec_or_text}, ["*", "{d}/workspace.json", *extra], **kwargs)

    good = base_spec()

    # -- files ----------------------------------------------------------------------------
    ws("file-empty", "files", "")
    ws("file-whitespace", "files", "  \n\t ")
    ws("file-binary", "files", bytes(range(256)) * 4)
    ws("file-invalid-utf8", "files", b'{"channels": "\xff\xfe"}')
    ws("file-utf16", "files", json.dumps(good).encode("utf-16"))
    ws("file-truncated", "files", json.dumps(good)[:200])
    ws("file-trailing-garbage", "files", json.dumps(good) + " }}")
    ws("file-top-list", "files", "[1, 2, 3]")
    ws("file-top-number", "files", "42")
    ws("file-top-string", "files", '"workspace"')
    ws("file-top-null", "files", "null")
    ws("file-nested-5000", "files", _nested(5000))
    ws("file-nested-object-5000", "files", '{"a":' * 5000 + "1" + "}" * 5000)
    ws("file-nested-in-spec", "files", json.dumps(good)[:-1] + ', "extra": ' + _nested(3000) + "}")
    ws("file-nan-literal", "files", json.dumps(_spec_with(("observations", 0, "data"), [float("nan"), 1.0])))
    ws("file-infinity-literal", "files", json.dumps(_spec_with(("observations", 0, "data"), [float("inf"), 1.0])))
    ws("file-int-400-digits", "files", json.dumps(good).replace("56.0", "1" + "0" * 400))
    ws("file-int-5000-digits", "files", json.dumps(good).replace("56.0", "1" + "0" * 5000))
    ws("file-float-1e400", "files", json.dumps(good).replace("56.0", "1e400"))
    ws("file-bom", "files", "\ufeff" + json.dumps(good), expect="no-crash", only=("inspect",))
    add("file-missing", "files", {}, ["*", "{d}/nothing.json"], names="nothing.json")
    add("file-directory", "files", {"dir/x": "1"}, ["*", "{d}/dir"], names="dir")
    add("file-dev-zero", "files", {}, ["*", "/dev/zero"], names="/dev/zero")
    add("file-dev-null", "files", {}, ["*", "/dev/null"], names="/dev/null")
    add("file-stdin-empty", "files", {}, ["*", "-"], names="standard input", stdin=b"")
    add("file-stdin-binary", "files", {}, ["*", "-"], names="standard input", stdin=b"\x00\xff" * 100)
    add("file-fifo-no-writer", "files", {}, ["*", "{d}/fifo"], names="fifo")
    os.mkfifo(root / "file-fifo-no-writer" / "fifo")
    add("file-sparse-huge", "files", {}, ["*", "{d}/huge.json"], names="huge.json")
    with open(root / "file-sparse-huge" / "huge.json", "wb") as handle:  # sparse: no disk space used
        handle.truncate(MAX_FILE_BYTES + 1)

    # -- numbers -------------------------------------------------------------------------------
    bg = ("channels", 0, "samples", 1)
    numbers = {
        "yield-1e308": (bg + ("data",), [1e308, 60.0]),
        "yield-1e300": (bg + ("data",), [1e300, 60.0]),
        "yield-negative": (bg + ("data",), [-1.0, 60.0]),
        "yield-tiny-denormal": (bg + ("data",), [5e-324, 60.0]),
        "observed-1e308": (("observations", 0, "data"), [1e308, 72.0]),
        "observed-negative": (("observations", 0, "data"), [-3.0, 72.0]),
        "observed-string": (("observations", 0, "data"), ["56", 72.0]),
        "observed-bool": (("observations", 0, "data"), [True, 72.0]),
        "observed-null": (("observations", 0, "data"), [None, 72.0]),
        "shapesys-1e300": (bg + ("modifiers", 3, "data"), [1e300, 6.0]),
        "shapesys-1e308": (bg + ("modifiers", 3, "data"), [1e308, 6.0]),
        "staterror-1e308": (bg + ("modifiers", 2, "data"), [1e308, 4.0]),
        "normsys-hi-zero": (bg + ("modifiers", 0, "data"), {"hi": 0.0, "lo": 0.9}),
        "normsys-lo-zero": (bg + ("modifiers", 0, "data"), {"hi": 1.1, "lo": 0.0}),
        "normsys-hi-negative": (bg + ("modifiers", 0, "data"), {"hi": -1.1, "lo": 0.9}),
        "normsys-lo-negative": (bg + ("modifiers", 0, "data"), {"hi": 1.1, "lo": -0.9}),
        "normsys-hi-1e300": (bg + ("modifiers", 0, "data"), {"hi": 1e300, "lo": 0.9}),
        "normsys-lo-1e300": (bg + ("modifiers", 0, "data"), {"hi": 1.1, "lo": 1e300}),
        "normsys-hi-1e-300": (bg + ("modifiers", 0, "data"), {"hi": 1e-300, "lo": 0.9}),
        "histosys-hi-1e308": (bg + ("modifiers", 1, "data"), {"hi_data": [1e308, 63.0], "lo_data": [48.0, 58.0]}),
        "histosys-lo-negative-huge": (bg + ("modifiers", 1, "data"), {"hi_data": [52.0, 63.0], "lo_data": [-1e300, 58.0]}),
        "lumi-sigma-negative": (("measurements", 0, "config", "parameters", 0, "sigmas"), [-0.02]),
        "lumi-sigma-zero": (("measurements", 0, "config", "parameters", 0, "sigmas"), [0.0]),
        "lumi-sigma-1e308": (("measurements", 0, "config", "parameters", 0, "sigmas"), [1e308]),
        "lumi-auxdata-1e308": (("measurements", 0, "config", "parameters", 0, "auxdata"), [1e308]),
        "lumi-bounds-1e308": (("measurements", 0, "config", "parameters", 0, "bounds"), [[-1e308, 1e308]]),
        "lumi-bounds-reversed": (("measurements", 0, "config", "parameters", 0, "bounds"), [[1.5, 0.5]]),
        "lumi-init-outside": (("measurements", 0, "config", "parameters", 0, "inits"), [3.0]),
        "lumi-init-1e308": (("measurements", 0, "config", "parameters", 0, "inits"), [1e308]),
    }
    for name, (path, value) in numbers.items():
        text = json.dumps(_spec_with(path, value))
        ws(f"numbers-{name}", "numbers", text)
    for name, path, value in (("shapesys-negative", bg + ("modifiers", 3, "data"), [-5.0, 6.0]),
                              ("staterror-negative", bg + ("modifiers", 2, "data"), [-3.0, 4.0])):
        ws(f"numbers-{name}", "numbers", _spec_with(path, value), expect="no-crash", only=("inspect", "fit"))
    mu_bounds = {"mu-bounds-1e308": [[-1e308, 1e308]], "mu-bounds-huge-upper": [[0.0, 1e300]],
                 "mu-bounds-reversed": [[5.0, 0.0]], "mu-bounds-nan-text": None}
    for name, bounds in mu_bounds.items():
        spec = base_spec()
        if bounds is None:
            text = json.dumps(spec).replace('"parameters": [', '"parameters": [{"name": "mu", "bounds": [[0, NaN]]}, ')
        else:
            spec["measurements"][0]["config"]["parameters"].append({"name": "mu", "bounds": bounds})
            text = json.dumps(spec)
        ws(f"numbers-{name}", "numbers", text)
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"].append({"name": "mu", "inits": [1e308], "bounds": [[0, 1e308]]})
    ws("numbers-mu-init-1e308", "numbers", spec)

    # -- shapes --------------------------------------------------------------------------------
    shapes = {
        "bins-mismatch-sample": (bg + ("data",), [50.0]),
        "bins-mismatch-observation": (("observations", 0, "data"), [56.0]),
        "bins-zero": (("channels", 1, "samples", 0, "data"), []),
        "shapesys-length": (bg + ("modifiers", 3, "data"), [5.0]),
        "staterror-length": (bg + ("modifiers", 2, "data"), [3.0, 4.0, 5.0]),
        "histosys-length": (bg + ("modifiers", 1, "data"), {"hi_data": [52.0], "lo_data": [48.0, 58.0]}),
        "channels-empty": (("channels",), []),
        "channels-not-list": (("channels",), {"SR": 1}),
        "samples-empty": (("channels", 1, "samples"), []),
        "observations-empty": (("observations",), []),
        "measurements-empty": (("measurements",), []),
        "modifiers-not-list": (bg + ("modifiers",), {}),
        "data-not-list": (bg + ("data",), 5.0),
        "data-nested-list": (bg + ("data",), [[50.0], [60.0]]),
        "observation-missing-channel": (("observations",), [{"name": "SR", "data": [56.0, 72.0]}]),
        "version-wrong": (("version",), "2.0.0"),
        "config-missing": (("measurements", 0), {"name": "meas"}),
    }
    for name, (path, value) in shapes.items():
        ws(f"shapes-{name}", "shapes", _spec_with(path, value))
    ws("shapes-observation-extra-channel", "shapes",  # pyhf ignores observations of no channel
       _spec_with(("observations",), base_spec()["observations"] + [{"name": "XX", "data": [1.0]}]),
       expect="no-crash", only=("inspect",))
    spec = base_spec()
    del spec["observations"]
    ws("shapes-no-observations-key", "shapes", spec)
    spec = base_spec()
    spec["channels"][0]["samples"][0]["extra"] = 1
    ws("shapes-extra-key", "shapes", spec)
    spec = base_spec()
    spec["channels"] = spec["channels"] * 50
    ws("shapes-duplicate-channels-many", "shapes", spec)

    # -- modifiers -------------------------------------------------------------------------------
    mods = {
        "unknown-type": {"name": "x", "type": "magicsys", "data": None},
        "normfactor-with-data": {"name": "x", "type": "normfactor", "data": [1.0]},
        "normsys-missing-lo": {"name": "x", "type": "normsys", "data": {"hi": 1.1}},
        "normsys-data-list": {"name": "x", "type": "normsys", "data": [1.1, 0.9]},
        "histosys-missing": {"name": "x", "type": "histosys", "data": {"hi_data": [1.0, 2.0]}},
        "shapesys-null": {"name": "x", "type": "shapesys", "data": None},
        "staterror-string": {"name": "x", "type": "staterror", "data": "3"},
        "name-missing": {"type": "normfactor", "data": None},
        "name-empty": {"name": "", "type": "normfactor", "data": None},
        "name-number": {"name": 5, "type": "normfactor", "data": None},
        "shared-shapesys": {"name": "uncorr", "type": "shapesys", "data": [1.0, 2.0]},
        "conflict-types": {"name": "mu", "type": "shapefactor", "data": None},
        "conflict-lumi-normsys": {"name": "lumi", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
        "poi-is-normsys": None,
    }
    for name, modifier in mods.items():
        spec = base_spec()
        if modifier is None:
            spec["measurements"][0]["config"]["poi"] = "bkg_norm"
            ws(f"modifiers-{name}", "modifiers", spec, expect="no-crash")
            continue
        spec["channels"][0]["samples"][1]["modifiers"].append(modifier)
        ws(f"modifiers-{name}", "modifiers", spec)
    spec = base_spec()
    spec["channels"][0]["samples"][1]["modifiers"].append(copy.deepcopy(spec["channels"][0]["samples"][1]["modifiers"][0]))
    ws("modifiers-duplicate-in-sample", "modifiers", spec)

    # -- names --------------------------------------------------------------------------------------
    for name, path, value in [
        ("channel-empty", ("channels", 1, "name"), ""),
        ("sample-empty", bg + ("name",), ""),
        ("measurement-empty", ("measurements", 0, "name"), ""),
        ("poi-empty", ("measurements", 0, "config", "poi"), ""),
        ("channel-duplicate", ("channels", 1, "name"), "SR"),
        ("sample-duplicate", ("channels", 0, "samples", 0, "name"), "background"),
        ("observation-duplicate", ("observations", 1, "name"), "SR"),
        ("channel-whitespace", ("channels", 1, "name"), "   "),
        ("channel-newline", ("channels", 1, "name"), "C\nR"),
        ("channel-slash", ("channels", 1, "name"), "C/R"),
        ("channel-chain", ("channels", 1, "name"), "chain"),
        ("channel-10k-chars", ("channels", 1, "name"), "C" * 10000),
    ]:
        spec = _spec_with(path, value)
        if name.startswith("channel-") and name != "channel-duplicate":
            spec["observations"][1]["name"] = value
        legal = name in ("channel-newline", "channel-slash", "channel-chain", "channel-10k-chars")
        ws(f"names-{name}", "names", spec, **({"expect": "no-crash", "only": ("inspect", "sample")} if legal else {}))
    spec = base_spec()
    spec["measurements"].append(copy.deepcopy(spec["measurements"][0]))
    ws("names-measurement-duplicate", "names", spec)
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"].append(copy.deepcopy(spec["measurements"][0]["config"]["parameters"][0]))
    ws("names-parameter-configured-twice", "names", spec)

    # -- measurements -------------------------------------------------------------------------------
    spec = base_spec()
    spec["measurements"][0]["config"]["poi"] = "nope"
    ws("measurements-poi-unknown", "measurements", spec, expect="no-crash")
    spec = base_spec()
    del spec["measurements"][0]["config"]["parameters"][0]
    ws("measurements-lumi-unconfigured", "measurements", spec)
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"][0]["auxdata"] = [1.0, 2.0]
    ws("measurements-lumi-two-auxdata", "measurements", spec)
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"].append({"name": "stat_SR", "bounds": [[0, 2]]})
    ws("measurements-wrong-bounds-count", "measurements", spec)
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"].append({"name": "bkg_norm", "auxdata": [1.0, 2.0]})
    ws("measurements-normsys-two-auxdata", "measurements", spec)
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"].append({"name": "not_in_model", "bounds": [[0, 2]]})
    ws("measurements-unknown-parameter", "measurements", spec, expect="no-crash")
    ws("measurements-unknown-name", "measurements", good, ["--measurement", "nope"])
    ws("measurements-poi-option-unknown", "measurements", good, ["--poi", "not_a_parameter"])
    ws("measurements-poi-option-empty", "measurements", good, ["--poi", ""])
    ws("measurements-poi-option-vector", "measurements", good, ["--poi", "stat_SR"])
    ws("measurements-interpcode-bad", "measurements", good, ["--interpcode", "normsys=code9"], names="code9")
    ws("measurements-interpcode-form", "measurements", good, ["--interpcode", "normsys"], names="--interpcode")
    ws("measurements-interpcode-modifier", "measurements", good, ["--interpcode", "shapesys=code0"], names="shapesys")

    # -- degenerate but legal (work as pyhf does or fail in one sentence) -------------------------
    spec = base_spec()
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            sample["data"] = [0.0] * len(sample["data"])
            sample["modifiers"] = [m for m in sample["modifiers"] if m["type"] in ("normfactor", "lumi", "normsys")]
    for observation in spec["observations"]:
        observation["data"] = [0.0] * len(observation["data"])
    for command in ("inspect", "fit", "sample", "cls"):
        add(f"degenerate-all-zero-{command}", "degenerate", {"workspace.json": spec},
            [command, "{d}/workspace.json"] + (["--warmup", "20", "--draws", "20", "--chains", "1", "--target-ess", "0", "--no-plots",
                                                "--out", "{d}/out"] if command == "sample" else []),
            expect="no-crash", names="workspace.json")
    spec = base_spec()
    spec["measurements"][0]["config"]["parameters"].append({"name": "mu", "bounds": [[1.0, 1.0]], "inits": [1.0]})
    for command in ("inspect", "fit", "cls", "sample"):
        add(f"degenerate-poi-equal-bounds-{command}", "degenerate", {"workspace.json": spec},
            [command, "{d}/workspace.json"] + (["--warmup", "20", "--draws", "20", "--chains", "1", "--target-ess", "0", "--no-plots",
                                                "--out", "{d}/out"] if command == "sample" else []),
            expect="no-crash", names="workspace.json")
    spec = base_spec()
    for p in ["mu", "bkg_norm", "bkg_shape", "cr_free", "stat_SR", "uncorr"]:
        spec["measurements"][0]["config"]["parameters"].append({"name": p, "fixed": True})
    spec["measurements"][0]["config"]["parameters"][0]["fixed"] = True
    for command in ("fit", "sample"):
        add(f"degenerate-all-fixed-{command}", "degenerate", {"workspace.json": spec},
            [command, "{d}/workspace.json"] + (["--out", "{d}/out", "--no-plots"] if command == "sample" else []),
            expect="no-crash", names="workspace.json")

    # -- patches ------------------------------------------------------------------------------------
    def patched(name, patch_content, expect="error", names="patch.json", patch_arg="{d}/patch.json"):
        add(f"patches-{name}", "patches", {"workspace.json": good, "patch.json": patch_content},
            ["*", "{d}/workspace.json", "--patch", patch_arg], expect=expect, names=names)

    patched("missing", None, names="nope.json", patch_arg="{d}/nope.json")
    patched("binary", b"\x89PNG\r\n\x1a\n\x00\x00")
    patched("empty", "")
    patched("not-list", {"op": "add"})
    patched("bad-op", [{"op": "explode", "path": "/channels"}])
    patched("bad-path", [{"op": "replace", "path": "/nowhere/0", "value": 1}])
    patched("missing-value", [{"op": "add", "path": "/channels/0/name"}])
    patched("makes-invalid", [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [-1.0, 1.0]}])
    patched("makes-1e308", [{"op": "replace", "path": "/observations/0/data", "value": [1e308, 1.0]}])
    patched("makes-empty-name", [{"op": "replace", "path": "/channels/1/name", "value": ""},
                                 {"op": "replace", "path": "/observations/1/name", "value": ""}])
    patched("removes-channels", [{"op": "remove", "path": "/channels"}])
    patched("test-fails", [{"op": "test", "path": "/version", "value": "9"}])
    patched("nested-5000", _nested(5000))
    patched("int-5000-digits", '[{"op": "add", "path": "/x", "value": 1' + "0" * 5000 + "}]")
    patched("patchset-no-name", {"metadata": {}, "patches": [], "version": "1.0.0"})
    patchset = {"metadata": {"name": "x", "references": {"hepdata": "ins1234567"}, "description": "d",
                             "digests": {"sha256": "0" * 64}, "labels": ["m"]},
                "patches": [{"metadata": {"name": "p1", "values": [1]},
                             "patch": [{"op": "replace", "path": "/version", "value": "1.0.0"}]}],
                "version": "1.0.0"}
    bad = copy.deepcopy(patchset)
    del bad["metadata"]["digests"]
    patched("patchset-invalid", bad, patch_arg="{d}/patch.json:p1")
    patched("patchset-unknown-patch", patchset, patch_arg="{d}/patch.json:nope")
    bad = copy.deepcopy(patchset)
    bad["patches"][0]["metadata"]["values"] = [1, 2]
    patched("patchset-values-mismatch", bad, patch_arg="{d}/patch.json:p1")
    patched("patchset-not-object", [1, 2], patch_arg="{d}/patch.json:p1")

    # -- priors ---------------------------------------------------------------------------------------
    def priors(name, content, file="priors.json", expect="error", names=None):
        for command in ("priors", "sample"):
            argv = [command, "{d}/workspace.json", "--priors", "{d}/" + file]
            if command == "sample":
                argv += ["--out", "{d}/out", "--no-plots", "--warmup", "10", "--draws", "10", "--chains", "1"]
            add(f"priors-{name}-{command}", "priors", {"workspace.json": good, file: content}, argv,
                expect=expect, names=names or file)

    priors("missing", None, file="none.json")
    priors("binary", bytes(range(256)) * 3)
    priors("binary-yaml", bytes(range(256)) * 3, file="priors.yaml")
    priors("invalid-utf8", b'{"priors": {"mu": "\xff"}}')
    priors("empty", "")
    priors("top-list", "[]")
    priors("nested-5000", _nested(5000))
    priors("yaml-nested", "a: " + "[" * 5000 + "]" * 5000, file="priors.yaml")
    priors("yaml-bad", "priors: [: :", file="priors.yaml")
    priors("yaml-anchor-bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
           "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
           "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
           "priors: {}\n", file="priors.yaml")
    priors("unknown-family", {"priors": {"mu": {"family": "cauchy", "loc": 0}}})
    priors("sigma-negative", {"priors": {"bkg_norm": {"family": "normal", "mu": 0, "sigma": -1}}})
    priors("sigma-1e308", {"priors": {"bkg_norm": {"family": "normal", "mu": 0, "sigma": 1e308}}})
    priors("mu-1e308", {"priors": {"bkg_norm": {"family": "normal", "mu": 1e308, "sigma": 1}}})
    priors("nan", '{"priors": {"bkg_norm": {"family": "normal", "mu": NaN, "sigma": 1}}}')
    priors("int-5000-digits", '{"priors": {"bkg_norm": {"family": "normal", "mu": 1' + "0" * 5000 + ', "sigma": 1}}}')
    priors("bool", {"priors": {"bkg_norm": {"family": "normal", "mu": True, "sigma": 1}}})
    priors("unknown-parameter", {"priors": {"nope": {"family": "normal", "mu": 0, "sigma": 1}}})
    priors("empty-name", {"priors": {"": {"family": "normal", "mu": 0, "sigma": 1}}})
    priors("list-length", {"priors": {"stat_SR": {"family": "normal", "mu": [1, 1, 1], "sigma": 0.1}}})
    priors("uniform-reversed", {"priors": {"mu": {"family": "uniform", "low": 5, "high": 0}}})
    priors("uniform-huge", {"priors": {"mu": {"family": "uniform", "low": -1e308, "high": 1e308}}})
    priors("bounds-reversed", {"priors": {"mu": {"family": "normal", "mu": 1, "sigma": 1, "bounds": [5, 0]}}})
    priors("fixed-outside", {"priors": {"mu": {"family": "fixed", "value": 100}}})
    priors("gamma-alpha-zero", {"priors": {"uncorr": {"family": "gamma", "alpha": 0, "beta": 1}}})
    priors("extra-key", {"priors": {"mu": {"family": "uniform", "low": 0, "high": 5, "sigma": 1}}})
    priors("shapesys-bad", {"shapesys": "weird", "priors": {}})
    priors("directory", {"x": 1}, file="pdir/x")
    add("priors-directory-arg", "priors", {"workspace.json": good, "pdir/x": "1"},
        ["priors", "{d}/workspace.json", "--priors", "{d}/pdir"], names="pdir")
    add("priors-dev-zero", "priors", {"workspace.json": good},
        ["priors", "{d}/workspace.json", "--priors", "/dev/zero"], names="/dev/zero")

    # -- CLI arguments (checked before any fit or sampling) --------------------------------------------
    def arg(name, command, options, names, files=None, expect="error"):
        add(f"args-{command}-{name}", "arguments", dict(files or {"workspace.json": good}),
            [command, "{d}/workspace.json", *options], names=names, expect=expect)

    sample_out = ["--no-plots", "--out", "{d}/out"]
    arg("seed-negative", "sample", ["--seed", "-1", *sample_out], "--seed")
    arg("seed-2-70", "sample", ["--seed", str(2**70), *sample_out], "--seed")
    arg("seed-text", "sample", ["--seed", "abc", *sample_out], "--seed")
    arg("chains-zero", "sample", ["--chains", "0", *sample_out], "--chains")
    arg("chains-huge", "sample", ["--chains", str(10**9), *sample_out], "--chains")
    arg("draws-zero", "sample", ["--draws", "0", *sample_out], "--draws")
    arg("draws-huge", "sample", ["--draws", str(10**12), *sample_out], "--draws")
    arg("warmup-negative", "sample", ["--warmup", "-1", *sample_out], "--warmup")
    arg("target-acceptance-1.5", "sample", ["--target-acceptance", "1.5", *sample_out], "--target-acceptance")
    arg("target-acceptance-0", "sample", ["--target-acceptance", "0", *sample_out], "--target-acceptance")
    arg("target-acceptance-nan", "sample", ["--target-acceptance", "nan", *sample_out], "--target-acceptance")
    arg("out-empty", "sample", ["--no-plots", "--out", ""], "--out")
    arg("out-proc", "sample", ["--no-plots", "--out", "/proc/bayeshf-x"], "/proc/bayeshf-x")
    arg("out-under-file", "sample", ["--no-plots", "--out", "{d}/afile/sub"], "afile",
        files={"workspace.json": good, "afile": "x"})
    arg("out-is-file", "sample", ["--no-plots", "--out", "{d}/afile"], "afile", files={"workspace.json": good, "afile": "x"})
    arg("corner-vars-unknown", "sample", ["--corner-vars", "nope", "--out", "{d}/out"], "nope")
    arg("priors-and-bat-missing", "sample", ["--priors", "{d}/none.json", *sample_out], "none.json")
    for command in ("fit", "cls", "limit", "scan", "ranking"):
        arg("plot-proc", command, ["--plot", "/proc/bayeshf-x.png"], "/proc/bayeshf-x.png")
        arg("plot-under-file", command, ["--plot", "{d}/afile/p.png"], "afile", files={"workspace.json": good, "afile": "x"})
        arg("plot-directory", command, ["--plot", "{d}/adir"], "adir", files={"workspace.json": good, "adir/x": "1"})
        arg("plot-empty", command, ["--plot", ""], "--plot")
    arg("correlation-plot-proc", "fit", ["--correlation-plot", "/proc/bayeshf-x.png"], "/proc/bayeshf-x.png")
    arg("fix-unknown", "fit", ["--fix", "nope=1"], "nope")
    arg("fix-nan", "fit", ["--fix", "mu=nan"], "mu=nan")
    arg("fix-form", "fit", ["--fix", "mu"], "--fix")
    arg("fix-outside-bounds", "fit", ["--fix", "mu=1e300"], "mu")
    for value in ("nan", "inf", "-inf", "-1", "1e300", "abc"):
        arg(f"poi-value-{value}", "cls", ["--poi-value", value], "--poi-value")
    arg("level-zero", "cls", ["--level", "0", "--plot", "{d}/b.png"], "--level")
    for value in ("0", "1", "1.5", "nan", "-0.05"):
        arg(f"level-{value}", "limit", ["--level", value], "--level")
    arg("points-one", "scan", ["--points", "1"], "--points")
    arg("points-huge", "scan", ["--points", str(10**9)], "--points")
    arg("range-nan", "scan", ["--range", "nan", "1"], "--range")
    arg("range-reversed", "scan", ["--range", "2", "1"], "--range")
    arg("range-inf", "scan", ["--range", "0", "inf"], "--range")
    arg("par-unknown", "scan", ["--par", "nope"], "nope")
    arg("par2-unknown", "scan", ["--par2", "nope"], "nope")
    arg("poi-unknown", "cls", ["--poi", "nope"], "nope")
    arg("poi-unknown", "limit", ["--poi", "nope"], "nope")
    arg("poi-unknown", "sample", ["--poi", "nope", *sample_out], "nope")

    # plot: saved posteriors
    def plot(name, kind, content, names="posterior.nc", extra=()):
        add(f"plot-{kind}-{name}", "plot", {} if content is None else {"posterior.nc": content},
            ["plot", kind, "{d}/posterior.nc", *extra], names=names)

    for kind in ("corner", "ppc", "trace"):
        plot("missing", kind, None)
        plot("binary", kind, bytes(range(256)) * 8)
        plot("json", kind, good)
        plot("empty", kind, b"")
    add("plot-dev-zero", "plot", {}, ["plot", "corner", "/dev/zero"], names="/dev/zero")
    add("plot-directory", "plot", {"x/y": "1"}, ["plot", "corner", "{d}/x"], names="x")

    # -- resources (estimated up front, never a MemoryError or an abort) ----------------------------------
    for command in ("fit", "sample"):
        add(f"resources-huge-model-{command}", "resources", {"workspace.json": many_bins_spec(3000)},
            [command, "{d}/workspace.json", "--out", "{d}/out"] if command == "sample" else [command, "{d}/workspace.json"],
            names="workspace.json", env={"BAYESHF_MEMORY_LIMIT": "50000000"})
    return out


def many_bins_spec(nbins: int) -> dict:
    """One channel of ``nbins`` bins with a per-bin shapesys: ``nbins + 1`` parameters."""
    data = [10.0 + (i % 7) for i in range(nbins)]
    return {
        "channels": [{"name": "big", "samples": [
            {"name": "sig", "data": [1.0] * nbins, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "bkg", "data": data, "modifiers": [
                {"name": "unc", "type": "shapesys", "data": [1.0] * nbins}]}]}],
        "observations": [{"name": "big", "data": data}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python tests/hostile/generate.py DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    all_cases = cases(directory)
    (directory / "cases.json").write_text(json.dumps([dataclasses.asdict(c) | {"stdin": None} for c in all_cases], indent=1))
    runs = sum(len(c.commands()) for c in all_cases)
    print(f"{len(all_cases)} cases ({runs} command runs) in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
