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


def constrain_traced(z, lo, hi, kind, xp=jnp):
    """theta(z) for codes IDENTITY to LOGIT given as an array (traced: one program for any bounds).

    ``xp=np`` evaluates the same map on the host.
    """
    if xp is jnp:
        sigmoid = jax.nn.sigmoid
    else:
        import scipy.special

        sigmoid = scipy.special.expit
    lo0 = xp.where(xp.isfinite(lo), lo, 0.0)
    hi0 = xp.where(xp.isfinite(hi), hi, 1.0)
    box = lo0 + (hi0 - lo0) * sigmoid(z)
    zc = xp.where((kind == LOWER) | (kind == UPPER), z, 0.0)  # keep exp finite where unused
    lower = lo0 + xp.exp(zc)
    upper = hi0 - xp.exp(zc)
    return xp.where(kind == LOGIT, box, xp.where(kind == LOWER, lower, xp.where(kind == UPPER, upper, z)))


def constrain_host(z: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """:func:`constrain_traced` in NumPy (no compiled program for a map applied once per fit)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return constrain_traced(np.asarray(z, dtype=float), lo, hi, kind, xp=np)


def unconstrain_host(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray,
                     margin: float = 1e-4) -> np.ndarray:
    """Inverse of :func:`constrain_traced` on the host; points within ``margin`` (relative) of a bound move
    inside by that much, and a box of zero width (a held parameter) maps to 0."""
    z = np.array(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        box = kind == LOGIT
        s = np.clip((x[box] - lo[box]) / (hi[box] - lo[box]), margin, 1 - margin)
        z[box] = np.log(s) - np.log1p(-s)
        one = kind == LOWER
        z[one] = np.log(np.maximum(x[one] - lo[one], margin * np.maximum(1.0, np.abs(lo[one]))))
        two = kind == UPPER
        z[two] = np.log(np.maximum(hi[two] - x[two], margin * np.maximum(1.0, np.abs(hi[two]))))
    return np.where(np.isfinite(z), z, 0.0)


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


class Bounds:
    """The maps of parameters with fixed codes (all five): theta(z), z(theta) and the log-Jacobian.

    ``lo``/``hi`` are the bounds (infinite where there is none); ``kind`` the codes, which may differ
    from :func:`codes` (the posterior gives IDENTITY to parameters it maps itself).
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, kind: np.ndarray):
        has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
        self.kind = np.asarray(kind)
        self.lo = np.where(has_lo, lo, 0.0)
        self.hi = np.where(has_hi, hi, 0.0)
        self.width = np.where(has_lo & has_hi, hi - lo, 1.0)
        self.log_width = np.log(self.width)
        self.present = frozenset(int(k) for k in np.unique(self.kind))  # codes present: trace only those

    def constrain(self, z):
        """theta from ``z`` (..., n), traced."""
        kind, present = self.kind, self.present
        out = z
        if LOGIT in present:
            out = jnp.where(kind == LOGIT, self.lo + self.width * jax.nn.sigmoid(z), out)
        if PROBIT in present:
            out = self._probit_constrain(z, out)
        if present & {LOWER, UPPER}:
            one_sided = (jnp.where(kind == LOWER, self.lo, self.hi) + jnp.where(kind == LOWER, 1.0, -1.0)
                         * jnp.exp(jnp.where((kind == LOWER) | (kind == UPPER), z, 0.0)))
            out = jnp.where((kind == LOWER) | (kind == UPPER), one_sided, out)
        return out

    def _probit_constrain(self, z, out):
        """``out`` with the probit boxes set to lower + width Phi(z).

        Phi(z) is one erfc (jax's ndtr evaluates erf and erfc), evaluated on the probit parameters
        only: over static slices when they form at most PROBIT_MAX_BLOCKS runs, else over all
        parameters and selected.
        """
        def phi(x):
            return 0.5 * jax.lax.erfc(-x * np.sqrt(0.5))

        blocks = _runs(np.flatnonzero(self.kind == PROBIT))
        if len(blocks) > PROBIT_MAX_BLOCKS:
            return jnp.where(self.kind == PROBIT, self.lo + self.width * phi(z), out)
        pieces, previous = [], 0
        for start, stop in blocks:
            pieces += [out[..., previous:start],
                       self.lo[start:stop] + self.width[start:stop] * phi(z[..., start:stop])]
            previous = stop
        return jnp.concatenate(pieces + [out[..., previous:]], axis=-1)

    def unconstrain(self, x, xp=np):
        """``z`` from theta ``x`` (..., n), NumPy or jax (``xp``); points on a bound map to +-inf."""
        kind = self.kind
        with np.errstate(divide="ignore", invalid="ignore"):
            u = xp.clip((x - self.lo) / self.width, 0.0, 1.0)
            interval = xp.log(u) - xp.log1p(-u)
            probit = _ndtri(u, xp)
            lower = xp.log(xp.where(kind == LOWER, x - self.lo, 1.0))
            upper = xp.log(xp.where(kind == UPPER, self.hi - x, 1.0))
        return xp.where(kind == LOGIT, interval, xp.where(kind == PROBIT, probit,
                        xp.where(kind == LOWER, lower, xp.where(kind == UPPER, upper, x))))

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
