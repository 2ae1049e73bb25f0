"""bayeshf: Bayesian and frequentist inference on HistFactory models with JAX."""

from __future__ import annotations

__version__ = "0.1.0"

import jax as _jax

# float64 by default: parity with pyhf needs it (set before any array is made).
_jax.config.update("jax_enable_x64", True)

# one CPU device per core, so chains run in parallel (bayeshf.devices; BAYESHF_CPU_DEVICES=1 to opt out)
from bayeshf import devices as _devices  # noqa: E402

_devices.configure()

from bayeshf.errors import BayeshfError  # noqa: E402
from bayeshf.model import HistFactoryModel, ParameterSet  # noqa: E402
from bayeshf.workspace import load  # noqa: E402
from bayeshf.sampling import sample  # noqa: E402
from bayeshf.fit import fit  # noqa: E402

__all__ = ["BayeshfError", "HistFactoryModel", "ParameterSet", "load", "sample", "fit", "__version__"]
