"""bayeshf.transforms: the fit's traced maps and the posterior's static ones agree, invert, and carry the
right log-Jacobian (against closed forms and finite differences)."""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats as st

import bayeshf  # noqa: F401  (float64)
import jax.numpy as jnp
from bayeshf import transforms

LO = np.array([-np.inf, 0.5, -np.inf, -2.0, 0.0])
HI = np.array([np.inf, np.inf, 3.0, 5.0, 10.0])
PROBIT = np.array([False, False, False, False, True])


def closed_form(z):
    return np.array([z[0], 0.5 + np.exp(z[1]), 3.0 - np.exp(z[2]), -2.0 + 7.0 * scipy.special.expit(z[3]),
                     10.0 * st.norm.cdf(z[4])])


def test_codes_follow_the_bounds():
    assert transforms.codes(LO, HI).tolist() == [transforms.IDENTITY, transforms.LOWER, transforms.UPPER,
                                                 transforms.LOGIT, transforms.LOGIT]
    assert transforms.codes(LO, HI, probit=PROBIT)[-1] == transforms.PROBIT


def test_fit_and_posterior_maps_agree_invert_and_have_the_right_jacobian():
    rng = np.random.default_rng(3)
    kind = transforms.codes(LO, HI, probit=PROBIT)
    bounds = transforms.Bounds(LO, HI, kind)
    for z in np.clip(rng.normal(size=(5, 5)) * 2, -4, 4):  # the probit loses digits further out
        theta = closed_form(z)
        np.testing.assert_allclose(np.asarray(bounds.constrain(jnp.asarray(z))), theta, rtol=1e-13)
        np.testing.assert_allclose(bounds.unconstrain(theta), z, rtol=1e-8, atol=1e-10)
        # the fit's codes stop at LOGIT: the first four parameters, traced and on the host
        fit_kind = transforms.codes(LO[:4], HI[:4])
        traced = transforms.constrain_traced(jnp.asarray(z[:4]), LO[:4], HI[:4], jnp.asarray(fit_kind))
        np.testing.assert_allclose(np.asarray(traced), theta[:4], rtol=1e-13)
        np.testing.assert_allclose(transforms.constrain_host(z[:4], LO[:4], HI[:4], fit_kind), theta[:4], rtol=1e-13)
        np.testing.assert_allclose(transforms.unconstrain_host(theta[:4], LO[:4], HI[:4], fit_kind), z[:4],
                                   rtol=1e-8, atol=1e-10)
        # log |d theta / d z| against central differences, parameter by parameter
        h = 1e-6
        slopes = [(closed_form(z + h * e)[i] - closed_form(z - h * e)[i]) / (2 * h) for i, e in enumerate(np.eye(5))]
        np.testing.assert_allclose(float(bounds.log_jacobian(jnp.asarray(z))), np.sum(np.log(np.abs(slopes))),
                                   rtol=1e-6)


def test_points_on_bounds_move_inside_for_the_fit():
    kind = transforms.codes(LO[1:4], HI[1:4])
    z = transforms.unconstrain_host(np.array([0.5, 3.0, 5.0]), LO[1:4], HI[1:4], kind)
    assert np.all(np.isfinite(z))
    theta = transforms.constrain_host(z, LO[1:4], HI[1:4], kind)
    assert 0.5 < theta[0] and theta[1] < 3.0 and theta[2] < 5.0
