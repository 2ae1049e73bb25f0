"""``arviz.InferenceData`` from groups of NumPy arrays (:mod:`bayeshf.idata` makes them).

Imports neither JAX nor bayeshf's models: the writer process of ``bayeshf
sample`` (:mod:`bayeshf.cli._writer`) assembles and writes the draws with it
while the command's own process samples.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np


class Group(NamedTuple):
    """One InferenceData group as NumPy arrays: variables, their dimensions after (chain, draw), coordinates."""

    variables: dict
    dims: dict
    coords: dict
    chain_draw: bool = True


def _dataset(group: Group):
    import xarray as xr

    data_vars = {}
    for name, values in group.variables.items():
        lead = ["chain", "draw"] if group.chain_draw else []
        data_vars[name] = (lead + group.dims[name], np.asarray(values))
    used = {d for name in group.variables for d in group.dims[name]}
    return xr.Dataset(data_vars, coords={k: v for k, v in group.coords.items() if k in used})


def assemble(groups: Mapping[str, Group], attrs: Mapping[str, Any]):
    """``arviz.InferenceData`` of ``groups`` (:func:`bayeshf.idata.parameter_draw_groups`), ``attrs`` on every group."""
    import arviz as az

    idata = az.InferenceData(**{name: _dataset(group) for name, group in groups.items()})
    for name in idata.groups():
        getattr(idata, name).attrs.update({k: _attr(v) for k, v in attrs.items()})
    return idata


def _attr(value):
    """netCDF-friendly attribute values."""
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] if any(isinstance(v, str) for v in value) else list(value)
    return value
