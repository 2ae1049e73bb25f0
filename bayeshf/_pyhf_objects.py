"""pyhf's in-memory objects as :func:`bayeshf.load` sources: a ``pyhf.Workspace`` is already a
workspace dict; a ``pyhf.Model`` (channels and parameter settings, no observations) becomes one
with the data given alongside, as pyhf's own functions take ``(data, model)``."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError


def is_pyhf_model(source: Any) -> bool:
    return type(source).__name__ == "Model" and type(source).__module__.startswith("pyhf") and hasattr(source, "config")


def spec_of_pyhf_model(model: Any, data: Sequence[float] | None,
                       modifier_settings: Mapping[str, Any] | None) -> tuple[dict, Mapping[str, Any] | None]:
    """A workspace dict (channels, the parameter settings as a measurement, observations from ``data``)
    and the model's interpolation codes unless ``modifier_settings`` overrides them."""
    config = model.config
    if data is None:
        raise BayeshfError("a pyhf.Model carries no observations: pass data= (main or main+aux data, as pyhf's "
                           "workspace.data(model)) or load the pyhf.Workspace itself.")
    data = np.asarray(data, dtype=float).ravel()
    if data.size not in (config.nmaindata, config.nmaindata + config.nauxdata):
        raise BayeshfError(f"data has {data.size} values; the pyhf.Model needs {config.nmaindata} (main) or "
                           f"{config.nmaindata + config.nauxdata} (main+aux).")
    if data.size > config.nmaindata and not np.allclose(data[config.nmaindata:], config.auxdata):
        raise BayeshfError("the auxiliary part of data differs from the pyhf.Model's auxdata: load with the main "
                           "data and set the auxiliary data with model.with_data(observed, auxdata).")
    lumi = {name for name, kind in config.modifiers if kind == "lumi"}
    parameters = []
    for name, entry in config.par_map.items():
        paramset = entry["paramset"]
        setting = {"name": name, "inits": [float(v) for v in paramset.suggested_init],
                   "bounds": [[float(a), float(b)] for a, b in paramset.suggested_bounds],
                   "fixed": bool(all(paramset.suggested_fixed))}
        if name in lumi:
            setting.update(auxdata=[float(v) for v in paramset.auxdata], sigmas=[float(v) for v in paramset.sigmas])
        parameters.append(setting)
    measurement = {"name": "pyhf_model", "config": {"poi": config.poi_name or "", "parameters": parameters}}
    observations = [{"name": channel, "data": data[config.channel_slices[channel]].tolist()}
                    for channel in config.channels]
    spec = {"channels": model.spec["channels"], "measurements": [measurement], "observations": observations,
            "version": "1.0.0"}
    settings = modifier_settings if modifier_settings is not None else getattr(config, "modifier_settings", None)
    return spec, settings
