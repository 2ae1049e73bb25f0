"""``bayeshf inspect``: what is in a workspace, as the compiled model sees it."""

from __future__ import annotations

import argparse
import math
from collections import Counter

from bayeshf.cli.common import add_output_file_argument, add_workspace_arguments, model_from_args, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="channels, samples, modifiers and parameters of a workspace",
        description="Summarise a workspace: channels and bins, samples, modifiers by type, parameters "
        "with inits, bounds and constraint, the POI and the measurement used.",
    )
    add_workspace_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    add_output_file_argument(parser)
    parser.set_defaults(func=run)


_PYHF_CONSTRAINT = {"normal": "constrained_by_normal", "poisson": "constrained_by_poisson", None: "unconstrained",
                    "none": "unconstrained"}


def summary(model) -> dict:
    """A JSON-able description of a compiled model.

    The keys ``channels`` [[name, nbins]], ``samples``, ``modifiers`` {name: type},
    ``parameters`` [[name, constraint]], ``systematics`` [[name, constraint, [types]]]
    and ``measurements`` [[name, poi, [parameter names]]] have the shapes of
    ``pyhf inspect --output-file``; the other keys are bayeshf's.
    """
    spec = model.spec or {}
    modifiers = Counter()
    pairs = set()
    for channel in spec.get("channels", []):
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                if (modifier["name"], modifier["type"]) not in pairs:
                    pairs.add((modifier["name"], modifier["type"]))
                    modifiers[modifier["type"]] += 1
    pairs = sorted(pairs)
    constraints = sorted((p.name, _PYHF_CONSTRAINT.get(p.constraint, str(p.constraint))) for p in model.parameters)
    return {
        # pyhf inspect's keys
        "channels": [[c, model.channel_nbins[c]] for c in model.channels],
        "samples": list(model.samples),
        "modifiers": dict(pairs),
        "parameters": [list(item) for item in constraints],
        "systematics": [[name, kind, [t for n, t in pairs if n == name]] for name, kind in constraints],
        "measurements": [[m["name"], m["config"]["poi"], [p["name"] for p in m["config"].get("parameters", [])]]
                         for m in spec.get("measurements", [])],
        # bayeshf's
        "workspace": model.label,
        "measurement": model.measurement,
        "poi": model.poi_name,
        "interpolation": model.codes,
        "channel_nbins": {c: model.channel_nbins[c] for c in model.channels},
        "modifier_types": dict(sorted(modifiers.items())),
        "npars": model.npars,
        "nauxdata": model.nauxdata,
        "parameter_sets": [
            {
                "name": p.name,
                "type": "+".join(p.modifier_types),
                "size": p.size,
                "constraint": p.constraint or "none",
                "inits": list(p.inits),
                "bounds": [list(b) for b in p.bounds],
                "fixed": list(p.fixed),
                "poi": p.is_poi,
            }
            for p in model.parameters
        ],
    }


def _range(values) -> str:
    low, high = min(values), max(values)
    return f"{low:g}" if math.isclose(low, high) else f"{low:g}..{high:g}"


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    info = summary(model)
    if args.json or args.output_file:
        print_json(info, args)
        if args.json:
            return 0
    print(f"workspace    {info['workspace']}")
    print(f"measurement  {info['measurement']}")
    print(f"POI          {info['poi'] or '(none)'}")
    print(f"interpolation normsys={info['interpolation']['normsys']} histosys={info['interpolation']['histosys']}")
    print(f"channels     {len(info['channels'])}, {model.nmain} bins in all")
    for name, nbins in info["channels"]:
        print(f"  {name:<40} {nbins:>5} bins")
    print(f"samples      {len(info['samples'])}: {', '.join(info['samples'])}")
    print("modifiers    " + ", ".join(f"{k} {v}" for k, v in info["modifier_types"].items()))
    print(f"parameters   {info['npars']} in {len(info['parameter_sets'])} sets")
    width = max(len(p["name"]) for p in info["parameter_sets"])
    print(f"  {'name':<{width}}  {'type':<20} {'size':>4}  {'constraint':<10} {'init':<12} {'bounds':<20} fixed")
    for p in info["parameter_sets"]:
        bounds = f"[{_range([b[0] for b in p['bounds']])}, {_range([b[1] for b in p['bounds']])}]"
        fixed = "all" if all(p["fixed"]) else ("some" if any(p["fixed"]) else "")
        mark = " (POI)" if p["poi"] else ""
        print(
            f"  {p['name']:<{width}}  {p['type']:<20} {p['size']:>4}  {p['constraint']:<10} "
            f"{_range(p['inits']):<12} {bounds:<20} {fixed}{mark}"
        )
    return 0
