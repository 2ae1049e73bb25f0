"""Read, validate and patch pyhf JSON workspaces; pick the measurement.

Every failure raises :class:`bayeshf.BayeshfError` with one sentence that
names the file and the cause, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from bayeshf.errors import BayeshfError
from bayeshf.interpolation import DEFAULT_CODES, HISTOSYS_CODES, NORMSYS_CODES

Source = Union[str, os.PathLike, Mapping[str, Any]]

if TYPE_CHECKING:
    from bayeshf.model import HistFactoryModel


#: largest input file read (HEPData's largest workspaces are a few hundred MB)
MAX_FILE_BYTES = 2**31
#: deepest JSON nesting accepted (a workspace nests 7 deep; JSON patches a little more)
MAX_DEPTH = 100
#: integers with more digits are read as floats (then judged as numbers: 1e400 is not finite)
_MAX_INT_DIGITS = 300


def _parse_int(text: str):
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def read_bytes(source: str | os.PathLike, label: str, what: str, *, size_only: bool = False) -> bytes:
    """The bytes of a regular file or of standard input (``-``), at most MAX_FILE_BYTES; one-sentence errors.

    ``size_only``: check that ``source`` is a regular file of acceptable size, read nothing (returns b"").
    """
    import stat

    if label == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1) if hasattr(sys.stdin, "buffer") else \
            sys.stdin.read(MAX_FILE_BYTES + 1).encode("utf-8", "surrogateescape")
        if len(data) > MAX_FILE_BYTES:
            raise BayeshfError(f"<standard input>: the {what} is larger than {MAX_FILE_BYTES // 2**20} MiB.")
        return data
    try:
        info = os.stat(source)
    except FileNotFoundError:
        raise BayeshfError(f"{label}: no such {what} file.") from None
    except OSError as error:
        raise BayeshfError(f"{label}: cannot read the {what} file ({error.strerror or error}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise BayeshfError(f"{label}: is a directory, not a {what} file.")
    if not stat.S_ISREG(info.st_mode):
        # a FIFO with no writer would block forever, /dev/zero never ends
        raise BayeshfError(f"{label}: is not a regular file (a device, FIFO or socket); give a file, or - for standard input.")
    if info.st_size > MAX_FILE_BYTES:
        raise BayeshfError(f"{label}: the {what} file is {info.st_size / 2**20:.0f} MiB, more than the "
                           f"{MAX_FILE_BYTES // 2**20} MiB bayeshf reads.")
    if size_only:
        return b""
    try:
        with open(source, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise BayeshfError(f"{label}: cannot read the {what} file ({error.strerror or error}).") from None


def decode_text(data: bytes, label: str, what: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped), or one sentence saying where it is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BayeshfError(f"{label}: not a {what} text file (byte 0x{data[error.start]:02x} at offset "
                           f"{error.start} is not UTF-8).") from None


def check_depth(document: Any, label: str, limit: int = MAX_DEPTH, max_nodes: int | None = None) -> None:
    """Reject documents nested deeper than ``limit`` (later recursive code would overflow the stack).

    ``max_nodes``: also reject more elements than that (YAML aliases can expand a small file enormously).
    """
    stack = [(document, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            raise BayeshfError(f"{label}: more than {max_nodes:,} elements (YAML aliases expanding?).")
        if depth > limit:
            raise BayeshfError(f"{label}: JSON nested more than {limit} levels deep.")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_json(text: str, label: str) -> Any:
    """``json.loads`` with one-sentence errors for malformed, too deep or too long documents."""
    try:
        document = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as error:
        raise BayeshfError(
            f"{label}: malformed JSON at line {error.lineno}, column {error.colno} ({error.msg})."
        ) from None
    except RecursionError:
        raise BayeshfError(f"{label}: JSON nested too deeply (more than {MAX_DEPTH} levels).") from None
    except ValueError as error:  # e.g. Python's limits on numbers
        raise BayeshfError(f"{label}: JSON that cannot be read ({str(error).splitlines()[0]}).") from None
    check_depth(document, label)
    return document


def read_json(source: Source, what: str = "workspace") -> tuple[Any, str]:
    """Return ``(document, label)``; ``source`` is a path, ``-`` or an in-memory object."""
    if isinstance(source, Mapping) or isinstance(source, list):
        label = f"<{what} in memory>"
        check_depth(source, label)
        return copy.deepcopy(source), label
    label = str(source)
    data = read_bytes(source, label, what)
    if label == "-":
        label = "<standard input>"
    if not data.strip():
        raise BayeshfError(f"{label}: the {what} file is empty.")
    return parse_json(decode_text(data, label, what), label), label


@functools.lru_cache(maxsize=1)
def _schema_directory() -> Path | None:
    """pyhf's installed schema files (version 1.0.0), found without importing pyhf; None if absent."""
    import importlib.util

    found = importlib.util.find_spec("pyhf")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "schemas" / "1.0.0"


@functools.lru_cache(maxsize=1)
def _workspace_validator():
    """jsonschema validator for pyhf's workspace schema 1.0.0, read from pyhf's installed schema files.

    Reading the files directly (the same schemas pyhf.schema.validate uses) saves importing pyhf,
    close to a second of every CLI call. None if the files cannot be found (then pyhf validates).
    """
    import jsonschema
    import referencing
    from jsonschema import validators

    directory = _schema_directory()
    if directory is None:
        return None
    schemas = {}
    for path in directory.glob("*.json"):
        schema = json.loads(path.read_text())
        # all draft-06; without the marker the referenced schemas keep this validator class (its anyOf)
        schema.pop("$schema", None)
        schemas[schema.get("$id", path.name)] = schema
    uri = "https://scikit-hep.org/pyhf/schemas/1.0.0/workspace.json"
    if uri not in schemas:
        return None
    registry = referencing.Registry().with_resources(
        (uri, referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT6))
        for uri, schema in schemas.items())
    modifiers = schemas.get("https://scikit-hep.org/pyhf/schemas/1.0.0/defs.json", {}).get(
        "definitions", {}).get("modifier", {})
    kinds = {f"#/definitions/modifier/{name}": entry.get("properties", {}).get("type", {}).get("const")
             for name, entry in modifiers.items() if isinstance(entry, dict)}
    any_of = jsonschema.Draft6Validator.VALIDATORS["anyOf"]

    def any_of_by_kind(validator, branches, instance, schema):
        """anyOf trying first the branch whose ``type`` constant the instance names (a modifier: 1 of 7).

        Same verdict as jsonschema's anyOf, and on failure its very error (it then runs in full).
        """
        kind = instance.get("type") if isinstance(instance, dict) else None
        for branch in branches:
            if kind is not None and kinds.get(branch.get("$ref")) == kind:
                if validator.evolve(schema=branch).is_valid(instance):
                    return
                break
        yield from any_of(validator, branches, instance, schema)

    checker = validators.extend(jsonschema.Draft6Validator, {"anyOf": any_of_by_kind})
    # enter through a reference, so relative references inside resolve against the schema's own URI
    return checker({"$ref": uri}, registry=registry)


@functools.lru_cache(maxsize=1)
def _validation_fingerprint() -> bytes:
    """Digest of what :func:`validate` applies: this module's code and pyhf's schema files."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    directory = _schema_directory()
    for path in sorted(directory.glob("*.json")) if directory is not None else ():
        digest.update(path.read_bytes())
    return digest.digest()


def _validated_stamp(spec: dict) -> Path | None:
    """The file that marks ``spec`` as having passed :func:`validate` (None: no persistent cache, or not plain JSON).

    The stamps live in the persistent cache the command line turns on (``bayeshf.runtime.validation_cache``).
    """
    from bayeshf.runtime import validation_cache

    directory = validation_cache()
    if directory is None:
        return None
    try:
        text = json.dumps(spec, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):  # e.g. NumPy numbers in a spec built in memory: validated every time
        return None
    digest = hashlib.sha256(_validation_fingerprint())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return directory / digest.hexdigest()


def validate(spec: Any, label: str) -> None:
    """Validate against pyhf's workspace schema 1.0.0 and check the numbers.

    With the persistent cache on (the command line), contents that passed once are not checked again.
    """
    if not isinstance(spec, dict):
        raise BayeshfError(f"{label}: a workspace must be a JSON object, got {type(spec).__name__}.")
    stamp = _validated_stamp(spec)
    if stamp is not None and stamp.exists():
        return
    validator = _workspace_validator()
    if validator is not None:
        import jsonschema

        try:
            validator.validate(spec)
        except jsonschema.ValidationError as error:
            _schema_violation(error, label)
    else:  # pragma: no cover - pyhf installed without its schema files
        import pyhf

        try:
            pyhf.schema.validate(spec, "workspace.json")
        except pyhf.exceptions.InvalidSpecification as error:
            _schema_violation(error.parent, label)
    _check_names(spec, label)
    _check_numbers(spec, label)
    if stamp is not None:
        try:
            stamp.touch()
        except OSError:  # a cache that cannot be written only costs the next run the checks
            pass


def _schema_violation(error: Any, label: str) -> None:
    path = _json_path(getattr(error, "absolute_path", error.path))
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    raise BayeshfError(f"{label}: schema violation at {path or 'the top level'}: {message}.") from None


def _json_path(items: Sequence[Any]) -> str:
    path = ""
    for item in items:
        path += f"[{item}]" if isinstance(item, int) else f".{item}"
    return path.lstrip(".")


#: largest magnitude of a count, uncertainty, bound or init: float64 Poisson terms of larger counts
#: (2 n log n ~ 1e17) cannot resolve a change of one unit any more, and squares overflow soon after
MAX_VALUE = 1e15
#: smallest nonzero magnitude: ratios such as uncertainty / yield of smaller ones overflow
MIN_VALUE = 1e-100
#: normsys factors outside [1/MAX_FACTOR, MAX_FACTOR]: factor**alpha leaves float64 within the default bounds
MAX_FACTOR = 1e10


def _bad_number(values: Any, allow_negative: bool, limit: float = MAX_VALUE) -> tuple[int, Any, str] | None:
    for index, value in enumerate(values):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return index, value, "non-numeric"
        if not math.isfinite(value):
            return index, value, "non-finite"
        if not allow_negative and value < 0:
            return index, value, "negative"
        if abs(value) > limit:
            return index, value, f"too large (beyond {limit:g})"
        if 0 < abs(value) < MIN_VALUE:
            return index, value, f"too small (nonzero below {MIN_VALUE:g})"
    return None


def _check_names(spec: Mapping[str, Any], label: str) -> None:
    """Names non-empty and unique where pyhf and the output files need them to be."""
    def check(name: Any, where: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise BayeshfError(f"{label}: {where} has an empty name.")

    for where, items in (("channel", spec["channels"]), ("observation", spec["observations"]),
                         ("measurement", spec["measurements"])):
        seen = set()
        for i, item in enumerate(items):
            check(item["name"], f"{where} {i} ({where}s[{i}])")
            if item["name"] in seen:
                raise BayeshfError(f"{label}: two {where}s are named '{item['name']}'.")
            seen.add(item["name"])
    for c, channel in enumerate(spec["channels"]):
        seen = set()
        for s, sample in enumerate(channel["samples"]):
            check(sample["name"], f"sample {s} of channel '{channel['name']}' (channels[{c}].samples[{s}])")
            if sample["name"] in seen:
                raise BayeshfError(f"{label}: channel '{channel['name']}' has two samples named '{sample['name']}'.")
            seen.add(sample["name"])
            kinds = set()
            for m, modifier in enumerate(sample["modifiers"]):
                check(modifier["name"], f"modifier {m} of sample '{sample['name']}' in channel '{channel['name']}' "
                                        f"(channels[{c}].samples[{s}].modifiers[{m}])")
                if (modifier["name"], modifier["type"]) in kinds:
                    raise BayeshfError(f"{label}: sample '{sample['name']}' in channel '{channel['name']}' lists "
                                       f"{modifier['type']} '{modifier['name']}' twice.")
                kinds.add((modifier["name"], modifier["type"]))
    for m, measurement in enumerate(spec["measurements"]):
        check(measurement["config"]["poi"], f"the POI of measurement '{measurement['name']}'")
        for p, parameter in enumerate(measurement["config"].get("parameters", [])):
            check(parameter["name"], f"parameter {p} of measurement '{measurement['name']}' "
                                     f"(measurements[{m}].config.parameters[{p}])")


def _check_numbers(spec: Mapping[str, Any], label: str) -> None:
    """Every number finite and within what the model's float64 arithmetic survives; counts not negative."""
    def fail(bad, what, where):
        index, value, kind = bad
        raise BayeshfError(f"{label}: {kind} {what.format(value=value)} ({where}[{index}]).")

    for c, channel in enumerate(spec["channels"]):
        for s, sample in enumerate(channel["samples"]):
            where = f"channels[{c}].samples[{s}]"
            in_sample = f"of sample '{sample['name']}' in channel '{channel['name']}'"
            bad = _bad_number(sample["data"], allow_negative=False)
            if bad:
                fail(bad, f"yield {{value}} {in_sample}", f"{where}.data")
            for m, modifier in enumerate(sample["modifiers"]):
                data = modifier.get("data")
                what = f"value {{value}} of {modifier['type']} '{modifier['name']}' {in_sample}"
                at = f"{where}.modifiers[{m}].data"
                if modifier["type"] == "normsys":
                    for key in ("hi", "lo"):
                        value = data[key]
                        bad = _bad_number([value], allow_negative=False, limit=MAX_FACTOR)
                        if bad is None and not value >= 1 / MAX_FACTOR:
                            bad = (0, value, f"non-positive (below {1 / MAX_FACTOR:g}; the interpolation takes its logarithm)")
                        if bad:
                            raise BayeshfError(f"{label}: {bad[2]} {key} factor {value!r} of normsys '{modifier['name']}' "
                                               f"{in_sample} ({at}.{key}).")
                elif modifier["type"] == "histosys":
                    for key in ("hi_data", "lo_data"):
                        bad = _bad_number(data[key], allow_negative=True)
                        if bad:
                            fail(bad, f"{key} value {{value}} of histosys '{modifier['name']}' {in_sample}", f"{at}.{key}")
                elif isinstance(data, list):
                    bad = _bad_number(data, allow_negative=True)  # pyhf squares or masks negative uncertainties
                    if bad:
                        fail(bad, what, at)
    for o, observation in enumerate(spec["observations"]):
        bad = _bad_number(observation["data"], allow_negative=False)
        if bad:
            fail((bad[0], bad[1], "invalid"), f"observed count {{value}} ({bad[2]}) in channel '{observation['name']}'",
                 f"observations[{o}].data")
    for m, measurement in enumerate(spec["measurements"]):
        for p, parameter in enumerate(measurement["config"].get("parameters", [])):
            at = f"measurements[{m}].config.parameters[{p}]"
            for key in ("auxdata", "sigmas", "inits"):
                if key in parameter:
                    bad = _bad_number(parameter[key], allow_negative=key != "sigmas")
                    if bad:
                        fail(bad, f"{key} value {{value}} of parameter '{parameter['name']}'", f"{at}.{key}")
            for b, pair in enumerate(parameter.get("bounds", [])):
                bad = _bad_number(pair, allow_negative=True)
                if bad:
                    fail(bad, f"bound {{value}} of parameter '{parameter['name']}'", f"{at}.bounds[{b}]")


def apply_patches(
    spec: dict,
    label: str,
    patches: Sequence[Any] | None,
    patchset: Source | None = None,
) -> tuple[dict, list[str]]:
    """Apply RFC 6902 patches (files, in-memory lists) or patches of a HEPData patchset.

    A patch is given as a path, ``patchset.json:NAME``, a patch name when
    ``patchset`` is given, or an in-memory list of operations / pyhf patch dict.
    """
    import jsonpatch

    applied = []
    patchset_doc = None
    patchset_label = None
    if patchset is not None:
        patchset_doc, patchset_label = read_json(patchset, "patchset")
    for patch in patches or []:
        operations, patch_label = _resolve_patch(patch, patchset_doc, patchset_label)
        try:
            spec = jsonpatch.JsonPatch(operations).apply(spec)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as error:
            raise BayeshfError(f"{patch_label}: patch does not apply to {label} ({error}).") from None
        applied.append(patch_label)
    return spec, applied


def _resolve_patch(patch: Any, patchset_doc: Any, patchset_label: str | None) -> tuple[list, str]:
    if isinstance(patch, list):
        return patch, "<patch in memory>"
    if isinstance(patch, Mapping):
        if "patch" in patch:
            return patch["patch"], f"<patch {patch.get('metadata', {}).get('name', 'in memory')}>"
        raise BayeshfError("<patch in memory>: a patch must be a list of JSON-patch operations.")
    text = str(patch)
    name = None
    if patchset_doc is not None and not Path(text).exists():
        return _patch_from_patchset(patchset_doc, patchset_label or "patchset", text)
    if ":" in text and not Path(text).exists():
        text, name = text.rsplit(":", 1)
    doc, label = read_json(text, "patch")
    if isinstance(doc, dict) and "patches" in doc:
        if name is None:
            names = [p.get("metadata", {}).get("name") for p in doc["patches"]]
            raise BayeshfError(
                f"{label}: is a patchset; name one of its {len(names)} patches as {label}:NAME "
                f"(e.g. {names[0] if names else '...'})."
            )
        return _patch_from_patchset(doc, label, name)
    if isinstance(doc, dict) and "patch" in doc:
        doc = doc["patch"]
    if not isinstance(doc, list):
        raise BayeshfError(f"{label}: a patch file must hold a list of JSON-patch operations.")
    return doc, label


def _patch_from_patchset(doc: Any, label: str, name: str) -> tuple[list, str]:
    import pyhf

    try:
        patchset = pyhf.PatchSet(doc)
    except Exception as error:  # pyhf raises several types for invalid patchsets
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # pyhf's is 3 lines
        raise BayeshfError(f"{label}: not a valid HEPData patchset ({detail}).") from None
    for patch in patchset.patches:
        if patch.name == name:
            return list(patch.patch), f"{label}:{name}"
    raise BayeshfError(f"{label}: no patch named '{name}' (it has {len(patchset.patches)} patches).")


def select_measurement(spec: Mapping[str, Any], label: str, name: str | None) -> dict:
    measurements = spec["measurements"]
    if name is None:
        return measurements[0]
    for measurement in measurements:
        if measurement["name"] == name:
            return measurement
    known = ", ".join(repr(m["name"]) for m in measurements)
    raise BayeshfError(f"{label}: unknown measurement {name!r} (the workspace has {known}).")


def check_modifier_settings(settings: Mapping[str, Any] | None) -> dict[str, str]:
    """Turn pyhf-style ``modifier_settings`` into ``{"normsys": code, "histosys": code}``."""
    codes = dict(DEFAULT_CODES)
    for modifier, options in (settings or {}).items():
        allowed = {"normsys": NORMSYS_CODES, "histosys": HISTOSYS_CODES}.get(modifier)
        if allowed is None:
            raise BayeshfError(f"modifier_settings: only normsys and histosys take an interpolation code, not {modifier!r}.")
        code = options.get("interpcode") if isinstance(options, Mapping) else options
        if code not in allowed:
            raise BayeshfError(
                f"modifier_settings: {modifier} interpolation code {code!r} is not one of {', '.join(allowed)}."
            )
        codes[modifier] = code
    return codes


def load(
    source: Source,
    patches: Sequence[Any] | None = None,
    measurement: str | None = None,
    modifier_settings: Mapping[str, Any] | None = None,
    *,
    patchset: Source | None = None,
    poi_name: str | None = None,
    data: Sequence[float] | None = None,
) -> "HistFactoryModel":
    """Load a workspace and compile it into a :class:`~bayeshf.model.HistFactoryModel`.

    ``source`` is a path, ``"-"`` (standard input), a spec dict or ``pyhf.Workspace``,
    or a ``pyhf.Model`` with its ``data`` (main or main+aux, as pyhf takes them). ``patches``
    are JSON patch files, ``patchset.json:NAME`` entries, names of patches in
    ``patchset``, or in-memory patches. ``modifier_settings`` is pyhf's, e.g.
    ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}``.
    """
    from bayeshf._pyhf_objects import is_pyhf_model, spec_of_pyhf_model
    from bayeshf.model import HistFactoryModel

    if is_pyhf_model(source):
        source, modifier_settings = spec_of_pyhf_model(source, data, modifier_settings)
    spec, label = read_json(source, "workspace")
    validate(spec, label)
    spec, applied = apply_patches(spec, label, patches, patchset)
    if applied:
        validate(spec, f"{label} patched with {', '.join(applied)}")
    chosen = select_measurement(spec, label, measurement)
    codes = check_modifier_settings(modifier_settings)
    return HistFactoryModel.from_spec(
        spec, measurement=chosen, codes=codes, label=label, poi_name=poi_name
    )
