"""Priors files (JSON or YAML): read, validate, and apply to the derived priors.

Format (priors/priors.schema.json; worked examples in priors/)::

    {
      "shapesys": "flat",                      # optional: "flat" | "unit-mean"
      "priors": {
        "mu":            {"family": "uniform", "low": 0, "high": 5},
        "alpha_JES":     {"family": "normal", "mu": 0, "sigma": 2},
        "staterror_SR":  {"family": "gamma", "alpha": [101, 50], "beta": [100, 49]},
        "staterror_SR[1]": {"family": "fixed", "value": 1.0},
        "lumi":          {"family": "lognormal", "mu": 0, "sigma": 0.02,
                          "bounds": [0.5, 1.5]}
      }
    }

A key names a parameter set (all its elements) or one scalar parameter
(``name[i]``); scalar keys win over set keys. A list value gives one number per
element of the set. ``bounds`` replaces the model's bounds (``null`` = none).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from bayeshf.errors import BayeshfError
from bayeshf.workspace import MAX_VALUE
from bayeshf.priors import _POSITIVE, FAMILIES, PriorEntry, _bounded


#: elements a priors file may hold (one per parameter element is plenty; guards against YAML alias bombs)
MAX_PRIOR_ELEMENTS = 1_000_000


def _schema() -> dict:
    text = resources.files("bayeshf").joinpath("schemas/priors.schema.json").read_text()
    return json.loads(text)


def read_priors(priors: str | Path | Mapping) -> tuple[dict, str]:
    """Load and schema-check a priors file or dict; returns (spec, origin for messages)."""
    if isinstance(priors, Mapping):
        spec, origin = dict(priors), "the priors dict"
    else:
        from bayeshf.workspace import check_depth, decode_text, parse_json, read_bytes

        path = Path(priors)
        origin = str(path)
        text = decode_text(read_bytes(path, origin, "priors"), origin, "priors")
        if not text.strip():
            raise BayeshfError(f"{origin}: the priors file is empty.")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                spec = yaml.safe_load(text)
            except RecursionError:
                raise BayeshfError(f"{origin}: YAML nested too deeply.") from None
            except Exception as error:  # yaml.YAMLError
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise BayeshfError(f"{origin}: not valid YAML ({first}).") from None
            check_depth(spec, origin, max_nodes=MAX_PRIOR_ELEMENTS)
        else:
            spec = parse_json(text, origin)
    if not isinstance(spec, dict):
        raise BayeshfError(f"{origin}: a priors file must hold an object with a \"priors\" mapping.")
    _check_entries(spec, origin)
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(spec), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise BayeshfError(f"{origin}: at {where}: {error.message}.")
    return spec, origin


def _check_entries(spec: dict, origin: str) -> None:
    """Friendly one-sentence checks before the schema (which catches the rest)."""
    priors = spec.get("priors")
    if not isinstance(priors, dict):
        raise BayeshfError(f"{origin}: a priors file must hold an object with a \"priors\" mapping.")
    for name, prior in priors.items():
        if not isinstance(prior, dict):
            raise BayeshfError(f"{origin}: the prior of {name} must be an object with a \"family\".")
        family = prior.get("family")
        if family not in FAMILIES:
            raise BayeshfError(f"{origin}: the prior of {name} has unknown family {family!r}; "
                               f"use one of {', '.join(FAMILIES)}.")
        needed = FAMILIES[family]
        for key in needed:
            if key not in prior:
                raise BayeshfError(f"{origin}: the {family} prior of {name} needs {key!r} "
                                   f"({', '.join(needed)}).")
        for bound in prior["bounds"] if isinstance(prior.get("bounds"), list) else []:
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                      or not math.isfinite(bound) or abs(bound) > MAX_VALUE):
                raise BayeshfError(f"{origin}: the bounds of the prior of {name} must be finite numbers within "
                                   f"{MAX_VALUE:g} in magnitude, or null, not {bound!r}.")
        extra = set(prior) - set(needed) - {"family", "bounds"}
        if extra:
            raise BayeshfError(f"{origin}: the {family} prior of {name} has unknown key(s) "
                               f"{', '.join(sorted(extra))}; a {family} prior takes {', '.join(needed) or 'no parameters'}.")
        for key in needed:
            values = prior[key] if isinstance(prior[key], list) else [prior[key]]
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise BayeshfError(f"{origin}: {key} of the prior of {name} must be a finite number, not {value!r}.")
                if abs(value) > MAX_VALUE:
                    raise BayeshfError(f"{origin}: {key} of the prior of {name} is {value!r}, beyond {MAX_VALUE:g} "
                                       "in magnitude (float64 arithmetic of the density breaks down).")
                if key in _POSITIVE and value <= 0:
                    raise BayeshfError(f"{origin}: {key} of the prior of {name} must be positive, not {value!r}.")


def _element(value: Any, j: int, size: int, origin: str, name: str, key: str) -> float:
    if isinstance(value, list):
        if len(value) != size:
            raise BayeshfError(f"{origin}: {key} of the prior of {name} has {len(value)} values "
                               f"but the parameter set has {size} elements.")
        return float(value[j])
    return float(value)


def _bound(value: Any) -> tuple[float, float]:
    lo, hi = value
    return (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))


def apply_overrides(model, entries: list[PriorEntry], spec: dict, origin: str) -> list[PriorEntry]:
    """Replace the derived entries named in ``spec["priors"]``."""
    names = list(model.par_names)
    index = {n: i for i, n in enumerate(names)}
    sets = {p.name: p for p in model.parameters}
    # set keys first, scalar keys after (they win)
    ordered = sorted(spec["priors"].items(), key=lambda kv: kv[0] not in sets)
    entries = list(entries)
    for key, prior in ordered:
        if key in sets:
            pset = sets[key]
            targets = [(pset.slice.start + j, j, pset.size) for j in range(pset.size)]
        elif key in index:
            targets = [(index[key], 0, 1)]
        else:
            raise BayeshfError(f"{origin}: {key!r} names no parameter or parameter set of the model.")
        family = prior["family"]
        for i, j, size in targets:
            old = entries[i]
            params = {k: _element(prior[k], j, size, origin, key, k) for k in FAMILIES[family]}
            pset = next(p for p in model.parameters if p.slice.start <= i < p.slice.stop)
            lo, hi = (float(b) for b in pset.bounds[i - pset.slice.start])
            if "bounds" in prior:
                lo, hi = _bound(prior["bounds"])
            if family == "fixed":
                value = params["value"]
                if not lo <= value <= hi:
                    raise BayeshfError(f"{origin}: the fixed value {value:g} of {names[i]} is outside its bounds [{lo:g}, {hi:g}].")
                entries[i] = PriorEntry(names[i], "fixed", params, value, value, old.parameter_set, origin)
                continue
            if family == "uniform" and params["low"] >= params["high"]:
                raise BayeshfError(f"{origin}: the uniform prior of {key} needs low < high.")
            new = _bounded(PriorEntry(names[i], family, params, lo, hi, old.parameter_set, origin))
            if not new.lower < new.upper:
                raise BayeshfError(f"{origin}: the prior of {names[i]} leaves no support: "
                                   f"[{new.lower:g}, {new.upper:g}] after the bounds.")
            entries[i] = dataclasses.replace(new)
    return entries
