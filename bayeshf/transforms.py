"""Maps between bounded parameters and the real line, shared by the fit and the posterior.

Every parameter has one code:

==========  ===========  ================================  ==============================================
code        support      theta(z)                          log |d theta / d z|
==========  ===========  ================================  ==============================================
IDENTITY 0  (-inf, inf)  z                                 0
LOWER 1     [lo, inf)    lo + exp(z)                       z
UPPER 2     (-inf, hi]   hi - exp(z)                       z
LOGIT 3     [lo, hi]     lo + (hi - lo) sigmoid(z)         log(hi - lo) + log sigmoid(z) + log sigmoid(-z)
PROBIT 4    [lo, hi]     lo + (hi - lo) Phi(z)             log(hi - lo) - z^2 / 2 - log(2 pi) / 2
==========  ===========  ================================  ==============================================

The fit (:mod:`bayeshf.objective`) passes the codes as a traced array, so
one compiled program serves every choice of bounds (:func:`constrain_traced`,
codes IDENTITY to LOGIT); the posterior (:mod:`bayeshf.posterior`) fixes them
when it traces (:class:`Bounds`), so only the maps present are evaluated, and
maps the boxes of flat priors through the probit (see its docstring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IDENTITY, LOWER, UPPER, LOGIT, PROBIT = 0, 1, 2, 3, 4
#: the probit boxes are computed on static slices up to this many runs of consecutive parameters
PROBIT_MAX_BLOCKS = 4
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def codes(lo: np.ndarray, hi: np.ndarray, probit: np.ndarray | None = None) -> np.ndarray:
    """The code of each parameter from its bounds: boxes LOGIT (PROBIT where ``probit``), half lines LOWER or
    UPPER, no bound IDENTITY."""
    has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
    box = LOGIT if probit is None else np.where(probit, PROBIT, LOGIT)
    return np.where(has_lo & has_hi, box, np.where(has_lo, LOWER, np.where(has_hi, UPPER, IDENTITY)))


#: the codes the fit uses (its codes are traced, so every one of them is evaluated)
FIT_CODES = frozenset({IDENTITY, LOWER, UPPER, LOGIT})


def _finite_bounds(lo, hi, xp):
    """``lo`` and ``hi`` with 0 and 1 for the missing ones (finite in unselected branches, a unit width where
    only one is set); NumPy for NumPy bounds (no eager JAX operations on constants)."""
    bx = np if isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray) else xp
    return bx.where(bx.isfinite(lo), lo, 0.0), bx.where(bx.isfinite(hi), hi, 1.0)


def constrain(z, lo, hi, kind, present=FIT_CODES, xp=jnp):
    """theta(z), the one implementation of the maps: only the codes in ``present`` are evaluated.

    ``kind`` is a traced array (codes IDENTITY to LOGIT: one program for any bounds) or NumPy (then
    ``present`` may hold PROBIT, evaluated on static slices); ``xp=np`` evaluates on the host.
    """
    if xp is jnp:
        sigmoid = jax.nn.sigmoid
    else:
        import scipy.special

        sigmoid = scipy.special.expit
    lo0, hi0 = _finite_bounds(lo, hi, xp)
    out = z
    if LOGIT in present:
        out = xp.where(kind == LOGIT, lo0 + (hi0 - lo0) * sigmoid(z), out)
    if PROBIT in present:
        out = _probit_constrain(z, out, lo0, hi0 - lo0, kind)
    if present & {LOWER, UPPER}:
        e = xp.exp(xp.where((kind == LOWER) | (kind == UPPER), z, 0.0))  # exp finite where unused
        out = xp.where(kind == LOWER, lo0 + e, xp.where(kind == UPPER, hi0 - e, out))
    return out


def constrain_traced(z, lo, hi, kind):
    """:func:`constrain` for the fit's traced codes."""
    return constrain(z, lo, hi, kind)


def constrain_host(z: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """:func:`constrain` of the fit's codes in NumPy (no compiled program for a map applied once per fit)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return constrain(np.asarray(z, dtype=float), lo, hi, kind, xp=np)


def unconstrain(x, lo, hi, kind, xp=np, margin: float | None = None):
    """z(theta), the inverse of :func:`constrain` for every code, NumPy or jax (``xp``).

    Points on a bound map to +-inf; with ``margin`` (the fit's starts) points within ``margin`` (relative)
    of a bound move inside by that much instead, and anything not finite (a box of zero width) maps to 0.
    """
    lo0, hi0 = _finite_bounds(lo, hi, xp)
    width = hi0 - lo0
    with np.errstate(divide="ignore", invalid="ignore"):
        above, below = x - lo0, hi0 - x
        if margin is None:
            u = xp.clip((x - lo0) / width, 0.0, 1.0)
        else:
            u = xp.clip((x - lo0) / width, margin, 1 - margin)
            above = xp.maximum(above, margin * xp.maximum(1.0, xp.abs(lo0)))
            below = xp.maximum(below, margin * xp.maximum(1.0, xp.abs(hi0)))
        z = xp.where(kind == LOGIT, xp.log(u) - xp.log1p(-u), x)
        if xp is not np or np.any(kind == PROBIT):
            z = xp.where(kind == PROBIT, _ndtri(u, xp), z)
        z = xp.where(kind == LOWER, xp.log(xp.where(kind == LOWER, above, 1.0)), z)
        z = xp.where(kind == UPPER, xp.log(xp.where(kind == UPPER, below, 1.0)), z)
    return z if margin is None else xp.where(xp.isfinite(z), z, 0.0)


def unconstrain_host(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray,
                     margin: float = 1e-4) -> np.ndarray:
    """:func:`unconstrain` for the fit's starts: points on or near a bound move ``margin`` inside."""
    return unconstrain(np.asarray(x, dtype=float), lo, hi, kind, margin=margin)


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Sorted integer positions as [start, stop) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for i in index.tolist():
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _ndtri(u, xp):
    """The standard normal quantile of ``u`` in [0, 1] (+-inf at the ends), NumPy or jax."""
    if xp is np:
        import scipy.special

        return scipy.special.ndtri(u)
    return jax.scipy.special.ndtri(u)


def _probit_constrain(z, out, lo, width, kind: np.ndarray):
    """``out`` with the probit boxes set to lo + width Phi(z) (``kind`` static).

    Phi(z) is one erfc (jax's ndtr evaluates erf and erfc), evaluated on the probit parameters
    only: over static slices when they form at most PROBIT_MAX_BLOCKS runs, else over all
    parameters and selected.
    """
    def phi(x):
        return 0.5 * jax.lax.erfc(-x * np.sqrt(0.5))

    blocks = _runs(np.flatnonzero(kind == PROBIT))
    if len(blocks) > PROBIT_MAX_BLOCKS:
        return jnp.where(kind == PROBIT, lo + width * phi(z), out)
    pieces, previous = [], 0
    for start, stop in blocks:
        pieces += [out[..., previous:start], lo[start:stop] + width[start:stop] * phi(z[..., start:stop])]
        previous = stop
    return jnp.concatenate(pieces + [out[..., previous:]], axis=-1)


class Bounds:
    """The maps of parameters with fixed codes (all five): theta(z), z(theta) and the log-Jacobian.

    ``lo``/``hi`` are the bounds (infinite where there is none); ``kind`` the codes, which may differ
    from :func:`codes` (the posterior gives IDENTITY to parameters it maps itself).
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray):
        self.bounds = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        self.kind = np.asarray(kind)
        has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
        self.log_width = np.log(np.where(has_lo & has_hi, hi - lo, 1.0))
        self.present = frozenset(int(k) for k in np.unique(self.kind))  # codes present: trace only those

    def constrain(self, z):
        """theta from ``z`` (..., n), traced."""
        return constrain(z, *self.bounds, self.kind, self.present)

    def unconstrain(self, x, xp=np):
        """``z`` from theta ``x`` (..., n), NumPy or jax (``xp``); points on a bound map to +-inf."""
        return unconstrain(x, *self.bounds, self.kind, xp)

    def log_jacobian(self, z):
        """log |d theta / d z| summed over the last axis, traced."""
        kind, present = self.kind, self.present
        terms = jnp.where(kind == IDENTITY, 0.0, z) if present & {LOWER, UPPER} else jnp.zeros_like(z)
        if LOGIT in present:
            # log sigmoid(z) + log sigmoid(-z) = -|z| - 2 log1p(exp(-|z|)): one exp and one log1p (two
            # log_sigmoid calls take two of each); its derivative -tanh(z / 2) is right at z = 0 too
            a = jnp.abs(z)
            terms = jnp.where(kind == LOGIT, self.log_width - a - 2.0 * jnp.log1p(jnp.exp(-a)), terms)
        if PROBIT in present:  # log of (upper - lower) times the standard normal density
            terms = jnp.where(kind == PROBIT, self.log_width - 0.5 * z * z - _LOG_SQRT_2PI, terms)
        return jnp.sum(terms, axis=-1)
