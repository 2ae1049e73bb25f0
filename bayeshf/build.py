"""Host-side compilation of a HistFactory spec into dense tables.

Walks a validated spec once, in pyhf's order (channels and samples sorted by
name; parameter sets grouped by modifier type in the order histosys, lumi,
normfactor, normsys, shapefactor, shapesys, staterror and, within a type, in
order of first appearance), and produces a :class:`Tables` of numpy arrays that
:mod:`bayeshf.model` turns into a JAX pytree. Array-built models
(:meth:`HistFactoryModel.from_arrays`) produce the same :class:`Tables`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.params import ParameterSet

TYPE_ORDER = ("histosys", "lumi", "normfactor", "normsys", "shapefactor", "shapesys", "staterror")


@dataclasses.dataclass
class Tables:
    """Everything a compiled model needs, as numpy arrays (host side)."""

    channels: list[str]
    channel_nbins: dict[str, int]
    samples: list[str]
    nominal: np.ndarray  # (S, B)
    observed: np.ndarray  # (B,)
    parameters: tuple[ParameterSet, ...]
    # simple multiplicative factors: theta[index] multiplies nominal[s, b]
    factor_param: np.ndarray  # (F,) int
    factor_sample: np.ndarray  # (F,) int
    factor_bin: np.ndarray  # (F,) int
    # normsys entries: one per (parameter, sample, channel)
    normsys_param: np.ndarray  # (E,) int
    normsys_sample: np.ndarray  # (E,) int
    normsys_channel: np.ndarray  # (E,) int
    normsys_hi: np.ndarray  # (E,)
    normsys_lo: np.ndarray  # (E,)
    # histosys: one row per parameter; shifts relative to the nominal
    histosys_param: np.ndarray  # (K,) int
    histosys_up: np.ndarray  # (K, S, B)  hi - nominal
    histosys_down: np.ndarray  # (K, S, B) nominal - lo


def _requirement(kind, n, scalar, inits, bounds, fixed, constraint=None, auxdata=None, sigmas=None, factors=None):
    return {
        "modifier_type": kind,
        "size": n,
        "is_scalar": scalar,
        "inits": tuple(inits),
        "bounds": tuple(tuple(b) for b in bounds),
        "fixed": tuple(fixed),
        "constraint": constraint,
        "auxdata": None if auxdata is None else tuple(auxdata),
        "sigmas": None if sigmas is None else tuple(sigmas),
        "factors": None if factors is None else tuple(factors),
    }


def tables_from_spec(spec: Mapping[str, Any], measurement: Mapping[str, Any], label: str, poi_name: str | None):
    """Compile a validated (and patched) spec; returns ``(tables, poi_name)``."""
    channels = sorted({c["name"] for c in spec["channels"]})
    if len(channels) != len(spec["channels"]):
        raise BayeshfError(f"{label}: two channels share a name.")
    by_channel = {c["name"]: c for c in spec["channels"]}
    nbins = {name: len(by_channel[name]["samples"][0]["data"]) for name in channels}
    offsets = dict(zip(channels, np.cumsum([0] + [nbins[c] for c in channels])[:-1].tolist()))
    n_bins = sum(nbins.values())
    samples = sorted({s["name"] for c in spec["channels"] for s in c["samples"]})
    sample_index = {name: i for i, name in enumerate(samples)}
    modifiers = sorted({(m["name"], m["type"]) for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]})

    observations = {o["name"]: o["data"] for o in spec["observations"]}
    observed = np.zeros(n_bins)
    nominal = np.zeros((len(samples), n_bins))
    cells = {}  # (channel, sample) -> (sample spec, {type/name: modifier})
    seen_unshared = set()
    for channel in channels:
        if channel not in observations:
            raise BayeshfError(f"{label}: channel '{channel}' has no observations.")
        if len(observations[channel]) != nbins[channel]:
            raise BayeshfError(
                f"{label}: channel '{channel}' has {nbins[channel]} bins but {len(observations[channel])} observed counts."
            )
        observed[offsets[channel] : offsets[channel] + nbins[channel]] = observations[channel]
        for sample in by_channel[channel]["samples"]:
            if len(sample["data"]) != nbins[channel]:
                raise BayeshfError(
                    f"{label}: sample '{sample['name']}' in channel '{channel}' has {len(sample['data'])} bins, "
                    f"expected {nbins[channel]}."
                )
            mods = {}
            for m in sample["modifiers"]:
                key = f"{m['type']}/{m['name']}"
                if m["type"] == "shapesys" and (key in seen_unshared or key in mods):
                    raise BayeshfError(f"{label}: shapesys '{m['name']}' is used twice; shapesys names must be unique.")
                mods[key] = m
                _check_modifier_shape(m, nbins[channel], sample["name"], channel, label)
            seen_unshared.update(k for k in mods if k.startswith("shapesys/"))
            if (channel, sample["name"]) in cells:
                raise BayeshfError(f"{label}: channel '{channel}' has two samples named '{sample['name']}'.")
            cells[(channel, sample["name"])] = (sample, mods)
            row = sample_index[sample["name"]]
            nominal[row, offsets[channel] : offsets[channel] + nbins[channel]] = sample["data"]

    # -- parameter-set requirements, in pyhf's order -------------------------------
    required: dict[str, dict[str, list]] = {t: {} for t in TYPE_ORDER}
    staterror_cells: dict[str, list[tuple[str, str]]] = {}
    for channel in channels:
        for sample in samples:
            if (channel, sample) not in cells:
                continue
            sample_spec, mods = cells[(channel, sample)]
            for name, kind in modifiers:
                mod = mods.get(f"{kind}/{name}")
                if mod is None:
                    continue
                n = nbins[channel]
                if kind in ("normsys", "histosys"):
                    req = _requirement(kind, 1, True, [0.0], [(-5.0, 5.0)], [False], "normal", [0.0])
                elif kind == "normfactor":
                    req = _requirement(kind, 1, True, [1.0], [(0.0, 10.0)], [False])
                elif kind == "shapefactor":
                    req = _requirement(kind, n, False, [1.0] * n, [(0.0, 10.0)] * n, [False] * n)
                elif kind == "lumi":
                    req = _requirement(kind, 1, True, [None], [(None, None)], [False], "normal", [None], [None])
                elif kind == "shapesys":
                    # Python floats, as pyhf computes them, so auxdata agree to the last bit
                    pairs = [(float(b), float(u)) for b, u in zip(sample_spec["data"], mod["data"])]
                    valid = [b > 0 and u > 0 for b, u in pairs]
                    tau = [b**2 / u**2 if ok else 1.0 for (b, u), ok in zip(pairs, valid)]
                    req = _requirement(kind, n, False, [1.0] * n, [(1e-10, 10.0)] * n, [not ok for ok in valid],
                                       "poisson", tau, factors=tau)
                else:  # staterror: requirements need all samples, computed below
                    staterror_cells.setdefault(name, []).append((channel, sample))
                    continue
                required[kind].setdefault(name, []).append(req)
    for name in sorted(staterror_cells):
        required["staterror"][name] = [_staterror_requirement(name, staterror_cells[name], cells, nbins, offsets, n_bins, label)]

    merged: dict[str, list] = {}
    for kind in TYPE_ORDER:
        for name, reqs in required[kind].items():
            merged.setdefault(name, []).extend(reqs)

    user = {}
    for entry in measurement["config"].get("parameters", []):
        if entry["name"] in user:
            raise BayeshfError(f"{label}: measurement '{measurement['name']}' configures parameter '{entry['name']}' twice.")
        user[entry["name"]] = entry
    explicit_poi = poi_name
    poi_name = poi_name if poi_name is not None else measurement["config"].get("poi")

    parameters = []
    start = 0
    for name, reqs in merged.items():
        pset = _reduce(name, reqs, user.get(name, {}), start, poi_name, label, measurement["name"])
        parameters.append(pset)
        start += pset.size
    if not parameters:
        raise BayeshfError(f"{label}: the model has no parameters.")
    by_name = {p.name: p for p in parameters}
    if explicit_poi is not None and explicit_poi not in by_name:
        raise BayeshfError(f"{label}: unknown POI '{explicit_poi}' (not a parameter of the model).")
    if poi_name is not None and poi_name not in by_name:
        # e.g. a background-only workspace whose signal comes with a patch: no POI
        warnings.warn(
            f"{label}: the POI '{poi_name}' of measurement '{measurement['name']}' is not in the model "
            "(background-only workspace? apply a signal patch); continuing without a POI.",
            stacklevel=3,
        )
        poi_name = None
    if poi_name is not None and by_name[poi_name].size != 1:
        raise BayeshfError(f"{label}: the POI '{poi_name}' has {by_name[poi_name].size} components; it must be a scalar.")

    # -- fill the tables ------------------------------------------------------------
    factor_param, factor_sample, factor_bin = [], [], []
    ns = {k: [] for k in ("param", "sample", "channel", "hi", "lo")}
    histo_rows: dict[int, int] = {}
    histo_up, histo_down = [], []
    for (channel, sample), (sample_spec, mods) in cells.items():
        s = sample_index[sample]
        lo_bin = offsets[channel]
        n = nbins[channel]
        bins = np.arange(lo_bin, lo_bin + n)
        for key, mod in mods.items():
            kind = mod["type"]
            pset = by_name[mod["name"]]
            first = pset.slice.start
            if kind in ("normfactor", "lumi"):
                targets = bins
                params = np.full(n, first)
            elif kind in ("shapefactor", "shapesys"):
                targets = bins
                params = first + np.arange(n)
            elif kind == "staterror":
                targets = bins
                params = first + pset_bin_position(pset, lo_bin, n)
            elif kind == "normsys":
                ns["param"].append(first)
                ns["sample"].append(s)
                ns["channel"].append(channels.index(channel))
                ns["hi"].append(float(mod["data"]["hi"]))
                ns["lo"].append(float(mod["data"]["lo"]))
                continue
            else:  # histosys
                if first not in histo_rows:
                    histo_rows[first] = len(histo_up)
                    histo_up.append(np.zeros((len(samples), n_bins)))
                    histo_down.append(np.zeros((len(samples), n_bins)))
                row = histo_rows[first]
                nom = np.asarray(sample_spec["data"], dtype=float)
                histo_up[row][s, lo_bin : lo_bin + n] = np.asarray(mod["data"]["hi_data"], dtype=float) - nom
                histo_down[row][s, lo_bin : lo_bin + n] = nom - np.asarray(mod["data"]["lo_data"], dtype=float)
                continue
            factor_param.append(params)
            factor_sample.append(np.full(n, s))
            factor_bin.append(targets)

    def cat(parts, dtype=int):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    tables = Tables(
        channels=channels,
        channel_nbins=nbins,
        samples=samples,
        nominal=nominal,
        observed=observed,
        parameters=tuple(parameters),
        factor_param=cat(factor_param),
        factor_sample=cat(factor_sample),
        factor_bin=cat(factor_bin),
        normsys_param=np.asarray(ns["param"], dtype=int),
        normsys_sample=np.asarray(ns["sample"], dtype=int),
        normsys_channel=np.asarray(ns["channel"], dtype=int),
        normsys_hi=np.asarray(ns["hi"], dtype=float),
        normsys_lo=np.asarray(ns["lo"], dtype=float),
        histosys_param=np.asarray(list(histo_rows), dtype=int),
        histosys_up=np.asarray(histo_up).reshape(-1, len(samples), n_bins),
        histosys_down=np.asarray(histo_down).reshape(-1, len(samples), n_bins),
    )
    return tables, poi_name


def pset_bin_position(pset: ParameterSet, lo_bin: int, n: int) -> np.ndarray:
    """Positions inside a staterror set of the global bins lo_bin..lo_bin+n."""
    positions = {b: i for i, b in enumerate(pset.bins)}
    return np.asarray([positions[b] for b in range(lo_bin, lo_bin + n)])


def _staterror_requirement(name, cells_with, cells, nbins, offsets, n_bins, label):
    """pyhf's pooled staterror: sigma_b = sqrt(sum_s unc_sb^2) / sum_s nom_sb over samples using it."""
    samples_with = sorted({s for _, s in cells_with})
    channels_with = sorted({c for c, _ in cells_with})
    # every sample using it must use it in the same channels (pyhf asserts this)
    for sample in samples_with:
        if sorted(c for c, s in cells_with if s == sample) != channels_with:
            raise BayeshfError(f"{label}: staterror '{name}' is applied to different channels for different samples.")
    nom_total = np.zeros(n_bins)
    for channel in nbins:
        for sample in samples_with:
            if (channel, sample) in cells:
                nom_total[offsets[channel] : offsets[channel] + nbins[channel]] += cells[(channel, sample)][0]["data"]
    rel_sq = np.zeros(n_bins)
    for channel, sample in cells_with:
        mod = cells[(channel, sample)][1][f"staterror/{name}"]
        sl = slice(offsets[channel], offsets[channel] + nbins[channel])
        unc = np.asarray(mod["data"], dtype=float)
        total = nom_total[sl]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_sq[sl] += np.where(total > 0, (unc / np.where(total > 0, total, 1.0)) ** 2, 0.0)
    bins = np.concatenate([np.arange(offsets[c], offsets[c] + nbins[c]) for c in channels_with])
    sigmas = np.sqrt(rel_sq[bins])
    fixed = sigmas == 0
    sigmas = np.where(fixed, 1.0, sigmas)
    n = len(bins)
    req = _requirement("staterror", n, False, [1.0] * n, [(1e-10, 10.0)] * n, fixed.tolist(), "normal", [1.0] * n, sigmas)
    req["bins"] = tuple(bins.tolist())
    return req


def _check_modifier_shape(mod, n, sample, channel, label):
    kind = mod["type"]
    data = mod.get("data")
    where = f"modifier '{mod['name']}' ({kind}) of sample '{sample}' in channel '{channel}'"
    if kind in ("shapesys", "staterror") and len(data) != n:
        raise BayeshfError(f"{label}: {where} has {len(data)} values for {n} bins.")
    if kind == "histosys":
        for key in ("hi_data", "lo_data"):
            if len(data[key]) != n:
                raise BayeshfError(f"{label}: {where} has {len(data[key])} {key} values for {n} bins.")


def _reduce(name, reqs, config, start, poi_name, label, measurement):
    """Merge the requirements of one parameter set and apply the measurement's overrides."""
    first = reqs[0]
    for other in reqs[1:]:
        for key in ("size", "is_scalar", "inits", "bounds", "constraint", "auxdata", "sigmas", "factors", "fixed"):
            if other[key] != first[key]:
                kinds = sorted({r["modifier_type"] for r in reqs})
                raise BayeshfError(
                    f"{label}: parameter '{name}' is shared by modifiers ({', '.join(kinds)}) that disagree on its "
                    f"{key}; use distinct modifier names."
                )
    fields = dict(first)
    n = fields["size"]
    where = f"{label}: measurement '{measurement}' parameter '{name}'"
    for key in ("inits", "bounds", "auxdata", "sigmas", "factors", "fixed"):
        if key not in config:
            continue
        value = config[key]
        if key == "fixed":
            value = (bool(value),) * n if isinstance(value, bool) else tuple(bool(v) for v in value)
        elif fields.get(key) is None and key != "bounds" and key != "inits" and first["modifier_type"] != "lumi":
            raise BayeshfError(f"{where}: a {first['modifier_type']} parameter has no {key}.")
        else:
            value = tuple(tuple(v) for v in value) if key == "bounds" else tuple(float(v) for v in value)
        if len(value) != n:
            raise BayeshfError(f"{where}: {len(value)} values for {key}, expected {n}.")
        fields[key] = value
    if fields["constraint"] == "normal" and fields["sigmas"] is None:
        fields["sigmas"] = (1.0,) * n
    if first["modifier_type"] == "lumi":
        if fields["auxdata"][0] is None or fields["sigmas"][0] is None:
            raise BayeshfError(f"{where}: a lumi parameter needs auxdata and sigmas in the measurement config.")
        if fields["inits"][0] is None:
            fields["inits"] = fields["auxdata"]
        if fields["bounds"][0] == (None, None):
            fields["bounds"] = ((0.0, 10.0 * fields["auxdata"][0]),)
    for i, ((lo, hi), init) in enumerate(zip(fields["bounds"], fields["inits"])):
        label_i = name if n == 1 else f"{name}[{i}]"
        if not lo <= hi:
            raise BayeshfError(f"{label}: parameter '{label_i}' has impossible bounds [{lo}, {hi}].")
        if not lo <= init <= hi:
            raise BayeshfError(f"{label}: parameter '{label_i}' starts at {init}, outside its bounds [{lo}, {hi}].")
    # a parameter whose bounds meet can take one value only: held fixed there, as a bounded minimiser would
    fields["fixed"] = tuple(bool(f) or lo == hi for f, (lo, hi) in zip(fields["fixed"], fields["bounds"]))
    if fields["sigmas"] is not None and any(not s > 0 for s in fields["sigmas"]):
        raise BayeshfError(f"{where}: constraint widths (sigmas) must be positive.")
    return ParameterSet(
        name=name,
        modifier_type=first["modifier_type"],
        modifier_types=tuple(sorted({r["modifier_type"] for r in reqs})),
        slice=slice(start, start + n),
        is_scalar=fields["is_scalar"],
        inits=tuple(float(v) for v in fields["inits"]),
        bounds=tuple((float(a), float(b)) for a, b in fields["bounds"]),
        fixed=tuple(fields["fixed"]),
        constraint=fields["constraint"],
        auxdata=None if fields["auxdata"] is None else tuple(float(v) for v in fields["auxdata"]),
        sigmas=None if fields["sigmas"] is None else tuple(float(v) for v in fields["sigmas"]),
        factors=None if fields["factors"] is None else tuple(float(v) for v in fields["factors"]),
        is_poi=name == poi_name,
        bins=first.get("bins"),
    )
