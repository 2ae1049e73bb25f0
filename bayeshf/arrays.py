"""Tables straight from dense arrays (for sizes where JSON is impractical): ``HistFactoryModel.from_arrays``.

The tables are the ones the JSON path builds, so the model is the same
:class:`~bayeshf.model.HistFactoryModel`: same parameter order (pyhf's rules),
same numbers. A test checks this on small generated models.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from bayeshf.build import TYPE_ORDER, Tables, _reduce, _requirement
from bayeshf.errors import BayeshfError


class ArrayTables(NamedTuple):
    """What :meth:`HistFactoryModel.from_tables` takes, from :func:`tables_from_arrays`."""

    tables: Tables
    poi_name: str | None
    codes: Mapping[str, str] | None
    label: str


def tables_from_arrays(
    source: Any = None,
    *,
    nominal=None,
    observed=None,
    sample_names: Sequence[str] | None = None,
    channels: Mapping[str, int] | str = "channel",
    histosys_up=None,
    histosys_down=None,
    histosys_names: Sequence[str] = (),
    normsys_hi=None,
    normsys_lo=None,
    normsys_names: Sequence[str] = (),
    normfactors: Mapping[str, Sequence[str]] | None = None,
    poi_name: str | None = None,
    codes: Mapping[str, str] | None = None,
    label: str = "<arrays>",
) -> ArrayTables:
    """The tables of a model given as arrays (``HistFactoryModel.from_arrays`` takes the same arguments).

    Shapes: S samples, B main bins (channels concatenated in sorted order),
    K histosys parameters, N normsys parameters.

    - ``nominal`` (S, B) yields, ``observed`` (B,) counts;
    - ``histosys_up`` / ``histosys_down`` (K, S, B): the ``hi_data`` /
      ``lo_data`` templates; a systematic acts on a sample where its templates
      differ from the nominal;
    - ``normsys_hi`` / ``normsys_lo`` (N, S): factors, 1/1 (or NaN) where a
      normsys does not act on a sample;
    - ``normfactors``: ``{name: [sample names]}``, free parameters in [0, 10].

    ``source`` may be an object with these attributes (e.g.
    :func:`bayeshf.generators.synthetic_arrays`'s result: ``systematic_names``
    are histosys names and ``poi_name`` a normfactor on the signal sample).
    """
    if source is not None:
        names = list(source.sample_names)
        signal = getattr(source, "signal_index", len(names) - 1)
        return tables_from_arrays(
            nominal=source.nominal,
            observed=source.observed,
            sample_names=names,
            channels=getattr(source, "channel", "channel"),
            histosys_up=source.histosys_up,
            histosys_down=source.histosys_down,
            histosys_names=source.systematic_names,
            normfactors={source.poi_name: [names[signal]]},
            poi_name=source.poi_name,
            codes=codes,
            label=label,
        )

    nominal = np.asarray(nominal, dtype=float)
    observed = np.asarray(observed, dtype=float)
    S, B = nominal.shape
    if isinstance(channels, str):
        channels = {channels: B}
    channel_names = list(channels)
    if channel_names != sorted(channel_names):
        raise BayeshfError(f"{label}: give channels in sorted order (pyhf's main-bin order).")
    if sum(channels.values()) != B or observed.shape != (B,):
        raise BayeshfError(f"{label}: nominal has {B} bins; channels and observed must match.")
    sample_names = list(sample_names)
    order = np.argsort(sample_names, kind="stable")  # pyhf sorts samples by name
    samples = [sample_names[i] for i in order]
    nominal = nominal[order]
    if not np.all(np.isfinite(nominal)) or np.any(nominal < 0):
        raise BayeshfError(f"{label}: nominal yields must be finite and non-negative.")

    up = np.zeros((0, S, B)) if histosys_up is None else np.asarray(histosys_up, dtype=float)[:, order]
    down = np.zeros((0, S, B)) if histosys_down is None else np.asarray(histosys_down, dtype=float)[:, order]
    hi = np.ones((0, S)) if normsys_hi is None else np.asarray(normsys_hi, dtype=float)[:, order]
    lo = np.ones((0, S)) if normsys_lo is None else np.asarray(normsys_lo, dtype=float)[:, order]
    histo_acts = np.any(up != nominal[None], axis=2) | np.any(down != nominal[None], axis=2)  # (K, S)
    norm_acts = ~((np.nan_to_num(hi, nan=1.0) == 1.0) & (np.nan_to_num(lo, nan=1.0) == 1.0))  # (N, S)
    normfactors = dict(normfactors or {})
    sample_row = {name: i for i, name in enumerate(samples)}

    # parameter sets in pyhf's order: by type, then first appearance over
    # (channel, sample, modifier name) with everything sorted
    first_seen: dict[str, dict[str, tuple]] = {t: {} for t in TYPE_ORDER}
    for c in range(len(channel_names)):
        for s in range(S):
            for k in np.flatnonzero(histo_acts[:, s]):
                first_seen["histosys"].setdefault(histosys_names[k], (c, s, histosys_names[k]))
            for k in np.flatnonzero(norm_acts[:, s]):
                first_seen["normsys"].setdefault(normsys_names[k], (c, s, normsys_names[k]))
            for name, targets in normfactors.items():
                if samples[s] in targets:
                    first_seen["normfactor"].setdefault(name, (c, s, name))
    merged: dict[str, list] = {}
    for kind in TYPE_ORDER:
        for name in sorted(first_seen[kind], key=first_seen[kind].get):
            if kind == "normfactor":
                req = _requirement(kind, 1, True, [1.0], [(0.0, 10.0)], [False])
            else:
                req = _requirement(kind, 1, True, [0.0], [(-5.0, 5.0)], [False], "normal", [0.0])
            merged.setdefault(name, []).append(req)
    parameters, start = [], 0
    for name, reqs in merged.items():
        parameters.append(_reduce(name, reqs, {}, start, poi_name, label, "arrays"))
        start += parameters[-1].size
    index = {p.name: p.slice.start for p in parameters}
    if poi_name is not None and poi_name not in index:
        raise BayeshfError(f"{label}: unknown POI '{poi_name}'.")

    factor_param, factor_sample, factor_bin = [], [], []
    for name, targets in normfactors.items():
        for target in targets:
            factor_param.append(np.full(B, index[name]))
            factor_sample.append(np.full(B, sample_row[target]))
            factor_bin.append(np.arange(B))
    k_idx, s_idx = np.nonzero(norm_acts)
    n_channels = len(channel_names)
    histo_rows = np.asarray([index[name] for name in histosys_names], dtype=int)
    active = np.any(histo_acts, axis=1)
    up -= nominal[None]  # in place: up/down are our copies (sample-reordered)
    down *= -1.0
    down += nominal[None]
    if not active.all():
        up, down = up[active], down[active]
    tables = Tables(
        channels=channel_names,
        channel_nbins=dict(channels),
        samples=samples,
        nominal=nominal,
        observed=observed,
        parameters=tuple(parameters),
        factor_param=np.concatenate(factor_param).astype(int) if factor_param else np.zeros(0, int),
        factor_sample=np.concatenate(factor_sample).astype(int) if factor_sample else np.zeros(0, int),
        factor_bin=np.concatenate(factor_bin).astype(int) if factor_bin else np.zeros(0, int),
        normsys_param=np.repeat([index[normsys_names[k]] for k in k_idx], n_channels).astype(int),
        normsys_sample=np.repeat(s_idx, n_channels).astype(int),
        normsys_channel=np.tile(np.arange(n_channels), len(k_idx)).astype(int),
        normsys_hi=np.repeat(hi[k_idx, s_idx], n_channels),
        normsys_lo=np.repeat(lo[k_idx, s_idx], n_channels),
        histosys_param=histo_rows[active],
        histosys_up=up,
        histosys_down=down,
    )
    return ArrayTables(tables, poi_name, codes, label)
