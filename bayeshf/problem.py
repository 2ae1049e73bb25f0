"""One frozen description of a fit: model, start values, fixed parameters, bounds and data.

Every frequentist routine (fit, test statistics, limits, scans, impacts,
MINOS) resolves its ``init=/fixed=/bounds=/data=`` arguments once into a
:class:`FitProblem` and derives the conditional problems it needs with
:meth:`FitProblem.fixing`, so name lookup and validation live here only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError

__all__ = ["FitProblem", "parameter_index", "default_data"]


def parameter_index(model: Any, key: str | int) -> int:
    """Index of a parameter given by name (``par_names``) or by index."""
    if isinstance(key, (int, np.integer)):
        if not 0 <= int(key) < model.npars:
            raise BayeshfError(f"parameter index {key} is outside 0..{model.npars - 1}.")
        return int(key)
    try:
        return list(model.par_names).index(key)
    except ValueError:
        raise BayeshfError(f"the model has no parameter named {key!r}.") from None


def default_data(model: Any) -> np.ndarray:
    """Main observations followed by the auxiliary data, as pyhf's ``workspace.data``."""
    return np.concatenate([np.asarray(model.observed, float), np.asarray(model.auxdata, float)])


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class FitProblem:
    """A resolved fit: ``init`` (start), ``fixed`` (mask) with ``values``, ``bounds`` (npars, 2), ``data``.

    ``values`` holds the fixed values where ``fixed`` is set (the start values
    elsewhere). The arrays are read-only; derive new problems with
    :meth:`fixing`, :meth:`with_data` and :meth:`starting_at`.
    """

    model: Any
    init: np.ndarray
    fixed: np.ndarray
    values: np.ndarray
    bounds: np.ndarray
    data: np.ndarray

    @classmethod
    def resolve(
        cls,
        model: Any,
        *,
        init: Sequence[float] | Mapping[str, float] | None = None,
        fixed: Mapping[str, float | None] | Sequence[str] | np.ndarray | None = None,
        bounds: np.ndarray | Mapping[str, Sequence[float]] | None = None,
        data: Sequence[float] | None = None,
    ) -> "FitProblem":
        """Resolve user arguments against the model's defaults.

        ``init``: array, or name/index -> value updating the model's inits.
        ``fixed``: name/index -> value (``None`` keeps the init), a list of
        names, or a boolean mask; added to the model's own fixed parameters.
        ``bounds``: (npars, 2) array or name -> (low, high). ``data``: main +
        aux data (default: the model's observed data and auxdata).
        """
        x0 = _vector(model, init, np.asarray(model.init, float), "init")
        mask, values = _resolve_fixed(model, fixed, x0)
        box = _resolve_bounds(model, bounds)
        if data is None:
            data_arr = default_data(model)
        else:
            data_arr = np.asarray(data, dtype=float)
            expected = int(model.nmain) + int(model.nauxdata)
            if data_arr.shape != (expected,):
                raise BayeshfError(f"data has shape {data_arr.shape}, the model needs ({expected},) "
                                   "(main bins followed by the auxiliary data).")
        return cls(model, _frozen(x0), _frozen(mask), _frozen(values), _frozen(box), _frozen(data_arr))

    # -- derived problems ------------------------------------------------------------------
    def index(self, key: str | int) -> int:
        return parameter_index(self.model, key)

    def fixing(self, key: str | int, value: float) -> "FitProblem":
        """The same problem with one more parameter fixed at ``value`` (and started there)."""
        i = self.index(key)
        mask, values, init = self.fixed.copy(), self.values.copy(), self.init.copy()
        mask[i], values[i], init[i] = True, float(value), float(value)
        return dataclasses.replace(self, init=_frozen(init), fixed=_frozen(mask), values=_frozen(values))

    def with_data(self, data: Sequence[float]) -> "FitProblem":
        data_arr = np.asarray(data, dtype=float)
        if data_arr.shape != self.data.shape:
            raise BayeshfError(f"data has shape {data_arr.shape}, the model needs {self.data.shape}.")
        return dataclasses.replace(self, data=_frozen(data_arr))

    def starting_at(self, start: np.ndarray) -> "FitProblem":
        """The same problem started at ``start`` (fixed parameters keep their values)."""
        return dataclasses.replace(self, init=_frozen(self.start(start)))

    def start(self, start: np.ndarray | None = None) -> np.ndarray:
        """A start vector: ``start`` (default ``init``) with the fixed values and inside the bounds."""
        x = self.init if start is None else np.asarray(start, dtype=float)
        return np.where(self.fixed, self.values, np.clip(x, self.bounds[:, 0], self.bounds[:, 1]))

    @property
    def poi_index(self) -> int | None:
        return getattr(self.model, "poi_index", None)

    @property
    def free(self) -> np.ndarray:
        return ~self.fixed


# ---------------------------------------------------------------------------
# argument resolution


def _vector(model: Any, values: Any, default: np.ndarray, what: str) -> np.ndarray:
    out = np.array(default, dtype=float, copy=True)
    if values is None:
        return out
    if isinstance(values, Mapping):
        for key, value in values.items():
            out[parameter_index(model, key)] = float(value)
        return out
    arr = np.asarray(values, dtype=float)
    if arr.shape != out.shape:
        raise BayeshfError(f"{what} has shape {arr.shape}, the model needs {out.shape}.")
    return arr.copy()


def _resolve_fixed(model: Any, fixed: Any, init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.array(model.fixed, dtype=bool, copy=True)
    values = init.copy()
    if fixed is None:
        return mask, values
    if isinstance(fixed, Mapping):
        for key, value in fixed.items():
            i = parameter_index(model, key)
            mask[i] = True
            if value is not None:
                values[i] = float(value)
        return mask, values
    arr = np.asarray(fixed)
    if arr.dtype == bool and arr.shape == mask.shape:
        return arr.copy(), values
    for key in fixed:  # a sequence of names or indices fixed at their init
        mask[parameter_index(model, key)] = True
    return mask, values


def _resolve_bounds(model: Any, bounds: Any) -> np.ndarray:
    out = np.array(model.bounds, dtype=float, copy=True)
    if bounds is None:
        return out
    if isinstance(bounds, Mapping):
        for key, pair in bounds.items():
            out[parameter_index(model, key)] = [float(pair[0]), float(pair[1])]
    else:
        arr = np.asarray(bounds, dtype=float)
        if arr.shape != out.shape:
            raise BayeshfError(f"bounds have shape {arr.shape}, the model needs {out.shape}.")
        out = arr.copy()
    if np.any(out[:, 0] >= out[:, 1]):
        bad = [model.par_names[i] for i in np.flatnonzero(out[:, 0] >= out[:, 1])]
        raise BayeshfError(f"the lower bound is not below the upper bound for {bad[:5]}.")
    return out
