"""The static parameter table of a compiled model."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ParameterSet:
    """One named parameter set (a modifier's parameters), in pyhf's conventions.

    ``constraint`` is ``None`` (free: normfactor, shapefactor), ``"normal"``
    (aux ~ Normal(theta, sigma): normsys, histosys, lumi, staterror) or
    ``"poisson"`` (aux ~ Poisson(factor * theta): shapesys, with
    ``auxdata == factors == (nominal / uncertainty)^2`` per bin).
    """

    name: str
    modifier_type: str
    modifier_types: tuple[str, ...]
    slice: slice
    is_scalar: bool
    inits: tuple[float, ...]
    bounds: tuple[tuple[float, float], ...]
    fixed: tuple[bool, ...]
    constraint: str | None = None
    auxdata: tuple[float, ...] | None = None
    sigmas: tuple[float, ...] | None = None
    factors: tuple[float, ...] | None = None
    is_poi: bool = False
    bins: tuple[int, ...] | None = None  # staterror: global main bins the elements act on

    @property
    def size(self) -> int:
        return self.slice.stop - self.slice.start

    @property
    def par_names(self) -> list[str]:
        """Element names as pyhf prints them (``name`` or ``name[i]``)."""
        if self.is_scalar:
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.size)]
