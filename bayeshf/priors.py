"""Priors for every model parameter: derived from the constraints, overridable from a file.

The default is the *flat reference* convention (docs/statistics.md): each
constraint term of the HistFactory likelihood is read as the posterior of its
parameter under a flat prior, so that inside the bounds

    log prior(theta) + log L_main(theta) = pyhf logpdf(theta) + constant

and the MAP equals the maximum-likelihood estimate.

================  ==========================================  =============
parameter set     default prior                               family
================  ==========================================  =============
normsys/histosys  Normal(mu=auxdata (0), sigma=1)             ``normal``
lumi              Normal(mu=auxdata, sigma=sigma_lumi)        ``normal``
staterror         Normal(mu=1, sigma=delta_b) per bin         ``normal``
shapesys          Gamma(alpha=aux + 1, beta=tau) per bin      ``gamma``
                  (``shapesys="unit-mean"``: Gamma(aux, tau))
normfactor        Uniform(low, high) = the bounds             ``uniform``
shapefactor       Uniform(low, high) = the bounds             ``uniform``
fixed parameters  a point mass at their init                  ``fixed``
================  ==========================================  =============

Parameterisation of ``PriorEntry.params`` (Distributions.jl spelling in brackets):

- ``normal``     {"mu", "sigma"}            [Normal(mu, sigma)]
- ``lognormal``  {"mu", "sigma"} of log x   [LogNormal(mu, sigma)]
- ``gamma``      {"alpha", "beta"}, beta a RATE  [Gamma(alpha, 1 / beta)]
- ``uniform``    {"low", "high"}            [Uniform(low, high)]
- ``halfnormal`` {"sigma"}, support x >= 0  [truncated(Normal(0, sigma); lower=0)]
- ``cauchy``     {"loc", "scale"}           [Cauchy(loc, scale)]
- ``flat``       {} improper constant density on [lower, upper]
- ``fixed``      {"value"}                  [Dirac(value)]

Every prior is truncated to ``[lower, upper]`` (the model's bounds intersected
with the family's support, or bounds given in the priors file);
``truncated(d, lower, upper)`` in Distributions.jl. ``log_prob`` is normalised
as the untruncated family (truncation changes only a constant).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from bayeshf.errors import BayeshfError
from bayeshf.prior_files import _POSITIVE, FAMILIES, read_priors  # noqa: F401 (the file format defines the families)
from bayeshf.stored import StoredJit

#: natural support of each family
SUPPORT: dict[str, tuple[float, float]] = {
    "normal": (-math.inf, math.inf),
    "lognormal": (0.0, math.inf),
    "gamma": (0.0, math.inf),
    "uniform": (-math.inf, math.inf),  # replaced by (low, high)
    "halfnormal": (0.0, math.inf),
    "cauchy": (-math.inf, math.inf),
    "flat": (-math.inf, math.inf),
    "fixed": (-math.inf, math.inf),
}
SHAPESYS_CONVENTIONS = ("flat", "unit-mean")


@dataclasses.dataclass(frozen=True)
class PriorEntry:
    """The prior of one scalar parameter.

    ``name`` is the element of ``model.par_names``; ``family`` and ``params``
    follow the table in the module docstring; ``lower``/``upper`` bound the
    support (after the model's bounds); ``parameter_set`` and ``source``
    ("default" or the priors file) are for display.
    """

    name: str
    family: str
    params: dict[str, float]
    lower: float
    upper: float
    parameter_set: str = ""
    source: str = "default"

    def describe(self) -> str:
        """Short human form, e.g. ``Normal(mu=0, sigma=1)``."""
        args = ", ".join(f"{k}={v:.6g}" for k, v in self.params.items())
        return f"{self.family.capitalize()}({args})"


#: family parameters that keep a family's log density finite at x = 1 (for the masked-out entries in log_prob)
_NEUTRAL: dict[str, tuple[float, float]] = {
    "normal": (0.0, 1.0), "lognormal": (0.0, 1.0), "gamma": (1.0, 1.0), "uniform": (0.0, 2.0),
    "halfnormal": (1.0, 0.0), "cauchy": (0.0, 1.0),
}


def _family_log_prob(family: str, x, p1, p2):
    """Log density of ``family`` at ``x`` (vectorised; untruncated normalisation)."""
    if family == "normal":
        return -0.5 * ((x - p1) / p2) ** 2 - jnp.log(p2) - 0.5 * math.log(2 * math.pi)
    if family == "lognormal":
        logx = jnp.log(x)
        return -0.5 * ((logx - p1) / p2) ** 2 - jnp.log(p2) - logx - 0.5 * math.log(2 * math.pi)
    if family == "gamma":
        return p1 * jnp.log(p2) - gammaln(p1) + (p1 - 1.0) * jnp.log(x) - p2 * x
    if family == "uniform":
        return -jnp.log(p2 - p1) + 0.0 * x
    if family == "halfnormal":
        return -0.5 * (x / p1) ** 2 - jnp.log(p1) + 0.5 * math.log(2 / math.pi)
    if family == "cauchy":
        return -jnp.log(math.pi * p2 * (1.0 + ((x - p1) / p2) ** 2))
    if family == "flat":
        return 0.0 * x
    raise ValueError(family)  # pragma: no cover


def _gamma_candidates(key, shape, alpha):
    """Gamma(alpha, 1) proposals by Marsaglia & Tsang (2000) with their acceptance flags.

    Loop-free (the caller keeps the first accepted of several candidates), so
    it compiles much faster than a rejection while-loop; alpha < 1 uses
    Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha).
    """
    k_normal, k_accept, k_boost = jax.random.split(key, 3)
    boosted = alpha < 1.0
    a = jnp.where(boosted, alpha + 1.0, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    x = jax.random.normal(k_normal, shape)
    v = (1.0 + c * x) ** 3
    log_u = jnp.log(jax.random.uniform(k_accept, shape))
    ok = (v > 0) & (log_u < 0.5 * x**2 + d - d * v + d * jnp.log(jnp.where(v > 0, v, 1.0)))
    draws = d * v
    boost = jnp.where(boosted, jax.random.uniform(k_boost, shape) ** (1.0 / alpha), 1.0)
    return draws * boost, ok


def _family_sample(family: str, key, shape, p1, p2, lower, upper):
    """Untruncated proposals of ``family`` (broadcast over params) and their acceptance flags."""
    ok = jnp.ones(shape, dtype=bool)
    if family == "normal":
        return p1 + p2 * jax.random.normal(key, shape), ok
    if family == "lognormal":
        return jnp.exp(p1 + p2 * jax.random.normal(key, shape)), ok
    if family == "gamma":
        draws, ok = _gamma_candidates(key, shape, jnp.broadcast_to(p1, shape))
        return draws / p2, ok
    if family == "uniform":
        return jax.random.uniform(key, shape, minval=p1, maxval=p2), ok
    if family == "halfnormal":
        return jnp.abs(p1 * jax.random.normal(key, shape)), ok
    if family == "cauchy":
        return p1 + p2 * jax.random.cauchy(key, shape), ok
    if family == "flat":
        return jax.random.uniform(key, shape, minval=lower, maxval=upper), ok
    raise ValueError(family)  # pragma: no cover


class PriorSet:
    """The priors of all parameters of a model, in ``model.par_names`` order.

    ``entries`` holds one :class:`PriorEntry` per scalar parameter;
    ``log_prob(pars)`` and ``sample(key, n)`` are jittable and vectorised by
    family (gathers with indices prepared once on the host).
    """

    def __init__(self, entries: tuple[PriorEntry, ...], *, shapesys: str = "flat"):
        self.entries = tuple(entries)
        self.shapesys = shapesys
        self.names = [e.name for e in self.entries]
        self.lower = np.array([e.lower for e in self.entries], dtype=float)
        self.upper = np.array([e.upper for e in self.entries], dtype=float)
        self.fixed = np.array([e.family == "fixed" for e in self.entries], dtype=bool)
        self.fixed_values = np.array(
            [e.params["value"] if e.family == "fixed" else 0.0 for e in self.entries], dtype=float)
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(self.entries):
            if e.family != "fixed":
                groups.setdefault(e.family, []).append(i)
        self._groups = []
        for family, idx in groups.items():
            names = FAMILIES[family]
            p = [np.array([self.entries[i].params[k] for i in idx], dtype=float) for k in names]
            p += [np.zeros(len(idx))] * (2 - len(p))
            self._groups.append((family, np.array(idx), p[0], p[1]))
        # the same groups as full-length masks for log_prob: elementwise over all parameters, no gather (whose
        # gradient is a scatter: two kernels per family per gradient evaluation, which dominate small models)
        self._masked = []
        n = len(self.entries)
        for family, idx, p1, p2 in self._groups:
            if family == "flat":  # log density 0 inside the bounds
                continue
            mask = np.zeros(n, dtype=bool)
            mask[idx] = True
            full1, full2 = np.full(n, _NEUTRAL[family][0]), np.full(n, _NEUTRAL[family][1])
            full1[idx], full2[idx] = p1, p2
            self._masked.append((family, mask, full1, full2))
        self.free_index = np.flatnonzero(~self.fixed)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> PriorEntry:
        return self.entries[self.names.index(name)]

    def log_prob(self, pars, *, check_support: bool = True):
        """Sum of the log prior densities at ``pars`` (npars,); -inf outside the support.

        ``check_support=False`` skips the support test (for callers that map into the support,
        like the posterior's transforms; fewer operations per gradient).
        """
        pars = jnp.asarray(pars)
        total = jnp.zeros(pars.shape[:-1], dtype=pars.dtype)
        for family, mask, p1, p2 in self._masked:
            # other parameters evaluate the family at a point inside its support (1.0) and are masked out,
            # so neither the value nor the gradient sees their (possibly undefined) log density
            x = jnp.where(mask, pars, 1.0)
            total = total + jnp.sum(jnp.where(mask, _family_log_prob(family, x, p1, p2), 0.0), axis=-1)
        if not check_support:
            return total
        free = self.free_index
        x = pars[..., free]
        inside = jnp.all((x >= self.lower[free]) & (x <= self.upper[free]), axis=-1)
        return jnp.where(inside, total, -jnp.inf)

    def sample(self, key, n: int):
        """``n`` draws from the (truncated) priors, shape (n, npars).

        Truncation by vectorised rejection (see ``_sample_groups``). Raises :class:`BayeshfError` for an improper prior.
        """
        for e in self.entries:
            if e.family == "flat" and not (np.isfinite(e.lower) and np.isfinite(e.upper)):
                raise BayeshfError(f"the flat prior of {e.name} is improper (unbounded), so it cannot be sampled.")
        families = tuple(g[0] for g in self._groups)
        # NumPy straight into the program (jnp.asarray would stage a program per shape)
        arrays = tuple((np.asarray(idx), np.asarray(p1), np.asarray(p2), self.lower[idx], self.upper[idx])
                       for _, idx, p1, p2 in self._groups)
        return _sample_jit(families, arrays, np.asarray(self.fixed_values), key, int(n))

    def table(self) -> list[dict[str, Any]]:
        """Rows for display / JSON: name, family, params, lower, upper, source."""
        return [dict(name=e.name, parameter_set=e.parameter_set, family=e.family, params=dict(e.params),
                     lower=e.lower, upper=e.upper, source=e.source) for e in self.entries]


_CANDIDATES = 32


def _sample_groups(families: tuple[str, ...], arrays, fixed_values, key, n: int):
    """Truncated draws for each family group; arrays: (idx, p1, p2, lower, upper) per group.

    Rejection without loops: 32 proposals per draw, the first one that is
    accepted and inside [lower, upper] is kept (exact unless all 32 fail, which
    only a prior with almost no mass inside its bounds makes likely; then the
    last proposal is clipped to the bounds).
    """
    out = jnp.broadcast_to(fixed_values, (n,) + fixed_values.shape)
    for g, (family, (idx, p1, p2, lo, hi)) in enumerate(zip(families, arrays)):
        shape = (_CANDIDATES, n, idx.shape[0])
        x, ok = _family_sample(family, jax.random.fold_in(key, g), shape, p1, p2, lo, hi)
        ok = ok & (x >= lo) & (x <= hi) & jnp.isfinite(x)
        first = jnp.argmax(ok, axis=0)
        chosen = jnp.take_along_axis(x, first[None], axis=0)[0]
        fallback = jnp.clip(jnp.where(jnp.isfinite(x[-1]), x[-1], lo), lo, hi)
        out = out.at[:, idx].set(jnp.where(jnp.any(ok, axis=0), chosen, fallback))
    return out


# one compiled program per family structure and sizes, shared by all prior sets
_sample_jit = StoredJit(_sample_groups, static_argnums=(0, 4))


# --------------------------------------------------------------------------- defaults


def default_entries(model, *, shapesys: str = "flat") -> list[PriorEntry]:
    """The derived priors (module docstring table), one per scalar parameter."""
    if shapesys not in SHAPESYS_CONVENTIONS:
        raise BayeshfError(f"unknown shapesys prior convention {shapesys!r}; use one of {', '.join(SHAPESYS_CONVENTIONS)}.")
    names = list(model.par_names)
    entries: list[PriorEntry | None] = [None] * len(names)
    for pset in model.parameters:
        for j in range(pset.size):
            i = pset.slice.start + j
            lo, hi = (float(b) for b in pset.bounds[j])
            name = names[i]
            if pset.fixed[j]:
                value = float(pset.inits[j])
                entries[i] = PriorEntry(name, "fixed", {"value": value}, value, value, pset.name)
                continue
            if pset.constraint == "normal":
                family, params = "normal", {"mu": float(pset.auxdata[j]), "sigma": float(pset.sigmas[j])}
            elif pset.constraint == "poisson":
                aux, tau = float(pset.auxdata[j]), float(pset.factors[j])
                alpha = aux + 1.0 if shapesys == "flat" else aux
                family, params = "gamma", {"alpha": alpha, "beta": tau}
            else:
                family, params = "uniform", {"low": lo, "high": hi}
            entries[i] = _bounded(PriorEntry(name, family, params, lo, hi, pset.name))
    missing = [names[i] for i, e in enumerate(entries) if e is None]
    if missing:  # pragma: no cover - contract violation of the model
        raise BayeshfError(f"the model's parameter sets do not cover {missing[0]}.")
    return entries  # type: ignore[return-value]


def _bounded(entry: PriorEntry) -> PriorEntry:
    """Intersect the entry's support with its family's natural support."""
    lo, hi = SUPPORT[entry.family]
    if entry.family == "uniform":
        lo, hi = entry.params["low"], entry.params["high"]
    return dataclasses.replace(entry, lower=max(entry.lower, lo), upper=min(entry.upper, hi))


# --------------------------------------------------------------------------- files


def _element(value: Any, j: int, size: int, origin: str, name: str, key: str) -> float:
    if isinstance(value, list):
        if len(value) != size:
            raise BayeshfError(f"{origin}: {key} of the prior of {name} has {len(value)} values "
                               f"but the parameter set has {size} elements.")
        return float(value[j])
    return float(value)


def _bound(value: Any) -> tuple[float, float]:
    lo, hi = value
    return (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))


def apply_overrides(model, entries: list[PriorEntry], spec: dict, origin: str) -> list[PriorEntry]:
    """Replace the derived entries named in ``spec["priors"]``."""
    names = list(model.par_names)
    index = {n: i for i, n in enumerate(names)}
    sets = {p.name: p for p in model.parameters}
    # set keys first, scalar keys after (they win)
    ordered = sorted(spec["priors"].items(), key=lambda kv: kv[0] not in sets)
    entries = list(entries)
    for key, prior in ordered:
        if key in sets:
            pset = sets[key]
            targets = [(pset.slice.start + j, j, pset.size) for j in range(pset.size)]
        elif key in index:
            targets = [(index[key], 0, 1)]
        else:
            raise BayeshfError(f"{origin}: {key!r} names no parameter or parameter set of the model.")
        family = prior["family"]
        for i, j, size in targets:
            old = entries[i]
            params = {k: _element(prior[k], j, size, origin, key, k) for k in FAMILIES[family]}
            pset = next(p for p in model.parameters if p.slice.start <= i < p.slice.stop)
            lo, hi = (float(b) for b in pset.bounds[i - pset.slice.start])
            if "bounds" in prior:
                lo, hi = _bound(prior["bounds"])
            if family == "fixed":
                value = params["value"]
                if not lo <= value <= hi:
                    raise BayeshfError(f"{origin}: the fixed value {value:g} of {names[i]} is outside its bounds [{lo:g}, {hi:g}].")
                entries[i] = PriorEntry(names[i], "fixed", params, value, value, old.parameter_set, origin)
                continue
            if family == "uniform" and params["low"] >= params["high"]:
                raise BayeshfError(f"{origin}: the uniform prior of {key} needs low < high.")
            new = _bounded(PriorEntry(names[i], family, params, lo, hi, old.parameter_set, origin))
            if not new.lower < new.upper:
                raise BayeshfError(f"{origin}: the prior of {names[i]} leaves no support: "
                                   f"[{new.lower:g}, {new.upper:g}] after the bounds.")
            entries[i] = dataclasses.replace(new)
    return entries



def build_priors(model, priors: str | Path | Mapping | None = None, *, shapesys: str = "flat") -> PriorSet:
    """Priors for ``model``: the derived defaults, overridden by ``priors``.

    ``priors`` is None, a path to a JSON/YAML priors file (priors/priors.schema.json)
    or the equivalent dict. ``shapesys`` picks the shapesys convention ("flat":
    Gamma(aux + 1, rate tau); "unit-mean": Gamma(aux, rate tau)); a
    ``"shapesys"`` key in the priors file takes precedence.
    """
    if priors is None:
        return PriorSet(tuple(default_entries(model, shapesys=shapesys)), shapesys=shapesys)
    spec, origin = read_priors(priors)
    shapesys = spec.get("shapesys", shapesys)
    entries = default_entries(model, shapesys=shapesys)
    entries = apply_overrides(model, entries, spec, origin)
    return PriorSet(tuple(entries), shapesys=shapesys)
