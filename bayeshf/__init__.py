"""bayeshf: Bayesian and frequentist inference on HistFactory models with JAX."""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# float64 by default: parity with pyhf needs it (on as soon as JAX is imported); the other JAX settings
# (devices, dispatch, compilation cache) are bayeshf.runtime.configure(), which the CLI calls
from bayeshf import runtime  # noqa: E402

runtime.enable_float64()

__all__ = ["BayeshfError", "HistFactoryModel", "ParameterSet", "load", "sample", "fit", "__version__"]

#: the public names, imported on first use (the command line answers --help without importing JAX)
_PUBLIC = {"BayeshfError": "bayeshf.errors", "HistFactoryModel": "bayeshf.model", "ParameterSet": "bayeshf.model",
           "load": "bayeshf.workspace", "sample": "bayeshf.sampling"}


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    try:  # a submodule used as an attribute after ``import bayeshf`` alone (bayeshf.sampling...)
        return importlib.import_module(f"bayeshf.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"bayeshf.{name}":
            raise
    raise AttributeError(f"module 'bayeshf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``bayeshf.fit`` is the function, as before, even after the submodule ``bayeshf.fit`` is imported."""

    @property
    def fit(self):
        from bayeshf.fit import fit

        return fit

    @fit.setter
    def fit(self, value):  # the import system sets the submodule here; the name stays the function
        pass


sys.modules[__name__].__class__ = _Package
