"""Priors files (JSON or YAML): read and validate (bayeshf.priors.build_priors applies them).

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

import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from bayeshf.errors import BayeshfError
from bayeshf.workspace import MAX_VALUE


#: the prior families a priors file may name, with the keys each takes
FAMILIES: dict[str, tuple[str, ...]] = {
    "normal": ("mu", "sigma"),
    "lognormal": ("mu", "sigma"),
    "gamma": ("alpha", "beta"),
    "uniform": ("low", "high"),
    "halfnormal": ("sigma",),
    "cauchy": ("loc", "scale"),
    "flat": (),
    "fixed": ("value",),
}
#: parameters that must be strictly positive
_POSITIVE = {"sigma", "alpha", "beta", "scale"}
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
