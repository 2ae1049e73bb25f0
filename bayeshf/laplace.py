"""The Laplace approximation of a posterior: its mode, the Hessian there, and the MAP point.

:func:`find_mode_unconstrained` is where chains start and what whitens them
(the mode of ``logdensity_fn`` in the unconstrained coordinates and the
inverse negative Hessian there); :func:`find_map` is the maximum of the
posterior in the parameters themselves (no Jacobian), marked on corner
plots. The log-density is :mod:`bayeshf.posterior`'s; the programs here
take its :class:`~bayeshf.posterior.Structure` as a static argument, so
posteriors differing only in data share them.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from bayeshf.newton import bounded_newton
from bayeshf.posterior import Posterior, Structure
from bayeshf.stored import stored_jit


@stored_jit(static_argnums=0)
def _z_value_and_grad(structure: Structure, model, z):
    return jax.value_and_grad(structure.bind(model).logdensity_fn)(z)


@stored_jit(static_argnums=0)
def _z_hessian_fd(structure: Structure, model, z):
    """Hessian of logdensity_fn by central differences of the gradient, all 2d gradients in one vmapped call.

    Compiles like one gradient program (jax.hessian's forward-over-reverse one compiles longer).
    """
    grad = jax.grad(structure.bind(model).logdensity_fn)
    h = 1e-5
    steps = h * jnp.eye(z.shape[0], dtype=z.dtype)
    difference = jax.vmap(lambda s: grad(z + s) - grad(z - s))(steps) / (2 * h)
    return 0.5 * (difference + difference.T)


@stored_jit(static_argnums=0)
def _theta_value_and_grad(structure: Structure, model, theta):
    return jax.value_and_grad(structure.bind(model).log_posterior)(theta)


def hessian_fd(value_and_grad, x: np.ndarray) -> np.ndarray:
    """Hessian by central differences of an (already compiled) gradient: 2 d gradient calls, no new compile."""
    x = np.asarray(x, dtype=float)
    d = x.size
    h = 1e-5
    hessian = np.empty((d, d))
    for i in range(d):
        step = np.zeros(d)
        step[i] = h
        g_plus = np.asarray(value_and_grad(x + step)[1])
        g_minus = np.asarray(value_and_grad(x - step)[1])
        hessian[:, i] = (g_plus - g_minus) / (2 * h)
    return 0.5 * (hessian + hessian.T)


#: the relative fall of the log-density a Newton step may make and still count: large models' log-densities
#: (cancelling Poisson terms of large counts) carry round-off far above the fit's 1e-13
ROUND_OFF = 1e-10


def _maximise(value_and_grad, hessian_fn, x, lower, upper, gtol: float, steps: int = 8):
    """:func:`bayeshf.newton.bounded_newton` on minus ``value_and_grad`` and minus ``hessian_fn``: the
    maximum of the density in [lower, upper] and minus its Hessian there."""
    def negative(p):
        value, grad = value_and_grad(p)
        return -value, -np.asarray(grad)

    result = bounded_newton(negative, lambda p: -np.asarray(hessian_fn(p)), np.array(x, dtype=float),
                            np.zeros(np.size(x), dtype=bool), lower, upper, steps=steps, rtol=ROUND_OFF,
                            gtol=gtol)
    return result.x, result.hessian


def _minimisation_objective(value_and_grad):
    """``x -> (-value, -gradient)`` for scipy's minimisers, with a huge finite value where the density is not finite."""

    def objective(x):
        value, grad = value_and_grad(x)
        return (-value, -grad) if np.isfinite(value) else (1e300, np.zeros_like(x))

    return objective


def find_map(posterior: Posterior, theta0=None, *, maxiter: int = 2000, polish: bool = True) -> np.ndarray:
    """Maximum a posteriori point on the constrained space (bounds respected).

    L-BFGS-B on -log_posterior(theta) over the free parameters, then damped
    Newton steps (finite-difference Hessian) to polish; with the flat
    reference priors this is the maximum-likelihood estimate.
    """
    from scipy.optimize import minimize

    free = posterior.free_index
    theta = np.array(posterior.theta_init if theta0 is None else theta0, dtype=float)
    theta = posterior.clip_inside(theta, 0.0)
    ps = posterior.prior_set
    structure = posterior.structure  # a property that builds a model-free copy: once, not per evaluation

    def value_and_grad(x):
        full = theta.copy()
        full[free] = x
        value, grad = _theta_value_and_grad(structure, posterior.model, full)  # NumPy in: no staging program
        return float(value), np.asarray(grad)[free]

    objective = _minimisation_objective(value_and_grad)

    lower, upper = ps.lower[free], ps.upper[free]
    bounds = [(None if not np.isfinite(a) else a, None if not np.isfinite(b) else b) for a, b in zip(lower, upper)]
    result = minimize(objective, theta[free], jac=True, method="L-BFGS-B", bounds=bounds,
                      options=dict(maxiter=maxiter, ftol=1e-15, gtol=1e-10, maxcor=30))
    x = result.x
    if polish and x.size <= 1000:
        x = _maximise(value_and_grad, lambda p: hessian_fd(value_and_grad, p), x, lower, upper, gtol=1e-9)[0]
    theta[free] = x
    return theta


#: up to this many free parameters the mode search is Newton's method alone (an L-BFGS start costs
#: more than it saves there); above, L-BFGS brings it close first
NEWTON_ONLY = 100


def find_mode_unconstrained(posterior: Posterior, z0=None, *, maxiter: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """Mode of ``logdensity_fn`` in z and the Laplace covariance there (None if not positive definite).

    Used to start chains and to seed the mass matrix: the Jacobian keeps the
    mode away from the bounds, so it is always an interior point. Up to 1000
    free parameters: damped Newton with a finite-difference Hessian (scale-free,
    so a few iterations even when widths differ by orders of magnitude), from an
    L-BFGS start above NEWTON_ONLY parameters; beyond 1000, L-BFGS and no
    covariance.
    """
    z = np.asarray(posterior.initial_position if z0 is None else z0, dtype=float)
    z = np.where(np.isfinite(z), z, 0.0)
    structure = posterior.structure  # a property that builds a model-free copy: once, not per evaluation

    def value_and_grad(x):
        # NumPy straight into the jitted function and NumPy before float: both skip an eager JAX dispatch
        value, grad = _z_value_and_grad(structure, posterior.model, np.asarray(x, dtype=np.float64))
        return float(np.asarray(value)), np.asarray(grad)

    objective = _minimisation_objective(value_and_grad)

    if posterior.ndim > NEWTON_ONLY:  # scipy.optimize only where it runs (an import of a few tenths of a second)
        from scipy.optimize import minimize
    if posterior.ndim > 1000:
        result = minimize(objective, z, jac=True, method="L-BFGS-B", options=dict(maxiter=maxiter, maxcor=30))
        return result.x, None
    if posterior.ndim > NEWTON_ONLY:
        # a cheap approach first: each Newton step costs a finite-difference Hessian (d gradients) and a
        # solve; from the L-BFGS point one or a few remain (docs/sampling.md)
        z = minimize(objective, z, jac=True, method="L-BFGS-B", options=dict(maxiter=200, maxcor=30)).x

    def hessian_fn(x):
        return np.asarray(_z_hessian_fd(structure, posterior.model, np.asarray(x, dtype=np.float64)))

    unbounded = np.full(z.size, np.inf)
    z, curvature = _maximise(value_and_grad, hessian_fn, z, -unbounded, unbounded, gtol=1e-8, steps=50)
    try:
        covariance = np.linalg.inv(curvature)
        covariance = 0.5 * (covariance + covariance.T)
        np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        covariance = None
    return z, covariance
