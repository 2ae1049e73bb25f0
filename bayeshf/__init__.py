"""bayeshf: Bayesian and frequentist inference on HistFactory models with JAX."""

from __future__ import annotations

__version__ = "0.1.0"

# float64 by default: parity with pyhf needs it (set before any array is made); the other JAX
# settings (devices, dispatch, compilation cache) are bayeshf.runtime.configure(), which the CLI calls
from bayeshf import runtime  # noqa: E402

runtime.enable_float64()

from bayeshf.errors import BayeshfError  # noqa: E402
from bayeshf.model import HistFactoryModel, ParameterSet  # noqa: E402
from bayeshf.workspace import load  # noqa: E402
from bayeshf.sampling import sample  # noqa: E402
from bayeshf.fit import fit  # noqa: E402

__all__ = ["BayeshfError", "HistFactoryModel", "ParameterSet", "load", "sample", "fit", "__version__"]
