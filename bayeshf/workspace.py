"""Read, validate and patch pyhf JSON workspaces; pick the measurement.

Every failure raises :class:`bayeshf.BayeshfError` with one sentence that
names the file and the cause, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from bayeshf.errors import BayeshfError
from bayeshf.interpolation import DEFAULT_CODES, HISTOSYS_CODES, NORMSYS_CODES

Source = Union[str, os.PathLike, Mapping[str, Any]]


def read_json(source: Source, what: str = "workspace") -> tuple[Any, str]:
    """Return ``(document, label)``; ``source`` is a path, ``-`` or an in-memory object."""
    if isinstance(source, Mapping) or isinstance(source, list):
        return copy.deepcopy(source), f"<{what} in memory>"
    label = str(source)
    if label == "-":
        text = sys.stdin.read()
        label = "<standard input>"
    else:
        path = Path(source)
        if not path.exists():
            raise BayeshfError(f"{label}: no such {what} file.")
        if path.is_dir():
            raise BayeshfError(f"{label}: is a directory, not a {what} JSON file.")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise BayeshfError(f"{label}: cannot read the {what} file ({error}).") from None
    try:
        return json.loads(text), label
    except json.JSONDecodeError as error:
        raise BayeshfError(
            f"{label}: malformed JSON at line {error.lineno}, column {error.colno} ({error.msg})."
        ) from None


@functools.lru_cache(maxsize=1)
def _workspace_validator():
    """jsonschema validator for pyhf's workspace schema 1.0.0, read from pyhf's installed schema files.

    Reading the files directly (the same schemas pyhf.schema.validate uses) saves importing pyhf,
    close to a second of every CLI call. None if the files cannot be found (then pyhf validates).
    """
    import importlib.util

    import jsonschema
    import referencing

    found = importlib.util.find_spec("pyhf")
    if found is None or not found.submodule_search_locations:
        return None
    directory = Path(list(found.submodule_search_locations)[0]) / "schemas" / "1.0.0"
    schemas = {}
    for path in directory.glob("*.json"):
        schema = json.loads(path.read_text())
        schemas[schema.get("$id", path.name)] = schema
    uri = "https://scikit-hep.org/pyhf/schemas/1.0.0/workspace.json"
    if uri not in schemas:
        return None
    registry = referencing.Registry().with_resources(
        (uri, referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT6))
        for uri, schema in schemas.items())
    # enter through a reference, so relative references inside resolve against the schema's own URI
    return jsonschema.Draft6Validator({"$ref": uri}, registry=registry)


def validate(spec: Any, label: str) -> None:
    """Validate against pyhf's workspace schema 1.0.0 and check the numbers."""
    if not isinstance(spec, dict):
        raise BayeshfError(f"{label}: a workspace must be a JSON object, got {type(spec).__name__}.")
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
    _check_numbers(spec, label)


def _schema_violation(error: Any, label: str) -> None:
    path = _json_path(getattr(error, "absolute_path", error.path))
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    raise BayeshfError(f"{label}: schema violation at {path or 'the top level'}: {message}.") from None


def _json_path(items: Sequence[Any]) -> str:
    path = ""
    for item in items:
        path += f"[{item}]" if isinstance(item, int) else f".{item}"
    return path.lstrip(".")


def _bad_number(values: Any, allow_negative: bool) -> tuple[int, float] | None:
    for index, value in enumerate(values):
        if not math.isfinite(value) or (not allow_negative and value < 0):
            return index, value
    return None


def _check_numbers(spec: Mapping[str, Any], label: str) -> None:
    """Reject NaN/infinite numbers and negative yields or observations."""
    for c, channel in enumerate(spec["channels"]):
        for s, sample in enumerate(channel["samples"]):
            where = f"channels[{c}].samples[{s}]"
            bad = _bad_number(sample["data"], allow_negative=False)
            if bad:
                kind = "negative" if math.isfinite(bad[1]) else "non-finite"
                raise BayeshfError(
                    f"{label}: {kind} yield {bad[1]} in sample '{sample['name']}' of channel "
                    f"'{channel['name']}' ({where}.data[{bad[0]}])."
                )
            for m, modifier in enumerate(sample["modifiers"]):
                data = modifier.get("data")
                arrays = []
                if isinstance(data, dict):
                    arrays = [v if isinstance(v, list) else [v] for v in data.values()]
                elif isinstance(data, list):
                    arrays = [data]
                for values in arrays:
                    bad = _bad_number(values, allow_negative=True)
                    if bad:
                        raise BayeshfError(
                            f"{label}: non-finite value {bad[1]} in modifier '{modifier['name']}' "
                            f"({where}.modifiers[{m}].data)."
                        )
    for o, observation in enumerate(spec["observations"]):
        bad = _bad_number(observation["data"], allow_negative=False)
        if bad:
            raise BayeshfError(
                f"{label}: invalid observed count {bad[1]} in channel '{observation['name']}' "
                f"(observations[{o}].data[{bad[0]}])."
            )


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
        raise BayeshfError(f"{label}: not a valid HEPData patchset ({error}).") from None
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
):
    """Load a workspace and compile it into a :class:`~bayeshf.model.HistFactoryModel`.

    ``source`` is a path, ``"-"`` (standard input) or a spec dict. ``patches``
    are JSON patch files, ``patchset.json:NAME`` entries, names of patches in
    ``patchset``, or in-memory patches. ``modifier_settings`` is pyhf's, e.g.
    ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}``.
    """
    from bayeshf.model import HistFactoryModel

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
