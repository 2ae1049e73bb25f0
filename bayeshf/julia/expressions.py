"""bayeshf priors as Distributions.jl expressions, and a reader for those expressions.

The Julia half builds BAT's prior from one expression string per free
parameter (``Normal(0.0, 1.0)``, ``truncated(Gamma(26.0, 1 / 25.0), 1e-10, 10.0)``).
:func:`julia_expression` writes them from a :class:`bayeshf.priors.PriorEntry`;
:func:`read_expression` reads them back into scipy.stats with Distributions.jl's
parameterisation (Gamma takes a *scale*, ``truncated`` renormalises), so the
two descriptions can be compared by their log-densities without Julia. The
reader accepts only the grammar written here, and the Julia side evaluates only
strings this module validated.

Distributions.jl reference: https://juliastats.org/Distributions.jl/stable/univariate/
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from bayeshf.errors import BayeshfError

#: constructor -> (number of arguments, scipy frozen distribution from Distributions.jl arguments)
_CONSTRUCTORS: dict[str, tuple[int, Callable[..., object]]] = {
    "Normal": (2, lambda mu, sigma: stats.norm(loc=mu, scale=sigma)),
    "LogNormal": (2, lambda mu, sigma: stats.lognorm(s=sigma, scale=math.exp(mu))),
    "Gamma": (2, lambda shape, scale: stats.gamma(a=shape, scale=scale)),
    "Uniform": (2, lambda low, high: stats.uniform(loc=low, scale=high - low)),
    "Cauchy": (2, lambda loc, scale: stats.cauchy(loc=loc, scale=scale)),
}


def _number(x: float) -> str:
    """A float literal Julia and Python both read back bit-for-bit (``Inf`` for infinity)."""
    x = float(x)
    if math.isnan(x):
        raise BayeshfError("a prior parameter is NaN, which Distributions.jl cannot take.")
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    return repr(x)


def _truncate(base: str, lower: float, upper: float, support: tuple[float, float]) -> str:
    """``truncated(base, lower, upper)`` when the bounds cut the family's support."""
    lo, hi = max(lower, support[0]), min(upper, support[1])
    if lo <= support[0] and hi >= support[1]:
        return base
    return f"truncated({base}, {_number(lo)}, {_number(hi)})"


def julia_expression(entry) -> str:
    """The Distributions.jl expression of one prior entry (fixed entries: ``Dirac(value)``).

    Raises :class:`BayeshfError` for a flat prior without finite bounds: BAT.jl
    draws its initial points from the prior and needs it proper.
    """
    family, p = entry.family, entry.params
    lower, upper = float(entry.lower), float(entry.upper)
    inf = math.inf
    if family == "fixed":
        return f"Dirac({_number(p['value'])})"
    if family in ("flat", "uniform"):
        if family == "uniform":
            lower, upper = max(lower, float(p["low"])), min(upper, float(p["high"]))
        if not (math.isfinite(lower) and math.isfinite(upper)):
            raise BayeshfError(
                f"the {family} prior of {entry.name} has no finite bounds, but BAT.jl needs a proper prior; "
                "give the parameter bounds or a proper prior in the priors file."
            )
        return f"Uniform({_number(lower)}, {_number(upper)})"
    if family == "normal":
        return _truncate(f"Normal({_number(p['mu'])}, {_number(p['sigma'])})", lower, upper, (-inf, inf))
    if family == "lognormal":
        return _truncate(f"LogNormal({_number(p['mu'])}, {_number(p['sigma'])})", lower, upper, (0.0, inf))
    if family == "gamma":  # bayeshf's beta is a rate; Distributions.jl's Gamma takes the scale 1 / beta
        return _truncate(f"Gamma({_number(p['alpha'])}, 1 / {_number(p['beta'])})", lower, upper, (0.0, inf))
    if family == "cauchy":
        return _truncate(f"Cauchy({_number(p['loc'])}, {_number(p['scale'])})", lower, upper, (-inf, inf))
    if family == "halfnormal":  # Distributions.jl has no HalfNormal: a Normal(0, sigma) cut at zero
        lo = max(lower, 0.0)
        return f"truncated(Normal(0.0, {_number(p['sigma'])}), {_number(lo)}, {_number(upper)})"
    raise BayeshfError(f"the prior family {family!r} of {entry.name} has no Distributions.jl counterpart.")


def prior_expressions(prior_set) -> tuple[list[int], list[str]]:
    """``(free indices, expressions)``: the BAT prior over the free parameters, in model order."""
    free = [i for i, entry in enumerate(prior_set.entries) if entry.family != "fixed"]
    return free, [julia_expression(prior_set.entries[i]) for i in free]


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class ReadDistribution:
    """A Distributions.jl expression read into scipy: ``logpdf`` with Julia's conventions."""

    expression: str
    base: object | None  # scipy frozen distribution (None for Dirac)
    lower: float = -math.inf
    upper: float = math.inf
    truncated: bool = False
    point: float | None = None

    def logpdf(self, x) -> np.ndarray:
        """Log density at ``x``; -inf outside the support, truncation renormalised as Distributions.jl."""
        x = np.asarray(x, dtype=float)
        if self.point is not None:
            return np.where(x == self.point, 0.0, -np.inf)
        with np.errstate(divide="ignore"):
            values = np.asarray(self.base.logpdf(x), dtype=float)
        if self.truncated:
            mass = self.base.cdf(self.upper) - self.base.cdf(self.lower)
            values = values - math.log(mass)
        inside = (x >= self.lower) & (x <= self.upper)
        return np.where(inside, values, -np.inf)


def _literal(node: ast.AST, expression: str) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "Inf":
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand, expression)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        denominator = _literal(node.right, expression)
        if denominator == 0:
            raise BayeshfError(f"the prior expression {expression!r} divides by zero.")
        return _literal(node.left, expression) / denominator
    raise BayeshfError(f"the prior expression {expression!r} contains {ast.unparse(node)!r}, which is not a number.")


def _call(node: ast.AST, expression: str) -> ReadDistribution:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords):
        raise BayeshfError(f"the prior expression {expression!r} is not a call of a Distributions.jl constructor.")
    name, args = node.func.id, node.args
    if name == "truncated":
        if len(args) != 3:
            raise BayeshfError(f"the prior expression {expression!r} must truncate as truncated(d, lower, upper).")
        inner = _call(args[0], expression)
        if inner.point is not None or inner.truncated:
            raise BayeshfError(f"the prior expression {expression!r} truncates a Dirac or a truncated distribution.")
        lower, upper = _literal(args[1], expression), _literal(args[2], expression)
        if not lower <= upper:
            raise BayeshfError(f"the prior expression {expression!r} has lower > upper.")
        return ReadDistribution(expression, inner.base, lower, upper, truncated=True)
    if name == "Dirac" and len(args) == 1:
        value = _literal(args[0], expression)
        return ReadDistribution(expression, None, value, value, point=value)
    if name not in _CONSTRUCTORS or len(args) != _CONSTRUCTORS[name][0]:
        raise BayeshfError(f"the prior expression {expression!r} uses {name} with {len(args)} arguments, "
                           "which the bridge does not build.")
    values = [_literal(arg, expression) for arg in args]
    if not all(math.isfinite(v) for v in values):
        raise BayeshfError(f"the prior expression {expression!r} has a non-finite parameter.")
    if name == "Uniform":
        if not values[0] < values[1]:
            raise BayeshfError(f"the prior expression {expression!r} needs low < high.")
        return ReadDistribution(expression, _CONSTRUCTORS[name][1](*values), values[0], values[1])
    if values[1] <= 0 or (name == "Gamma" and values[0] <= 0):
        raise BayeshfError(f"the prior expression {expression!r} needs positive shape and scale parameters.")
    support = (0.0, math.inf) if name in ("LogNormal", "Gamma") else (-math.inf, math.inf)
    return ReadDistribution(expression, _CONSTRUCTORS[name][1](*values), *support)


def read_expression(expression: str) -> ReadDistribution:
    """Read one expression of the grammar :func:`julia_expression` writes (raises :class:`BayeshfError`)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as error:
        raise BayeshfError(f"the prior expression {expression!r} does not parse ({error.msg}).") from None
    return _call(tree.body, expression)
