"""The compiled objective of the fit: twice_nll on an unconstrained space, with derivatives.

Bounds are removed by the smooth maps of :mod:`bayeshf.transforms` (scaled
logistic for a box, ``exp`` for a half line), whose codes are traced
arguments; fixed parameters enter as a traced mask and values. The model, a
JAX pytree, is an argument of module-level jitted functions, so its arrays are
not baked into the programs and JAX caches one compiled program per model
structure: conditional fits at any POI value, Asimov fits and refits never
recompile.
"""

from __future__ import annotations

import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayeshf import transforms
from bayeshf.stored import StoredJit, stored_jit

__all__ = ["compiled_functions", "fit_arguments", "DenseProducts"]

#: up to this many parameters, Hessian-vector products come from one dense Hessian per iterate
_DENSE_HVP_MAX_PARS = 1000
#: model-array elements times Hessian columns computed at once (about 400 MB of float64)
_HESSIAN_BUDGET = 50_000_000


def _x_of(z, fixed_mask, fixed_values, lo, hi, kind):
    return jnp.where(fixed_mask, fixed_values, transforms.constrain_traced(z, lo, hi, kind))


def _objective_z(model, z, data, fixed_mask, fixed_values, lo, hi, kind):
    return model.twice_nll(_x_of(z, fixed_mask, fixed_values, lo, hi, kind), data)


_grad_z = jax.grad(_objective_z, argnums=1)


@stored_jit
def _hvp_z(model, z, p, data, fixed_mask, *rest):
    tangent = jax.jvp(lambda zz: _grad_z(model, zz, data, fixed_mask, *rest), (z,), (p,))[1]
    return jnp.where(fixed_mask, p, tangent)


@stored_jit
def _hess_z(model, z, data, fixed_mask, *rest):
    h = jax.hessian(_objective_z, argnums=1)(model, z, data, fixed_mask, *rest)
    keep = ~fixed_mask
    h = jnp.where(keep[:, None] & keep[None, :], h, 0.0)
    return h + jnp.diag(fixed_mask.astype(h.dtype))


@stored_jit(static_argnums=0)
def _hess_z_batched(batch, model, z, data, fixed_mask, *rest):
    """Dense Hessian from Hessian-vector products, ``batch`` columns at a time (bounded memory)."""
    def column(v):
        return jax.jvp(lambda zz: _grad_z(model, zz, data, fixed_mask, *rest), (z,), (v,))[1]

    h = jax.lax.map(column, jnp.eye(z.shape[0], dtype=z.dtype), batch_size=batch)
    h = 0.5 * (h + h.T)
    keep = ~fixed_mask
    h = jnp.where(keep[:, None] & keep[None, :], h, 0.0)
    return h + jnp.diag(fixed_mask.astype(h.dtype))


_value_and_grad_z = StoredJit(jax.value_and_grad(_objective_z, argnums=1), name="bayeshf.objective._value_and_grad_z")
_asimov = StoredJit(lambda model, x: model.asimov_data(x), name="bayeshf.objective._asimov")


def fit_arguments(mask, fixed_values, lo, hi, kind) -> tuple[jax.Array, ...]:
    """The traced fit arguments after the parameters and data, with fixed dtypes: bool, float64 x 3, int64.

    ``jax.device_put`` of NumPy arrays, not ``jnp.asarray``: the latter compiles
    a small staging program per shape, which a cold process pays for.
    """
    return jax.device_put((np.asarray(mask, dtype=bool), np.asarray(fixed_values, dtype=np.float64),
                           np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64),
                           np.asarray(kind, dtype=np.int64)))


class _Compiled:
    """The jitted objective, gradient, Hessian-vector product and Hessian bound to one model.

    The model (a JAX pytree) is passed as an argument, so its arrays are not
    baked into the compiled programs and JAX's cache (keyed on the model's
    static structure) serves every fit of the model and of ``with_data`` copies.
    Functions of the original parameters reuse the unconstrained-space programs
    with the identity map (code IDENTITY), so a model compiles three programs in all.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        n = int(model.npars)
        # the same dtypes (and no weak types) as the arguments minimize() passes, or jit compiles twice
        self._identity = fit_arguments(np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n), np.ones(n),
                                       np.full(n, transforms.IDENTITY))
        # a dense Hessian carries one tangent per parameter through the model: bound its memory
        elements = model.array_size
        self.batch = int(max(1, min(n, _HESSIAN_BUDGET // max(elements, 1))))
        self.small = self.batch >= n and n <= _DENSE_HVP_MAX_PARS

    def value_and_grad_z(self, z, *args):
        return _value_and_grad_z(self.model, z, *args)

    def hvp_z(self, z, p, *args):
        return _hvp_z(self.model, z, p, *args)

    def hess_z(self, z, *args):
        if self.batch >= int(self.model.npars):
            return _hess_z(self.model, z, *args)
        return _hess_z_batched(self.batch, self.model, z, *args)

    def x_of(self, z, fixed_mask, fixed_values, lo, hi, kind) -> np.ndarray:
        """The original parameters of ``z`` (on the host)."""
        unit = transforms.constrain_host(z, np.asarray(lo), np.asarray(hi), np.asarray(kind))
        return np.where(np.asarray(fixed_mask), np.asarray(fixed_values), unit)

    def value_and_grad(self, x, data):
        """twice_nll and its gradient in the original parameters."""
        return _value_and_grad_z(self.model, x, data, *self._identity)

    def hessian(self, x, data):
        """Hessian of twice_nll in the original parameters."""
        return self.hess_z(x, data, *self._identity)

    def asimov_data(self, x):
        return _asimov(self.model, x)


#: the compiled functions in use, by model: an entry lives while its functions are in use (they hold
#: their model), so the cache itself keeps no model alive; JAX's own cache keeps the compiled programs
_IN_USE: "weakref.WeakValueDictionary[int, _Compiled]" = weakref.WeakValueDictionary()


def compiled_functions(model: Any) -> _Compiled:
    """The jitted functions of ``model`` (compiled on first use, cached by JAX per model structure)."""
    cached = _IN_USE.get(id(model))
    if cached is None or cached.model is not model:
        cached = _Compiled(model)
        _IN_USE[id(model)] = cached
    return cached


class DenseProducts:
    """Hessian-vector products from one dense JAX Hessian per iterate.

    For small models one vectorised ``jax.hessian`` costs about as much as a
    dozen separate products, while a Krylov solve asks for dozens; caching the
    dense matrix per iterate makes each product a host matrix-vector multiply.
    """

    def __init__(self, fns: "_Compiled", args: tuple) -> None:
        self.fns, self.args = fns, args
        self.z: np.ndarray | None = None
        self.h: np.ndarray | None = None

    def __call__(self, z: np.ndarray, p: np.ndarray) -> np.ndarray:
        if self.z is None or not np.array_equal(z, self.z):
            self.h = np.asarray(self.fns.hess_z(z, *self.args))
            self.z = np.array(z, copy=True)
        return self.h @ p


