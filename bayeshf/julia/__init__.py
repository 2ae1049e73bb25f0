"""Bridge to Julia: BAT.jl samples bayeshf's posterior with the LiteHF.jl or the JAX likelihood.

juliacall is imported only when a Julia executable exists (see
:mod:`bayeshf.julia.environment`); everything else here runs without Julia.

>>> ok, reason = available()          # doctest: +SKIP
>>> idata = sample("ws.json", likelihood="litehf", sampler="hmc")   # doctest: +SKIP
"""

from __future__ import annotations

from bayeshf.julia.callback import LogDensityCallback, callback_adapter, pyhf_callback_adapter
from bayeshf.julia.environment import JULIA_NOT_FOUND, available, find_julia, require_julia
from bayeshf.julia.expressions import julia_expression, prior_expressions, read_expression
from bayeshf.julia.litehf import POSTERIOR_TERMS, litehf_names
from bayeshf.julia.results import BATSamples, expand_chains, to_inference_data
from bayeshf.julia.sampling import sample

__all__ = [
    "BATSamples", "JULIA_NOT_FOUND", "LogDensityCallback", "POSTERIOR_TERMS", "available", "callback_adapter",
    "expand_chains", "find_julia", "julia_expression", "litehf_names", "prior_expressions", "pyhf_callback_adapter",
    "read_expression", "require_julia", "sample", "to_inference_data",
]
