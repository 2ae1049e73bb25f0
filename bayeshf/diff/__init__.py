"""Differentiable inference: profiled NLL, q0/Z0, q_mu, CLs and upper limits as functions of the yields.

Every function takes a compiled model and ``yields``, a dict {sample: (nmain,)
array} (all samples or a subset; :meth:`HistFactoryModel.sample_yields` gives
the nominal ones), and is traceable: ``jax.grad``, ``jax.jacrev``, ``jax.vmap``
and ``jax.jit`` pass through it. The profiled fits run inside JAX
(:mod:`bayeshf.diff.solve`) and are differentiated implicitly, never through
their iterations:

- profiled NLL values by the envelope theorem: ``dV/dy = dNLL/dy`` at the fit;
- the Asimov data (a conditional fit at mu = 0 for CLs, mu = 1 for the expected
  Z0) through the fitted parameters by the implicit function theorem;
- the upper limit through the root of ``h(mu_up, y) = 0``:
  ``d mu_up / dy = -(dh/dy) / (dh/d mu)``.

The values follow :mod:`bayeshf.infer`'s conventions (asymptotic formulae of
Cowan et al. 2011, the model's own bounds and fixed parameters, pyhf's Asimov
data) and agree with it for the same yields. See docs/differentiable.md.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr, ndtri, xlogy

from bayeshf.diff.soft import soft_histogram
from bayeshf.diff.solve import (FitNotConvergedWarning, _hessian, argmin, at_argmin, at_minimum, box, guard, profiled,
                                warn_unless)
from bayeshf.diff.yields import with_yields, yield_structure
from bayeshf.errors import BayeshfError
from bayeshf.model import _expected_auxdata, _expected_counts

__all__ = [
    "FitNotConvergedWarning", "cls", "nll", "q0", "qmu", "qmu_tilde", "significance", "soft_histogram",
    "upper_limit", "with_yields",
]

_ROOT_MAXITER = 61  # evaluations, the start included


# -- objective and fits (traced) ------------------------------------------------------------


def _objective(x, theta):
    """twice_nll of ``x`` with the POI (one-hot ``onehot``) replaced by ``mu``, as a deviance.

    Each Poisson term is taken relative to its saturated value
    (``2 (nu - n + n log(n / nu))``) and the constants are left out, so the
    objective is O(number of bins) at the minimum rather than the sum of
    ``n log nu`` over large counts (about -1.6e8 for ATLAS ttbar, where a
    float64 comparison cannot see the last steps of a fit). The parts left out
    depend on the data only: they cancel in every test statistic and
    :func:`_constant` adds them back for the NLL itself.
    """
    model, observed, auxdata, onehot, mu = theta
    a, pars = model.arrays, x + onehot * (mu - x)
    rate = _expected_counts(a, model._static, pars)
    total = jnp.sum(_deviance(observed, rate))
    extended = jnp.concatenate([auxdata, jnp.zeros((1,), auxdata.dtype)])
    if a.normal_param.shape[0]:
        shift = pars - extended[a.normal_aux_index]
        total = total + 0.5 * jnp.sum(a.normal_weight * shift * shift)
    if a.poisson_param.shape[0]:
        # unconstrained entries get rate 1 and aux 0 (term 1, taken off), as the model's constraint
        offset = (a.poisson_factor_full == 0).astype(pars.dtype)
        aux = extended[a.poisson_aux_index]
        rate_aux = pars * a.poisson_factor_full + offset
        total = total + jnp.sum(_deviance(aux, rate_aux) - offset)
    return 2.0 * total


def _deviance(n, rate):
    """``rate - n - n log(rate / n)`` (``rate`` where n = 0), accurate near its minimum 0 at rate = n.

    As ``n (d - log1p(d))`` with ``d = (rate - n) / n``: the plain form cancels
    terms of size n log n (1e-13 noise at n ~ 100, where a fit's last steps
    change the value by less).
    """
    positive = n > 0
    n_safe = jnp.where(positive, n, 1.0)
    d = (rate - n) / n_safe
    return jnp.where(positive, n_safe * (d - jnp.log1p(d)), rate)


def _constant(model, observed, auxdata):
    """twice_nll minus :func:`_objective`: a function of the data (and the constraint widths) only."""
    a = model.arrays
    total = jnp.sum(gammaln(observed + 1.0) - xlogy(observed, observed) + observed) - a.normal_constant
    if a.poisson_param.shape[0]:
        aux = auxdata[a.poisson_aux_position]
        total = total + jnp.sum(gammaln(aux + 1.0) - xlogy(aux, aux) + aux)
    return 2.0 * total


class _Setup:
    """Static description of the fits of one model (bounds, fixed parameters, POI)."""

    def __init__(self, model, poi_floor: bool = False):
        free, lo, hi, init = box(model)
        if model.poi_index is None:
            raise BayeshfError(f"{model.label}: the model has no parameter of interest (load it with poi_name=...).")
        self.poi = int(model.poi_index)
        if not free[self.poi]:
            raise BayeshfError(f"{model.label}: the parameter of interest {model.poi_name!r} is fixed; "
                               "it must be free.")
        if poi_floor:  # q~: the POI estimate is bounded below by zero
            lo = lo.copy()
            lo[self.poi] = max(lo[self.poi], 0.0)
        self.free, self.lo, self.hi, self.init = free, lo, hi, init
        self.onehot = np.zeros(len(init))
        self.onehot[self.poi] = 1.0
        self.cond_free = free & (self.onehot == 0)

    def fit(self, model, data, mu=None, x0=None, what="free fit", solved=False):
        """(twice_nll at the minimum (envelope derivative), parameters, converged).

        ``solved``: ``x0`` is already the minimum (from the forward pass): checked, not fitted again.
        """
        observed, auxdata = data
        x0 = self.init if x0 is None else x0
        minimum = at_minimum if solved else profiled
        if mu is None:
            theta = (model, observed, auxdata, jnp.zeros_like(self.onehot), jnp.zeros(()))
            return minimum(_objective, x0, theta, self.free, self.lo, self.hi, what)
        mu = jnp.asarray(mu, dtype=jnp.float64)
        theta = (model, observed, auxdata, jnp.asarray(self.onehot), mu)
        value, x, ok = minimum(_objective, x0, theta, self.cond_free, self.lo, self.hi, what)
        return value, x + self.onehot * (mu - x), ok

    def asimov(self, model, data, mu, x0=None, solved=False):
        """Asimov data (main, aux) at the conditional fit of ``mu`` to ``data``, differentiable (IFT).

        ``solved``: ``x0`` is already that fit's minimum (checked, not fitted again).
        """
        theta = (model, data[0], data[1], jnp.asarray(self.onehot), jnp.asarray(mu, dtype=jnp.float64))
        x0 = self.init if x0 is None else x0
        x, ok = (at_argmin if solved else argmin)(_objective, x0, theta, self.cond_free, self.lo, self.hi)
        warn_unless(ok, "Asimov fit")
        x = x + self.onehot * (mu - x)
        counts = _expected_counts(model.arrays, model._static, x)
        aux = _expected_auxdata(model.arrays, model._static, x)
        return (guard(counts, ok), guard(aux, ok)), jax.lax.stop_gradient(x), ok

    def sigma(self, model, data, x):
        """Hessian estimate of the POI's standard deviation at ``x`` (a starting point only)."""
        theta = (model, data[0], data[1], jnp.zeros_like(self.onehot), jnp.zeros(()))
        h = _hessian(_objective)(x, theta)
        held = ~self.free
        h = jnp.where(held[:, None] | held[None, :], jnp.eye(len(self.init)), h)
        cov = 2.0 * jnp.linalg.inv(h)
        return jnp.sqrt(jnp.abs(cov[self.poi, self.poi]))


def _safe_sqrt(q):
    positive = q > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, q, 1.0)), 0.0)


def _prepare(model, yields, data):
    if yields:
        yield_structure(model)  # on the concrete model: cached for the traced one
    m = with_yields(model, yields)
    observed = m.arrays.observed if data is None else jnp.asarray(data, dtype=jnp.float64)
    return m, (observed, m.arrays.auxdata)


def _one_sided(setup, model, data, mu, kind, free_fit=None):
    """(q, free fit x) for ``kind`` 'q0' (mu = 0, zero when mu_hat <= 0) or 'qmu' (zero when mu_hat >= mu)."""
    v_free, x_free, ok = free_fit if free_fit is not None else setup.fit(model, data)
    v_mu, _, _ = setup.fit(model, data, mu, x0=x_free, what="conditional fit")
    muhat = x_free[setup.poi]
    t = jnp.maximum(v_mu - v_free, 0.0)
    clipped = (muhat <= 0.0) if kind == "q0" else (muhat >= mu)
    return jnp.where(clipped, 0.0, t), x_free


def _asimov_q(setup, model, data_a, x_a, mu, x0=None, solved=False):
    """q_mu on Asimov data generated at x_a (whose POI is 0): the free fit is x_a itself."""
    theta = (model, data_a[0], data_a[1], jnp.zeros_like(setup.onehot), jnp.zeros(()))
    v_free = _objective(x_a, theta)
    v_mu, x_mu, _ = setup.fit(model, data_a, mu, x0=x_a if x0 is None else x0, what="Asimov conditional fit",
                              solved=solved)
    return jnp.maximum(v_mu - v_free, 0.0), x_mu


# -- public functions -----------------------------------------------------------------------


def nll(model, yields: Mapping[str, Any] | None = None, poi_value=None, *, data=None):
    """Profiled negative log-likelihood: min over the free parameters (POI fixed at ``poi_value`` if given).

    Equals ``bayeshf.infer.fit(model).twice_nll / 2`` (or the conditional fit's)
    for a model built with these yields. Differentiated by the envelope theorem.
    """
    return _nll_jit(model, yields, poi_value, data)


@jax.jit
def _nll_jit(model, yields, poi_value, data):
    m, d = _prepare(model, yields, data)
    setup = _Setup(m)
    free = _Setup(m) if poi_value is None else setup
    value, _, _ = free.fit(m, d, poi_value)
    return 0.5 * (value + _constant(m, *d))


def q0(model, yields: Mapping[str, Any] | None = None, *, expected: bool = False, data=None):
    """Discovery test statistic q0 (profiled, one-sided: 0 when mu_hat <= 0, with a zero gradient).

    ``expected=True``: q0 on the Asimov data of mu = 1 (the median expected q0).
    ``data``: main-bin counts to use instead of the model's observed ones (traced).
    """
    return _q0_jit(model, yields, data, expected)


@functools.partial(jax.jit, static_argnums=(3,))
def _q0_jit(model, yields, data, expected):
    m, d = _prepare(model, yields, data)
    setup = _Setup(m)
    if expected:
        d, _, _ = setup.asimov(m, d, 1.0)
    q, _ = _one_sided(setup, m, d, 0.0, "q0")
    return q


def significance(model, yields: Mapping[str, Any] | None = None, *, expected: bool = False, data=None):
    """Discovery significance Z0 = sqrt(q0) (observed; ``expected=True``: median expected); 0 when clipped."""
    return _safe_sqrt(q0(model, yields, expected=expected, data=data))


def qmu(model, yields: Mapping[str, Any] | None = None, poi_value=1.0, *, data=None):
    """Profiled q_mu at ``poi_value`` (one-sided: 0 when mu_hat >= mu), the POI within the model's bounds."""
    return _qmu_jit(model, yields, poi_value, data, False)


def qmu_tilde(model, yields: Mapping[str, Any] | None = None, poi_value=1.0, *, data=None):
    """Profiled q~_mu at ``poi_value``: as :func:`qmu` with the POI estimate bounded below by 0."""
    return _qmu_jit(model, yields, poi_value, data, True)


@functools.partial(jax.jit, static_argnums=(4,))
def _qmu_jit(model, yields, poi_value, data, tilde):
    m, d = _prepare(model, yields, data)
    q, _ = _one_sided(_Setup(m, poi_floor=tilde), m, d, poi_value, "qmu")
    return q


def _cls_parts(setup, m, d, data_a, x_a, mu, free_fit, warm=(None, None), solved=False):
    """(CLs_obs, CLs_exp median, q_obs, q_A, warm starts) at ``mu`` (q~ statistic)."""
    v_free, x_free, _ = free_fit
    v_mu, x_mu, _ = setup.fit(m, d, mu, x0=x_free if warm[0] is None else warm[0], what="conditional fit",
                              solved=solved)
    muhat = x_free[setup.poi]
    q = jnp.where(muhat >= mu, 0.0, jnp.maximum(v_mu - v_free, 0.0))
    q_a, x_mu_a = _asimov_q(setup, m, data_a, x_a, mu, warm[1], solved)
    sqrt_q, sqrt_qa = _safe_sqrt(q), _safe_sqrt(q_a)
    beyond = sqrt_q > sqrt_qa
    shifted = jnp.where(beyond, (q - q_a) / (2.0 * jnp.where(beyond, sqrt_qa, 1.0)), sqrt_q - sqrt_qa)
    cls_obs = ndtr(-(shifted + sqrt_qa)) / ndtr(-shifted)
    cls_exp = ndtr(-sqrt_qa) / 0.5
    return cls_obs, cls_exp, q, q_a, (x_mu, x_mu_a)


def cls(model, yields: Mapping[str, Any] | None = None, poi_value=1.0, *, expected: bool = False, data=None):
    """Asymptotic CLs at ``poi_value`` with the q~ statistic: observed, or the median expected (``expected=True``).

    Equals ``bayeshf.infer.hypotest(model, poi_value)``'s ``CLs_obs`` (``CLs_exp[2]``).
    """
    return _cls_jit(model, yields, poi_value, data, expected)


@functools.partial(jax.jit, static_argnums=(4,))
def _cls_jit(model, yields, poi_value, data, expected):
    m, d = _prepare(model, yields, data)
    setup = _Setup(m, poi_floor=True)
    data_a, x_a, _ = setup.asimov(m, d, 0.0)
    if expected:
        q_a, _ = _asimov_q(setup, m, data_a, x_a, poi_value)
        return ndtr(-_safe_sqrt(q_a)) / 0.5
    cls_obs, _, _, _, _ = _cls_parts(setup, m, d, data_a, x_a, poi_value, setup.fit(m, d))
    return cls_obs


def upper_limit(model, yields: Mapping[str, Any] | None = None, *, expected: bool = False, level: float = 0.05,
                data=None):
    """95% (``level`` 0.05) CLs upper limit on the POI, q~ statistic: observed, or median expected.

    Found by safeguarded Newton steps inside JAX; differentiated through the
    implicit function ``h(mu_up, y) = 0`` (no derivative through the root
    finder's iterations). Equals ``bayeshf.infer.upper_limit(model)``'s ``obs`` (``exp[2]``).
    """
    if not 0.0 < level < 1.0:
        raise BayeshfError(f"the CLs level must lie in (0, 1), got {level}.")
    return _limit_jit(model, yields, data, bool(expected), float(level))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _limit_jit(model, yields, data, expected, level):
    m, d = _prepare(model, yields, data)
    return _limit(expected, level, m, d)


def _limit_h(expected, level, setup, m, d, mu, warm, asimov=None, solved=False):
    """The increasing function of mu whose root is the limit; differentiable in (m, d) when ``asimov`` is None.

    ``warm``: starting points (conditional fit, Asimov conditional fit, free fit, Asimov fit);
    ``solved``: they are the fits' minima at ``mu`` (the backward pass: derivatives without fitting again).
    """
    data_a, x_a, _ = asimov if asimov is not None else setup.asimov(m, d, 0.0, x0=warm[3], solved=solved)
    if expected:
        q_a, x_mu_a = _asimov_q(setup, m, data_a, x_a, mu, warm[1], solved)
        target = -ndtri(level * 0.5)
        return _safe_sqrt(q_a) - target, (warm[0], x_mu_a)
    free_fit = setup.fit(m, d, x0=warm[2], solved=solved)
    cls_obs, _, _, _, new_warm = _cls_parts(setup, m, d, data_a, x_a, mu, free_fit, warm[:2], solved)
    return ndtri(level) - ndtri(jnp.maximum(cls_obs, 1e-300)), new_warm


def _root(expected, level, m, d):
    """(mu_up, converged, warm starts) by Newton steps safeguarded by bisection on a bracket."""
    setup = _Setup(m, poi_floor=True)
    floor = max(setup.lo[setup.poi], 0.0)
    ceil = setup.hi[setup.poi]
    data_a, x_a, _ = setup.asimov(m, d, 0.0)
    data_a = jax.lax.stop_gradient(data_a)
    x_free = x_a if expected else setup.fit(m, d)[1]
    sigma = setup.sigma(m, data_a, x_a)
    start = floor + (-ndtri(level * 0.5)) * sigma
    if not expected:
        start = jnp.maximum(x_free[setup.poi], floor) + (-ndtri(level * 0.5)) * sigma
    start = jnp.clip(start, floor + 1e-6 * (ceil - floor), ceil)

    def h_and_slope(mu, warm):
        def h(mu_):
            value, new_warm = _limit_h(expected, level, setup, m, d, mu_, (*warm, x_free, x_a),
                                       asimov=(data_a, x_a, None))
            return value, new_warm
        (value, new_warm), slope = jax.value_and_grad(h, has_aux=True)(mu)
        return value, slope, new_warm

    def cond(state):
        return (~state[-1]) & (state[-2] < _ROOT_MAXITER)

    # evaluate the candidate, then propose the next one (the fits appear once in the program: each copy compiles)
    def body(state):
        candidate, mu, h, lo_b, hi_b, warm, it, done = state
        h_new, s_new, warm = h_and_slope(candidate, warm)
        done = (jnp.abs(h_new) < 1e-12) | (jnp.abs(candidate - mu) < 1e-13 * (1.0 + jnp.abs(mu)))
        mu, h = candidate, h_new
        lo_b = jnp.where(h < 0, mu, lo_b)
        hi_b = jnp.where(h >= 0, mu, hi_b)
        newton = mu - h / s_new
        inside = (s_new > 0) & (newton > lo_b) & (newton < hi_b) & jnp.isfinite(newton)
        candidate = jnp.where(inside, newton, 0.5 * (lo_b + hi_b))
        return candidate, mu, h, lo_b, hi_b, warm, it + 1, done

    nan = jnp.asarray(jnp.nan)
    state = (start, nan, nan, jnp.asarray(floor), jnp.asarray(ceil), (x_free, x_a), 0, False)
    _, mu, h, _, _, warm, _, _ = jax.lax.while_loop(cond, body, state)
    ok = (jnp.abs(h) < 1e-8) & (mu < ceil)
    return mu, ok, (*warm, x_free, x_a)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _limit(expected, level, m, d):
    mu, ok, _ = _root(expected, level, jax.lax.stop_gradient(m), jax.lax.stop_gradient(d))
    warn_unless(ok, "upper-limit root finding")
    return mu


def _limit_fwd(expected, level, m, d):
    mu, ok, warm = _root(expected, level, m, d)
    warn_unless(ok, "upper-limit root finding")
    return mu, (mu, ok, warm, m, d)


def _limit_bwd(expected, level, residuals, ct):
    mu, ok, warm, m, d = residuals
    setup = _Setup(m, poi_floor=True)

    def h(mu_, m_, d_):  # at the forward pass's minima: envelope and implicit derivatives, no refits
        return _limit_h(expected, level, setup, m_, d_, mu_, warm, solved=True)[0]

    _, pullback = jax.vjp(h, mu, m, d)
    dh_dmu, m_bar, d_bar = pullback(jnp.ones(()))
    scale = -ct / dh_dmu * jnp.where(ok, 1.0, jnp.nan)

    def scaled(t):
        return t if t.dtype == jax.dtypes.float0 else t * scale

    return jax.tree_util.tree_map(scaled, m_bar), jax.tree_util.tree_map(scaled, d_bar)


_limit.defvjp(_limit_fwd, _limit_bwd)
