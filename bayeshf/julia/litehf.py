"""What the LiteHF.jl path needs from a bayeshf model, and which term is counted where.

LiteHF.jl 0.1 (``build_pyhf(load_pyhfjson(path))``) names its parameters by
modifier: the POI first, then each modifier name once; per-bin modifiers
(staterror, shapesys, shapefactor) become ``name_bin1``, ``name_bin2``, ...
It interpolates normsys with code1 and histosys with code0 (pyhf 0.7's
defaults are code4 / code4p), reads the POI and lumi sigma from the *first*
measurement, needs the POI among the modifiers, and cannot build shapefactor
modifiers (``Shapefactor.(eachindex(data))`` has no one-argument constructor).

Bookkeeping. ``pyhf_logjointof`` = ``pyhf_loglikelihoodof`` (main Poisson
term) + ``pyhf_logpriorof`` (LiteHF's priors, which *are* the constraint
terms). The bridge uses ``pyhf_loglikelihoodof`` only and gives BAT
bayeshf's priors, so each constraint is counted once, as a prior:
:data:`POSTERIOR_TERMS` lists it and the tests check it against
``model.logpdf = model.log_likelihood + model.log_constraint``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bayeshf.errors import BayeshfError

#: LiteHF.jl's interpolation codes (src/modifiers.jl: Normsys -> InterpCode1, Histosys -> InterpCode0)
LITEHF_CODES = {"normsys": "code1", "histosys": "code0"}
_PER_BIN = {"staterror", "shapesys", "shapefactor"}

#: term of the HistFactory posterior -> where each path counts it (BAT likelihood, BAT prior, or nowhere)
POSTERIOR_TERMS: dict[str, dict[str, str]] = {
    "litehf": {
        "main Poisson term": "likelihood: LiteHF pyhf_loglikelihoodof",
        "constraint terms": "prior: bayeshf PriorSet as Distributions.jl (LiteHF's pyhf_logpriorof unused)",
        "priors of unconstrained parameters": "prior: bayeshf PriorSet as Distributions.jl",
    },
    "jax": {
        "main Poisson term": "likelihood: bayeshf model.log_likelihood via the JAX callback",
        "constraint terms": "prior: bayeshf PriorSet as Distributions.jl",
        "priors of unconstrained parameters": "prior: bayeshf PriorSet as Distributions.jl",
    },
}


def litehf_sample_names(spec: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """LiteHF.jl's modifier names of every sample, ``{channel: {sample: names}}`` in JSON order.

    LiteHF's ``build_modifier!`` names per-bin modifiers (staterror, shapesys,
    shapefactor) ``name_bin1 ... name_binN`` with N the length of the modifier's
    data, every other modifier by its name, in the order the sample lists them.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for channel in spec["channels"]:
        samples = out.setdefault(channel["name"], {})
        for sample in channel["samples"]:
            names: list[str] = []
            for modifier in sample["modifiers"]:
                if modifier["type"] in _PER_BIN:
                    names += [f"{modifier['name']}_bin{i + 1}" for i in range(len(modifier["data"] or ()))]
                else:
                    names.append(modifier["name"])
            samples[sample["name"]] = names
    return out


def litehf_input_order(sample_names: Iterable[Sequence[str]]) -> list[str]:
    """The order in which LiteHF's ``expected(model)`` reads its parameter vector.

    ``sample_names``: the modifier names of every sample (as
    :func:`litehf_sample_names` gives them) in the order LiteHF's
    ``build_pyhf`` iterates its channel and sample ``Dict``s, which depends on
    Julia's string hashes. The answer is ``build_pyhf``'s ``global_unique``:
    each name once, where it first appears. It is not ``prior_names(model)``,
    whose POI ``sortpoi!`` moved to the front without reordering ``expected``.
    Python mirror of ``BayesHFBridge.litehf_input_names``.
    """
    order: dict[str, None] = {}
    for names in sample_names:
        for name in names:
            order.setdefault(name, None)
    return list(order)


def litehf_names(model) -> list[str]:
    """LiteHF.jl's name of each bayeshf parameter, in ``model.par_names`` order."""
    names = []
    for pset in model.parameters:
        if pset.modifier_type in _PER_BIN:
            names += [f"{pset.name}_bin{j + 1}" for j in range(pset.size)]
        elif pset.size == 1:
            names.append(pset.name)
        else:  # pragma: no cover - only per-bin modifiers have several elements
            raise BayeshfError(f"parameter set {pset.name} ({pset.modifier_type}) has {pset.size} elements.")
    return names


def check_litehf_support(model) -> None:
    """Raise :class:`BayeshfError` for models LiteHF.jl 0.1 cannot build; warn where it differs."""
    if model.spec is None:
        raise BayeshfError(f"{model.label} has no workspace spec, so LiteHF.jl cannot read it; use likelihood='jax'.")
    if model.poi_name is None:
        raise BayeshfError(f"{model.label} has no POI in the model, which LiteHF.jl 0.1 requires (apply a signal "
                           "patch), or use likelihood='jax'.")
    kinds = {t for pset in model.parameters for t in pset.modifier_types}
    if "shapefactor" in kinds:
        raise BayeshfError(f"{model.label} has shapefactor modifiers, which LiteHF.jl 0.1 cannot build; "
                           "use likelihood='jax'.")
    used = {kind: code for kind, code in model.codes.items() if kind in kinds}
    different = {k: c for k, c in used.items() if LITEHF_CODES.get(k, c) != c}
    if different:
        warnings.warn(
            f"LiteHF.jl interpolates normsys with code1 and histosys with code0 but {model.label} uses "
            + ", ".join(f"{k} {c}" for k, c in sorted(different.items()))
            + "; load it with --interpcode normsys=code1 --interpcode histosys=code0 to compare like with like.",
            stacklevel=3,
        )


def _data_and_measurement_spec(model) -> dict[str, Any]:
    """model.spec with the model's observed counts and its measurement first (POI set)."""
    spec = copy.deepcopy(dict(model.spec))
    observed = np.asarray(model.observed, dtype=float)
    spec["observations"] = [
        {"name": channel, "data": observed[model.channel_slices[channel]].tolist()} for channel in model.channels
    ]
    measurements = list(spec.get("measurements", []))
    chosen = [m for m in measurements if m.get("name") == model.measurement]
    spec["measurements"] = chosen + [m for m in measurements if m.get("name") != model.measurement]
    if chosen and model.poi_name:
        spec["measurements"][0] = copy.deepcopy(chosen[0])
        spec["measurements"][0]["config"]["poi"] = model.poi_name
    return spec


def neutral_modifier(poi_name: str) -> dict[str, Any]:
    """A modifier that multiplies by 1 at every parameter value: a normsys with hi = lo = 1 (1**alpha)."""
    return {"name": poi_name, "type": "normsys", "data": {"hi": 1.0, "lo": 1.0}}


def litehf_spec(model) -> dict[str, Any]:
    """The workspace LiteHF.jl should read: model.spec with the model's observed counts and measurement first.

    A sample without modifiers gets :func:`neutral_modifier` of the POI:
    LiteHF 0.1 indexes each sample's parameters with a vector of
    ``findfirst`` results, which for no modifiers is an empty
    ``Vector{Union{Nothing,Int}}`` that LiteHF was never run with.
    """
    spec = _data_and_measurement_spec(model)
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            if not sample["modifiers"] and model.poi_name:
                sample["modifiers"] = [neutral_modifier(model.poi_name)]
    return spec


def litehf_reference_model(model):
    """bayeshf's model of the workspace LiteHF reads, with LiteHF's interpolation codes (normsys code1, histosys code0).

    Its ``log_likelihood`` is what LiteHF's ``pyhf_loglikelihoodof`` must
    return; the bridge compares the two before sampling.
    """
    from bayeshf.model import HistFactoryModel

    spec = _data_and_measurement_spec(model)
    reference = HistFactoryModel.from_spec(spec, measurement=spec["measurements"][0], codes=LITEHF_CODES,
                                           label=model.label, poi_name=model.poi_name)
    if list(reference.par_names) != list(model.par_names):  # pragma: no cover - same spec, same parameters
        raise BayeshfError(f"{model.label}: the workspace written for LiteHF.jl has other parameters than the model.")
    return reference
