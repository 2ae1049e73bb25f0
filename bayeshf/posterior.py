"""The posterior as one log-density on an unconstrained space.

``Posterior(model, prior_set).logdensity_fn(z)`` is the function every sampler
(blackjax here, BAT.jl through the Julia callback) and the MAP search use:

    logdensity_fn(z) = log L_main(theta(z)) + log prior(theta(z)) + log |d theta / d z|

where ``z`` holds the free (not fixed) parameters mapped to the real line by
the maps of :mod:`bayeshf.transforms` (identity, ``exp`` for a half line,
logistic or probit for a box).

A box with a flat (or uniform) prior, the normfactors and shapefactors,
maps through the normal CDF Phi (probit) rather than the logistic: a
parameter whose posterior keeps a finite density at a bound (a signal
strength at 0 when the data show no signal) then has a Gaussian tail in z
(the Jacobian is the standard normal density) instead of the exponential tail
e^z of the logit, which NUTS explores in longer, slower steps. With no data
the flat prior is exactly N(0, 1) in z. Boxes with a Normal or Gamma prior
keep the logit (the probit's erfc costs more per gradient). docs/sampling.md
has the measurements behind both choices.

Normsys parameters with a strong effect on a well-measured yield are sampled
as that yield factor instead (:class:`YieldMap`). The mode search and the
Laplace approximation are :mod:`bayeshf.laplace`.
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bayeshf import transforms
from bayeshf.priors import PriorSet, build_priors

#: prior families whose boxes map through the probit (see the module docstring)
PROBIT_FAMILIES = ("flat", "uniform")


#: normsys parameters are sampled as their yield factor y = f(alpha) (see :func:`yield_map`) when the
#: factor of their dominant entry moves by at least this much per unit alpha (|log hi| or |log lo|) ...
YIELD_MIN_EFFECT = 0.1
#: ... and the nominal main bins hold at least this much Fisher information about alpha (the prior's is 1)
YIELD_MIN_INFORMATION = 100.0
#: False: every normsys parameter keeps its alpha (for A/B measurements)
SAMPLE_YIELDS = True
#: the sampled coordinate of a yield factor bends onto the box of alpha over this many units of alpha inside
#: each bound (YieldMap.to_y): there a unit normal prior is below exp(-10) of its peak for a box of [-5, 5]
YIELD_WALL = 0.5
#: a bin's Poisson term continues on its tangent below the count where it has fallen this far below its
#: maximum (main_log_likelihood): e^-25 = 1e-11, a single-bin deviation beyond 7 standard deviations
HOLE_DEPTH = 25.0
#: Newton steps inverting the code4 polynomial on |alpha| < 1 (from the log-linear guess: 1e-15 after 6)
_YIELD_NEWTON_STEPS = 8


class YieldMap:
    """Normsys parameters sampled as the interpolated factor of their dominant entry, y = f(alpha).

    Where many events pin a sample's yield, the exponential factor f(alpha) = lo^-alpha (alpha < -1)
    bends the likelihood surface: its curvature in alpha scales like f(alpha)^2, so one metric cannot
    fit both the mode and the tail. In y the yield is linear. alpha = f^-1(y) is exact (explicit
    outside |alpha| < 1, Newton steps on the code4 polynomial inside) and the log-Jacobian
    -log y - log |d log f / d alpha| enters the density.

    The box of alpha makes y a box (f(lower), f(upper)) whose density does not vanish at its ends (a
    normsys the data pull down puts mass near f(lower)), so the sampled coordinate is not y itself but
    z with y = walls(z): the identity in the interior, bending smoothly onto the box over the last
    YIELD_WALL units of alpha inside each bound (softplus walls, then an affine map fixing the ends), so
    no trajectory steps off a cliff of the density (ttbar: OtherNorm's lower end, 1 divergent
    transition in 4000 on 4 of 9 seeds). Exact: log dy/dz enters the log-Jacobian.
    """

    def __init__(self, index, log_hi, log_lo, coefficients, code: str, lower, upper):
        self.index = np.asarray(index, dtype=int)  # positions in z (the free parameters)
        self.log_hi = np.asarray(log_hi, dtype=float)
        self.log_lo = np.asarray(log_lo, dtype=float)
        self.coefficients = np.asarray(coefficients, dtype=float).reshape(-1, 6)
        self.code = code
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        self.alpha_lower, self.alpha_upper = lower, upper
        at_lower, at_upper = (np.exp(self.log_factor_np(a)) for a in (lower, upper))
        inner_lower = np.exp(self.log_factor_np(np.minimum(lower + YIELD_WALL, 0.5 * (lower + upper))))
        inner_upper = np.exp(self.log_factor_np(np.maximum(upper - YIELD_WALL, 0.5 * (lower + upper))))
        rising = at_upper > at_lower
        self.y_lower, self.y_upper = np.minimum(at_lower, at_upper), np.maximum(at_lower, at_upper)
        span = self.y_upper - self.y_lower
        middle = np.exp(self.log_factor_np(0.5 * (lower + upper)))
        # wall widths in y: what the last YIELD_WALL units of alpha span, at most an eighth of the way to the
        # middle of the box (the exponential upper end spans much y: its bend would reach the bulk)
        self.wall_lower = np.minimum(np.abs(np.where(rising, inner_lower, inner_upper) - self.y_lower),
                                     (middle - self.y_lower) / 8)
        self.wall_upper = np.minimum(np.abs(self.y_upper - np.where(rising, inner_upper, inner_lower)),
                                     (self.y_upper - middle) / 8)
        # where the two softplus walls take z = -inf, and the affine map putting it back on y_lower
        self._g_min = self.y_upper - self.wall_upper * np.logaddexp(0.0, span / self.wall_upper)
        self._scale = span / (self.y_upper - self._g_min)

    def _lower_wall(self, z):
        """The first of :meth:`to_y`'s two walls: z bent onto y_lower from below, traced."""
        return self.y_lower + self.wall_lower * jax.nn.softplus((z - self.y_lower) / self.wall_lower)

    def to_y(self, z):
        """The yield factor y in (f(lower), f(upper)) of the sampled coordinate z, traced."""
        y1 = self._lower_wall(z)
        g = self.y_upper - self.wall_upper * jax.nn.softplus((self.y_upper - y1) / self.wall_upper)
        return self.y_lower + (g - self._g_min) * self._scale

    def log_wall_slope(self, z):
        """log dy/dz of :meth:`to_y`, traced."""
        y1 = self._lower_wall(z)
        return (jax.nn.log_sigmoid((z - self.y_lower) / self.wall_lower)
                + jax.nn.log_sigmoid((self.y_upper - y1) / self.wall_upper) + np.log(self._scale))

    def to_z(self, y, xp=np):
        """The inverse of :meth:`to_y` (NumPy or traced); the ends of the box map to -inf and +inf."""
        def softplus_inverse(v):  # log(exp(v) - 1) for v > 0, -inf at 0
            return v + xp.log(-xp.expm1(-v))

        with np.errstate(divide="ignore", invalid="ignore"):
            g = self._g_min + (y - self.y_lower) / self._scale
            v = xp.clip((self.y_upper - g) / self.wall_upper, 0.0, np.inf)
            y1 = self.y_upper - self.wall_upper * softplus_inverse(v)
            u = xp.clip((y1 - self.y_lower) / self.wall_lower, 0.0, np.inf)
            return self.y_lower + self.wall_lower * softplus_inverse(u)

    def log_factor_np(self, alpha):
        """log f(alpha), NumPy (host side: unconstrain)."""
        alpha = np.asarray(alpha, dtype=float)
        outside = np.where(alpha >= 0 if self.code == "code1" else alpha >= 1, alpha * self.log_hi, -alpha * self.log_lo)
        if self.code == "code1":
            return outside
        a = np.clip(alpha, -1.0, 1.0)
        c = self.coefficients
        polynomial = 1.0 + a * (c[:, 0] + a * (c[:, 1] + a * (c[:, 2] + a * (c[:, 3] + a * (c[:, 4] + a * c[:, 5])))))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.abs(alpha) < 1.0, np.log(polynomial), outside)

    def slope(self, alpha):
        """d log f / d alpha, traced."""
        from bayeshf.interpolation import _code4_value_and_slope

        if self.code == "code1":
            return jnp.where(alpha >= 0, self.log_hi, -self.log_lo)
        return _code4_value_and_slope(alpha, self.log_hi, self.log_lo, self.coefficients)[1]

    def alpha(self, z):
        """alpha = f^-1(y) of the sampled coordinate z (y = :meth:`to_y`), traced, with the exact derivative
        1 / (y f'(alpha) / f) (custom JVP); on the box (far out on a wall the inverse rounds past its end)."""
        return jnp.clip(_alpha_of_yield(self, self.to_y(z)), self.alpha_lower, self.alpha_upper)

    def log_jacobian(self, z):
        """log |d alpha / d z| summed: the walls' log dy/dz and log |d alpha / d y|."""
        y = self.to_y(z)
        alpha = _alpha_of_yield(self, y)
        terms = self.log_wall_slope(z) - jnp.log(jnp.maximum(y, 1e-300)) - jnp.log(jnp.abs(self.slope(alpha)))
        return jnp.sum(terms, axis=-1)

    def unconstrain(self, alpha, xp=np):
        """The sampled coordinate z of ``alpha`` (NumPy or traced)."""
        if xp is np:
            return self.to_z(np.exp(self.log_factor_np(np.asarray(alpha, dtype=float))))
        from bayeshf.interpolation import normsys_log_factors

        y = jnp.exp(normsys_log_factors(alpha, self.log_hi, self.log_lo, self.coefficients, self.code))
        return self.to_z(y, jnp)


def _inverse_log_factor(ymap: YieldMap, w):
    """alpha with log f(alpha) = w (no derivative rule: see _alpha_of_yield)."""
    from bayeshf.interpolation import _code4_value_and_slope

    upper_branch, lower_branch = w / ymap.log_hi, -w / ymap.log_lo
    if ymap.code == "code1":
        return jnp.where((w >= 0) == (ymap.log_hi > 0), upper_branch, lower_branch)
    # where w lies against log f(+1) = log hi and log f(-1) = log lo (f monotone: either order)
    t = (w - ymap.log_lo) / (ymap.log_hi - ymap.log_lo)
    a = jnp.clip(jnp.where(t >= 0.5, upper_branch, lower_branch), -1.0, 1.0)
    for _ in range(_YIELD_NEWTON_STEPS):
        value, slope = _code4_value_and_slope(a, ymap.log_hi, ymap.log_lo, ymap.coefficients)
        a = jnp.clip(a - (value - w) / slope, -1.0, 1.0)
    return jnp.where(t >= 1.0, upper_branch, jnp.where(t <= 0.0, lower_branch, a))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _alpha_of_yield(ymap: YieldMap, y):
    return _inverse_log_factor(ymap, jnp.log(jnp.maximum(y, 1e-300)))


@_alpha_of_yield.defjvp
def _alpha_of_yield_jvp(ymap, primals, tangents):
    (y,), (dy,) = primals, tangents
    alpha = _alpha_of_yield(ymap, y)
    return alpha, dy / (jnp.maximum(y, 1e-300) * ymap.slope(alpha))


def main_log_likelihood(model, theta):
    """The main Poisson term of ``model`` at ``theta``, traced: pyhf's wherever every bin's term is within
    HOLE_DEPTH (K) of its maximum, finite everywhere with a finite gradient.

    Interpolation can make a bin's expected count zero or negative inside the parameter box (a histosys
    whose variations both lie below the nominal, extrapolated linearly by code0/code2/code4p), where
    n log(lambda) is -inf or NaN, as in pyhf, and approaching it the log barrier n log(lambda) stiffens as
    n / lambda^2: a leapfrog step that strays there blows up (pyhf validation's coupledhisto: 1 divergent
    transition in 4000-6000 on seeds 3, 8, 19 of 0-19). Below c = n exp(-1 - K / n), where the term has
    fallen at least K below its maximum at lambda = n, it continues on its tangent at c (value and slope
    matched; linear, so trajectories turn back): the density there is below exp(-K) of the bin's peak, as
    it was. Bins with n = 0 keep pyhf's -lambda (finite everywhere). The fit does not use this.
    """
    from jax.scipy.special import gammaln, xlogy

    rate = model.expected_counts(theta)
    observed = model.arrays.observed
    counted = observed > 0
    # c = n exp(-1 - K / n): n log c - c = n log n - n - K - c, at least K below the maximum at c = n
    floor = jnp.where(counted, observed * jnp.exp(-1.0 - HOLE_DEPTH / jnp.where(counted, observed, 1.0)), 1.0)
    floor = jnp.maximum(floor, np.finfo(np.float64).tiny)  # n ~ 1e-8 underflows c to 0: n / c, the slope, is inf
    above = rate >= floor
    safe = jnp.where(above, rate, floor)  # the unselected branch stays finite, so does its gradient
    tangent = jnp.where(above, 0.0, (observed / floor - 1.0) * (rate - floor))
    term = jnp.where(counted, xlogy(observed, safe) - safe + tangent, -rate)
    return jnp.sum(term - gammaln(observed + 1.0))


def yield_map(model, prior_set: PriorSet, free_index: np.ndarray) -> YieldMap | None:
    """The normsys parameters to sample as yield factors: free, with a monotone factor whose dominant entry
    (most Fisher information in the nominal main bins) moves by YIELD_MIN_EFFECT per unit alpha, and at
    least YIELD_MIN_INFORMATION in all; None if there are none (or SAMPLE_YIELDS is off)."""
    arrays = getattr(model, "arrays", None)
    if not SAMPLE_YIELDS or arrays is None or not len(np.asarray(arrays.normsys_param)):
        return None
    code = model.codes["normsys"]
    param = np.asarray(arrays.normsys_param)
    segment = np.asarray(arrays.normsys_segment)
    log_hi, log_lo = np.asarray(arrays.normsys_log_hi), np.asarray(arrays.normsys_log_lo)
    coefficients = np.asarray(arrays.normsys_coefficients)
    nominal = np.asarray(model.nominal)
    total = np.maximum(nominal.sum(axis=0), 1e-300)
    n_channels = len(model.channels)
    slices = [model.channel_slices[c] for c in model.channels]
    slope0 = coefficients[:, 0] if code == "code4" else 0.5 * (log_hi - log_lo)
    information = np.empty(param.size)
    for e in range(param.size):
        sample, channel = divmod(int(segment[e]), n_channels)
        rates = nominal[sample, slices[channel]]
        information[e] = np.sum((rates * slope0[e]) ** 2 / total[slices[channel]])
    position = {int(k): i for i, k in enumerate(free_index)}
    chosen = []
    for k in np.unique(param):
        if int(k) not in position:
            continue
        entries = np.flatnonzero(param == k)
        e = entries[np.argmax(information[entries])]
        effect = max(abs(log_hi[e]), abs(log_lo[e]))
        if (information[entries].sum() < YIELD_MIN_INFORMATION or effect < YIELD_MIN_EFFECT
                or not np.isfinite(effect) or (log_hi[e] > 0) != (log_lo[e] < 0)):
            continue
        if code == "code4":  # the polynomial must be monotone on [-1, 1] for the inverse to exist
            grid = np.linspace(-1.0, 1.0, 201)
            c = coefficients[e]
            slope = sum((i + 1) * c[i] * grid ** i for i in range(6))
            if np.any(slope * np.sign(log_hi[e]) <= 0):
                continue
        chosen.append((position[int(k)], e))
    if not chosen:
        return None
    index = np.array([i for i, _ in chosen])
    entry = np.array([e for _, e in chosen])
    return YieldMap(index, log_hi[entry], log_lo[entry], coefficients[entry], code,
                    prior_set.lower[free_index[index]], prior_set.upper[free_index[index]])


class Posterior:
    """Log posterior of ``model`` under ``prior_set`` (default: the derived priors).

    Attributes: ``ndim`` (number of free parameters), ``free_index`` (their
    positions in the full parameter vector), ``free_names``,
    ``initial_position`` (unconstrained image of the model's inits).
    Functions (jittable): ``logdensity_fn(z)``, ``constrain(z)`` -> full
    parameter vector, ``unconstrain(theta)`` -> z, ``log_posterior(theta)``
    (constrained, no Jacobian: pyhf's logpdf + const for the default priors).
    """

    def __init__(self, model, prior_set: PriorSet | None = None):
        self.model = model
        self.prior_set = prior_set if prior_set is not None else build_priors(model)
        ps = self.prior_set
        self.free_index = np.asarray(ps.free_index, dtype=int)
        self.ndim = int(self.free_index.size)
        self.free_names = [ps.names[i] for i in self.free_index]
        lo, hi = ps.lower[self.free_index], ps.upper[self.free_index]
        flat = np.array([ps.entries[i].family in PROBIT_FAMILIES for i in self.free_index], dtype=bool)
        kind = transforms.codes(lo, hi, probit=flat)
        self.yields = yield_map(model, ps, self.free_index)
        if self.yields is not None:  # their z is the yield factor itself: no other transform
            kind[self.yields.index] = transforms.IDENTITY
        self.bounds = transforms.Bounds(lo, hi, kind)
        #: full parameter vector with the fixed values in place and zeros elsewhere
        self.fixed_base = np.where(ps.fixed, ps.fixed_values, 0.0)
        init = np.asarray(model.init, dtype=float)
        self.theta_init = np.where(ps.fixed, self.fixed_base, init)
        self.initial_position = np.asarray(self.unconstrain(np.asarray(self.theta_init, dtype=float)))
        self.logdensity_fn = self._logdensity

    # -- transforms ---------------------------------------------------------
    def constrain_free(self, z):
        """Free parameters on their support from ``z`` (..., ndim)."""
        out = self.bounds.constrain(z)
        if self.yields is not None:
            out = out.at[..., self.yields.index].set(self.yields.alpha(z[..., self.yields.index]))
        return out

    def constrain(self, z):
        """Full parameter vector (..., npars) from ``z`` (..., ndim); fixed ones at their value."""
        z = jnp.asarray(z)
        if self.ndim == self.fixed_base.shape[0]:  # nothing fixed: no scatter needed
            return self.constrain_free(z)
        base = jnp.broadcast_to(jnp.asarray(self.fixed_base), z.shape[:-1] + self.fixed_base.shape)
        return base.at[..., self.free_index].set(self.constrain_free(z))

    def unconstrain(self, theta):
        """``z`` (..., ndim) from a full parameter vector; points on a bound map to +-inf.

        NumPy in, NumPy out (no eager JAX dispatch, which compiles every operation on first use).
        """
        xp = np if isinstance(theta, (np.ndarray, list, tuple, float)) else jnp
        x = xp.asarray(theta)[..., self.free_index]
        z = self.bounds.unconstrain(x, xp)
        if self.yields is not None:
            index = self.yields.index
            if xp is np:
                z = np.array(z, dtype=float)
                z[..., index] = self.yields.unconstrain(np.asarray(x)[..., index])
            else:
                z = z.at[..., index].set(self.yields.unconstrain(x[..., index], jnp))
        return z

    def log_jacobian(self, z):
        """log |d theta / d z| summed over the free parameters."""
        total = self.bounds.log_jacobian(z)
        if self.yields is not None:
            total = total + self.yields.log_jacobian(z[..., self.yields.index])
        return total

    # -- densities ----------------------------------------------------------
    def log_posterior(self, theta):
        """Unnormalised log posterior at a full parameter vector (no Jacobian)."""
        return self.model.log_likelihood(theta) + self.prior_set.log_prob(theta)

    def _logdensity(self, z):
        theta = self.constrain(z)
        return (main_log_likelihood(self.model, theta) + self.prior_set.log_prob(theta, check_support=False)
                + self.log_jacobian(z))

    def with_model(self, model) -> "Posterior":
        """The same posterior (priors, transforms) with another model of the same structure (e.g. other data)."""
        new = copy.copy(self)
        for cached in ("_laplace", "_whitenings", "_replicas"):  # derived from the old model
            new.__dict__.pop(cached, None)
        new.model = model
        new.logdensity_fn = new._logdensity
        return new

    @property
    def structure(self) -> "Structure":
        """Hashable key for compiled programs: equal for posteriors sharing this prior set."""
        return Structure(self)

    def clip_inside(self, theta, margin: float = 1e-6):
        """Move ``theta`` strictly inside the support (relative ``margin`` of the width)."""
        ps = self.prior_set
        theta = np.array(theta, dtype=float)
        lo, hi = ps.lower.copy(), ps.upper.copy()
        width = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
        free = ~ps.fixed
        theta[free] = np.clip(theta[free], (lo + margin * width)[free], (hi - margin * width)[free])
        return theta


class Structure:
    """Static jit argument standing for a posterior's priors and transforms.

    Compiled functions take ``(structure, model, x)``: the model is a traced
    pytree argument, so posteriors that share a prior set and differ only in
    data (``model.with_data``) reuse one compiled program. The template holds
    no model (nor what was derived from one), so caches keyed on structures
    keep no model's arrays alive.
    """

    __slots__ = ("template",)

    def __init__(self, posterior: Posterior):
        self.template = posterior.with_model(None)

    def __hash__(self) -> int:
        return hash(id(self.template.prior_set))

    def __eq__(self, other) -> bool:
        return isinstance(other, Structure) and other.template.prior_set is self.template.prior_set

    def bind(self, model) -> Posterior:
        return self.template.with_model(model)
