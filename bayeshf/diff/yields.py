"""Nominal yields as traced inputs: substitute a sample's ``data`` inside a compiled model.

A substituted nominal changes exactly what the same change of the sample's
``data`` in the workspace JSON changes, everything else in the JSON as it was:

- histosys: the JSON holds absolute templates ``hi_data``/``lo_data``, so the
  stored shifts ``hi - nominal`` and ``nominal - lo`` move with the nominal;
- staterror: the pooled relative width ``sqrt(sum_s unc_sb^2) / sum_s nominal_sb``
  is recomputed from the new nominal (the absolute uncertainties stay);
- shapesys: ``tau = (nominal / unc)^2`` is recomputed, and with it the
  auxiliary datum (pyhf's auxdata of a shapesys is tau);
- normsys, normfactor, shapefactor, lumi: multiplicative, nothing to change.

What is decided when the model is built stays: which staterror/shapesys bins
are masked (a zero nominal or uncertainty at build time) and which cells a
sample occupies (yields given for bins of a channel the sample is not in are
ignored, as there is no such sample to change in the JSON).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np

from bayeshf.errors import BayeshfError


class YieldStructure(NamedTuple):
    """Host-side description of what depends on the nominal yields (one per model, cached)."""

    present: np.ndarray  # (S, B) 1.0 where the sample exists in the bin's channel
    histosys_mask: np.ndarray  # (K, S, B) 1.0 where histosys row k is a modifier of the (sample, bin)
    staterror_param: np.ndarray  # (M,) parameter index of each active staterror element
    staterror_bin: np.ndarray  # (M,) its main bin
    staterror_samples: np.ndarray  # (M, S) 1.0 for the samples pooled into it
    staterror_unc: np.ndarray  # (M,) sqrt(sum of squared absolute uncertainties)
    shapesys_param: np.ndarray  # (P,) parameter index of each active shapesys element
    shapesys_poisson: np.ndarray  # (P,) its position in the model's poisson tables
    shapesys_aux: np.ndarray  # (P,) its position in the auxiliary data
    shapesys_sample: np.ndarray  # (P,)
    shapesys_bin: np.ndarray  # (P,)
    shapesys_unc: np.ndarray  # (P,) absolute uncertainty


def yield_structure(model: Any) -> YieldStructure:
    """The :class:`YieldStructure` of ``model`` (computed once, kept in its metadata)."""
    meta = model._meta
    cached = meta.get("_yield_structure")
    if cached is None:
        cached = meta["_yield_structure"] = _structure(model)
    return cached


def _structure(model: Any) -> YieldStructure:
    samples, channels = model.samples, model.channels
    S, B = len(samples), model.nmain
    tables = meta_tables = model._meta["tables"]
    K = len(tables.histosys_param)
    spec = model.spec
    param_of = {p.name: p for p in model.parameters}
    present = np.zeros((S, B))
    histosys_mask = np.zeros((K, S, B))
    se_rows: dict[int, tuple[int, set, float]] = {}  # parameter index -> (bin, samples, sum unc^2)
    sh_rows = []
    if spec is None:  # a model from arrays: no staterror/shapesys, histosys where a shift is stored
        table = np.asarray(model.arrays.histosys_table).reshape(2, K, S, B)
        histosys_mask = ((table[0] != 0) | (table[1] != 0)).astype(float)
        present[:] = 1.0
        if any(p.modifier_type in ("staterror", "shapesys") for p in model.parameters):  # pragma: no cover
            raise BayeshfError(f"{model.label}: staterror/shapesys need the workspace spec to substitute yields.")
    else:
        histo_row = {int(p): k for k, p in enumerate(meta_tables.histosys_param)}
        slices = model.channel_slices
        for channel in spec["channels"]:
            if channel["name"] not in slices:
                continue
            sl = slices[channel["name"]]
            bins = np.arange(sl.start, sl.stop)
            for sample in channel["samples"]:
                s = samples.index(sample["name"])
                present[s, sl] = 1.0
                for mod in sample["modifiers"]:
                    pset = param_of[mod["name"]]
                    if mod["type"] == "histosys":
                        histosys_mask[histo_row[pset.slice.start], s, sl] = 1.0
                    elif mod["type"] == "staterror":
                        position = {b: i for i, b in enumerate(pset.bins)}
                        for b, unc in zip(bins, mod["data"]):
                            i = position[int(b)]
                            if pset.fixed[i]:
                                continue
                            entry = se_rows.setdefault(pset.slice.start + i, (int(b), set(), 0.0))
                            se_rows[pset.slice.start + i] = (entry[0], entry[1] | {s}, entry[2] + float(unc) ** 2)
                    elif mod["type"] == "shapesys":
                        for i, (b, unc) in enumerate(zip(bins, mod["data"])):
                            if not pset.fixed[i]:
                                sh_rows.append((pset.slice.start + i, s, int(b), float(unc)))
    se_param = np.asarray(sorted(se_rows), dtype=np.int32)
    se_samples = np.zeros((len(se_param), S))
    for row, p in enumerate(se_param):
        se_samples[row, sorted(se_rows[p][1])] = 1.0
    poisson_param, poisson_aux, aux_position = [], [], 0  # the model's poisson tables, as _compile_arrays orders them
    for p in model.parameters:
        if p.constraint == "poisson":
            poisson_param.extend(range(p.slice.start, p.slice.stop))
            poisson_aux.extend(range(aux_position, aux_position + p.size))
        aux_position += p.size if p.constraint else 0
    sh_poisson = np.asarray([poisson_param.index(r[0]) for r in sh_rows], dtype=np.int32)
    return YieldStructure(
        present=present,
        histosys_mask=histosys_mask,
        staterror_param=se_param,
        staterror_bin=np.asarray([se_rows[p][0] for p in se_param], dtype=np.int32),
        staterror_samples=se_samples,
        staterror_unc=np.sqrt(np.asarray([se_rows[p][2] for p in se_param], dtype=float)),
        shapesys_param=np.asarray([r[0] for r in sh_rows], dtype=np.int32),
        shapesys_poisson=sh_poisson,
        shapesys_aux=np.asarray([poisson_aux[i] for i in sh_poisson], dtype=np.int32),
        shapesys_sample=np.asarray([r[1] for r in sh_rows], dtype=np.int32),
        shapesys_bin=np.asarray([r[2] for r in sh_rows], dtype=np.int32),
        shapesys_unc=np.asarray([r[3] for r in sh_rows], dtype=float),
    )


def nominal_matrix(model: Any, yields: Mapping[str, Any] | None):
    """(S, B) nominal with the given samples' rows replaced (traced); others keep their nominal."""
    nominal = model.arrays.nominal
    if not yields:
        return nominal
    structure = yield_structure(model)
    unknown = sorted(set(yields) - set(model.samples))
    if unknown:
        raise BayeshfError(f"{model.label}: no sample named {', '.join(map(repr, unknown))} "
                           f"(samples: {', '.join(model.samples)}).")
    rows = []
    for s, name in enumerate(model.samples):
        if name not in yields:
            rows.append(nominal[s])
            continue
        row = jnp.asarray(yields[name], dtype=jnp.float64)
        if row.shape != (model.nmain,):
            raise BayeshfError(f"{model.label}: yields of sample '{name}' have shape {tuple(row.shape)}; "
                               f"the model has {model.nmain} main bins.")
        rows.append(row * structure.present[s])
    return jnp.stack(rows)


def with_yields(model: Any, yields: Mapping[str, Any] | None, histosys: Mapping[str, Any] | None = None):
    """A model of the same structure whose nominal yields are ``yields`` (see the module docstring).

    ``histosys``: optionally new absolute templates too, ``{modifier: {sample:
    (hi_data, lo_data)}}`` with arrays over all main bins (traced like the
    yields; for templates that follow a selection, e.g. a shifted variable
    histogrammed with the same soft cut and bins).
    """
    from bayeshf.model import HistFactoryModel

    if not yields and not histosys:
        return model
    structure = yield_structure(model)
    a = model.arrays
    new = nominal_matrix(model, yields)
    change = new - a.nominal
    replace = {"nominal": new}
    K = structure.histosys_mask.shape[0]
    if K:
        shift = (structure.histosys_mask * change[None]).reshape(K, -1)
        table = a.histosys_table - jnp.concatenate([shift, -shift])
        if histosys:
            table = _replace_templates(model, structure, table, new, histosys)
        replace["histosys_table"] = table
    elif histosys:
        raise BayeshfError(f"{model.label}: the model has no histosys modifier to take templates.")
    if len(structure.staterror_param):
        total = jnp.sum(structure.staterror_samples * new[:, structure.staterror_bin].T, axis=1)
        old_weight = a.normal_weight[structure.staterror_param]
        weight = (total / structure.staterror_unc) ** 2
        replace["normal_weight"] = a.normal_weight.at[structure.staterror_param].set(weight)
        # normal_constant holds -sum(log sigma): swap the old widths' terms for the new ones
        replace["normal_constant"] = a.normal_constant + 0.5 * (jnp.sum(jnp.log(weight)) - jnp.sum(jnp.log(old_weight)))
    if len(structure.shapesys_param):
        tau = (new[structure.shapesys_sample, structure.shapesys_bin] / structure.shapesys_unc) ** 2
        replace["poisson_factor"] = a.poisson_factor.at[structure.shapesys_poisson].set(tau)
        replace["poisson_factor_full"] = a.poisson_factor_full.at[structure.shapesys_param].set(tau)
        replace["auxdata"] = a.auxdata.at[structure.shapesys_aux].set(tau)
    return HistFactoryModel(a._replace(**replace), model._static, model._meta)


def _replace_templates(model, structure, table, nominal, histosys):
    """The histosys table with the given (modifier, sample) rows from absolute templates."""
    K = structure.histosys_mask.shape[0]
    S, B = nominal.shape
    rows = {int(p): k for k, p in enumerate(model._meta["tables"].histosys_param)}
    table = table.reshape(2, K, S, B)
    for name, per_sample in histosys.items():
        pset = model.parameter(name)
        if pset is None or pset.modifier_type != "histosys":
            raise BayeshfError(f"{model.label}: no histosys modifier named '{name}'.")
        k = rows[pset.slice.start]
        for sample, (hi, lo) in per_sample.items():
            if sample not in model.samples:
                raise BayeshfError(f"{model.label}: no sample named '{sample}'.")
            s = model.samples.index(sample)
            mask = structure.histosys_mask[k, s]
            hi = jnp.asarray(hi, dtype=jnp.float64)
            lo = jnp.asarray(lo, dtype=jnp.float64)
            table = table.at[0, k, s].set(mask * (hi - nominal[s])).at[1, k, s].set(mask * (nominal[s] - lo))
    return table.reshape(2 * K, S * B)
