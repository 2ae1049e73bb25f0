"""The JAX log-density as a Python callable BAT.jl can call: numpy in, (value, gradient) out.

BAT's posterior on the JAX path is ``PosteriorMeasure(likelihood, prior)``
with the prior built from the same :class:`bayeshf.priors.PriorSet` as
Distributions.jl objects, so the callback the bridge passes is the *main
likelihood only* (``include_prior=False``): every term is counted once. With
``include_prior=True`` (the default, for any other caller) the callback is the
full log posterior ``log L_main(theta) + log prior(theta)``, equal to pyhf's
logpdf plus a constant under the default priors.

Both work on the *constrained* parameters: the full parameter vector in
``model.par_names`` order (fixed parameters included; their gradient entries
are returned and ignored by BAT). BAT applies its own transformation
(``PriorToNormal``) around it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bayeshf.errors import BayeshfError


class LogDensityCallback:
    """``callback(x) -> (float, np.ndarray float64)``: value and gradient at the parameter vector ``x``.

    ``value(x) -> float`` is the value alone (what random-walk MH needs).
    Both are jitted once (on the first call) and reused; ``calls`` counts
    evaluations (the benchmark reports it next to BAT's step count).
    """

    def __init__(self, logdensity: Callable, npars: int, description: str):
        import jax

        self._value = jax.jit(logdensity)
        self._value_and_grad = jax.jit(jax.value_and_grad(logdensity))
        self.npars = int(npars)
        self.description = description
        self.calls = 0

    def _vector(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.npars,):
            raise BayeshfError(f"the log-density callback takes {self.npars} parameters, got shape {x.shape}.")
        return x

    def __call__(self, x) -> tuple[float, np.ndarray]:
        value, grad = self._value_and_grad(self._vector(x))
        self.calls += 1
        return float(value), np.asarray(grad, dtype=np.float64)

    def value(self, x) -> float:
        """The log density alone at ``x``."""
        value = self._value(self._vector(x))
        self.calls += 1
        return float(value)

    def __repr__(self) -> str:
        return f"LogDensityCallback({self.description}, npars={self.npars})"


def callback_adapter(model, priors=None, *, include_prior: bool = True) -> LogDensityCallback:
    """Jitted value-and-gradient of ``model``'s log density on the constrained parameters.

    ``priors``: None (derived priors), a :class:`bayeshf.priors.PriorSet`, or
    what :func:`bayeshf.priors.build_priors` takes. ``include_prior=False``
    gives the main Poisson log-likelihood alone (what BAT's likelihood gets).
    """
    if include_prior:
        prior_set = _prior_set(model, priors)

        def logdensity(theta):
            return model.log_likelihood(theta) + prior_set.log_prob(theta)

        description = "log likelihood + log prior"
    else:
        def logdensity(theta):
            return model.log_likelihood(theta)

        description = "log likelihood (main Poisson term)"
    return LogDensityCallback(logdensity, model.npars, description)


def pyhf_callback_adapter(model) -> LogDensityCallback:
    """pyhf's main log-likelihood (jax backend) as a callback, for the thesis' BAT+pyhf comparison.

    Built from ``model.spec`` and ``model.measurement``; the pyhf backend is
    switched to jax only while the function is traced, then restored.
    """
    import jax.numpy as jnp
    import pyhf

    previous = pyhf.get_backend()
    pyhf.set_backend("jax", precision="64b")
    try:
        workspace = pyhf.Workspace(model.spec)
        pyhf_model = workspace.model(
            measurement_name=model.measurement,
            modifier_settings={kind: {"interpcode": code} for kind, code in model.codes.items()})
        data = jnp.asarray(np.asarray(model.observed, dtype=float))

        def logdensity(theta):
            return jnp.sum(pyhf_model.mainlogpdf(data, theta))

        callback = LogDensityCallback(logdensity, model.npars, "pyhf main log likelihood (jax)")
        init = np.asarray(model.init, dtype=float)
        callback(init), callback.value(init)  # trace both now, under the jax backend
        callback.calls = 0
    finally:
        pyhf.set_backend(previous[0], previous[1])
    return callback


def _prior_set(model, priors):
    from bayeshf.priors import PriorSet, build_priors

    return priors if isinstance(priors, PriorSet) else build_priors(model, priors)
