"""Interpolation of normsys factors and histosys shifts (HistFactory codes).

Conventions follow CERN-OPEN-2012-016 and pyhf 0.7 (normsys: code1, code4;
histosys: code0, code2, code4p), with alpha0 = 1.

Everything is vectorised over all modifiers of a type at once:

* normsys: one *entry* per (parameter, sample, channel) with scalar ``hi`` and
  ``lo`` factors; :func:`normsys_log_factors` returns the log of each entry's
  factor (the model sums them per sample and channel).
* histosys: every code is *linear in the templates* once alpha is known,
  ``delta = c_up(alpha) * (up - nom) + c_down(alpha) * (nom - down)``, so all
  shifts of a model are two matrix products of per-parameter coefficients with
  dense template tables. :func:`histosys_coefficients` returns ``c_up, c_down``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NORMSYS_CODES = ("code1", "code4")
HISTOSYS_CODES = ("code0", "code2", "code4p")
DEFAULT_CODES = {"normsys": "code4", "histosys": "code4p"}


def code4_coefficients(hi: np.ndarray, lo: np.ndarray, alpha0: float = 1.0) -> np.ndarray:
    """Host-side coefficients a_1..a_6 of the code4 polynomial, shape (n, 6).

    The polynomial ``1 + sum_i a_i alpha^i`` on |alpha| < alpha0 matches the
    exponential extrapolations ``hi^alpha`` and ``lo^-alpha`` in value, first
    and second derivative at alpha = +-alpha0 (six conditions, six unknowns).
    """
    hi = np.asarray(hi, dtype=float)
    lo = np.asarray(lo, dtype=float)
    a0 = alpha0
    # Rows: p(a0), p(-a0), p'(a0), p'(-a0), p''(a0), p''(-a0) as linear maps of a_1..a_6.
    powers = np.arange(1, 7)
    matrix = np.array(
        [
            a0**powers,
            (-a0) ** powers,
            powers * a0 ** (powers - 1),
            powers * (-a0) ** (powers - 1),
            powers * (powers - 1) * a0 ** np.maximum(powers - 2, 0),
            powers * (powers - 1) * (-a0) ** np.maximum(powers - 2, 0),
        ]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        up_a0 = hi**a0
        dn_a0 = lo**a0
        log_hi = np.log(hi)
        log_lo = np.log(lo)
        targets = np.stack(
            [
                up_a0 - 1.0,
                dn_a0 - 1.0,
                log_hi * up_a0,
                -log_lo * dn_a0,
                log_hi**2 * up_a0,
                log_lo**2 * dn_a0,
            ],
            axis=-1,
        )
    return np.linalg.solve(matrix, targets.T).T if len(hi) else np.zeros((0, 6))


def normsys_log_factors(alpha, log_hi, log_lo, coefficients, code: str):
    """Log of each normsys entry's factor, traced: ``alpha log hi`` above 1,
    ``-alpha log lo`` below -1, the log of the code4 polynomial in between."""
    if code == "code1":
        return jnp.where(alpha > 0, alpha * log_hi, -alpha * log_lo)
    if code == "code4":
        return _code4_log(alpha, log_hi, log_lo, coefficients)
    raise ValueError(f"unknown normsys interpolation code {code!r}")


def _code4_value_and_slope(alpha, log_hi, log_lo, c):
    """log factor and its derivative in alpha, elementwise (one fused loop on the device)."""
    inside = jnp.abs(alpha) < 1.0
    a = jnp.where(inside, alpha, 0.0)
    polynomial = 1.0 + a * (c[:, 0] + a * (c[:, 1] + a * (c[:, 2] + a * (c[:, 3] + a * (c[:, 4] + a * c[:, 5])))))
    slope = c[:, 0] + a * (2.0 * c[:, 1] + a * (3.0 * c[:, 2] + a * (4.0 * c[:, 3] + a * (5.0 * c[:, 4]
                                                                                          + a * 6.0 * c[:, 5]))))
    safe = jnp.where(inside, polynomial, 1.0)
    above = alpha >= 1.0
    value = jnp.where(inside, jnp.log(safe), jnp.where(above, alpha * log_hi, -alpha * log_lo))
    derivative = jnp.where(inside, slope / safe, jnp.where(above, log_hi, -log_lo))
    return value, derivative


@jax.custom_jvp
def _code4_log(alpha, log_hi, log_lo, coefficients):
    return _code4_value_and_slope(alpha, log_hi, log_lo, coefficients)[0]


@_code4_log.defjvp
def _code4_log_jvp(primals, tangents):
    # the derivative comes out of the same elementwise pass as the value: automatic differentiation of
    # the nested polynomial would keep every Horner stage alive for the backward pass (one kernel each).
    # Only alpha is differentiated: the up/down tables are data, and a derivative with respect to them
    # comes out as zero (no guard for symbolic-zero table tangents: it slows the gradient, docs/histfactory.md;
    # differentiating a model's arrays is not supported)
    value, derivative = _code4_value_and_slope(*primals)
    return value, derivative * tangents[0]


def histosys_coefficients(alpha, code: str):
    """Per-parameter weights ``(c_up, c_down)`` of the up and down shifts, traced."""
    if code == "code0":
        positive = alpha > 0
        return jnp.where(positive, alpha, 0.0), jnp.where(positive, 0.0, alpha)
    if code == "code2":
        # a = (du - dd)/2, b = (du + dd)/2 with du = up - nom, dd = nom - down.
        # Outside [-1, 1] this reproduces pyhf 0.7's vectorised code2 exactly:
        # (b + 2a)(alpha - 1) above and (b - 2a) alpha below (not continuous at
        # |alpha| = 1; kept for parity, documented in docs/statistics.md).
        above = alpha > 1
        below = alpha < -1
        inner_up = 0.5 * alpha * alpha + 0.5 * alpha
        inner_dn = -0.5 * alpha * alpha + 0.5 * alpha
        c_up = jnp.where(above, 1.5 * (alpha - 1), jnp.where(below, -0.5 * alpha, inner_up))
        c_dn = jnp.where(above, -0.5 * (alpha - 1), jnp.where(below, 1.5 * alpha, inner_dn))
        return c_up, c_dn
    if code == "code4p":
        above = alpha > 1
        below = alpha < -1
        square = alpha * alpha
        smooth = square * (square * (3.0 * square - 10.0) + 15.0)
        # alpha * S + smooth * A with S = (du + dd)/2, A = (du - dd)/16
        inner_up = 0.5 * alpha + smooth / 16.0
        inner_dn = 0.5 * alpha - smooth / 16.0
        c_up = jnp.where(above, alpha, jnp.where(below, 0.0, inner_up))
        c_dn = jnp.where(above, 0.0, jnp.where(below, alpha, inner_dn))
        return c_up, c_dn
    raise ValueError(f"unknown histosys interpolation code {code!r}")
