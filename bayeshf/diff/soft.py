"""Soft histograms: bin counts that are smooth functions of the events, the bin edges and the weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from bayeshf.errors import BayeshfError

METHODS = ("kde", "sigmoid")


def soft_histogram(x, edges, weights=None, bandwidth=None, method: str = "kde"):
    """Differentiable histogram of ``x`` in the bins ``edges`` (n + 1 increasing edges -> n counts).

    Each event spreads its weight over the bins by a smooth window of width ``bandwidth``:

    - ``"kde"``: a Gaussian kernel centred on the event, so bin i gets
      ``w * (Phi((e[i+1] - x) / h) - Phi((e[i] - x) / h))`` (relaxed's ``hist``);
    - ``"sigmoid"``: ``w * (sigmoid((x - e[i]) / h) - sigmoid((x - e[i+1]) / h))``.

    Both tend to the ordinary histogram as ``bandwidth`` -> 0, and an event far
    inside the range contributes its whole weight. ``bandwidth`` defaults to
    a fifth of the narrowest bin (held constant under differentiation).
    Derivatives in ``x``, ``edges`` and ``weights`` are JAX's.
    """
    if method not in METHODS:
        raise BayeshfError(f"soft_histogram: unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    x = jnp.asarray(x, dtype=jnp.float64)
    edges = jnp.asarray(edges, dtype=jnp.float64)
    if x.ndim != 1 or edges.ndim != 1 or edges.shape[0] < 2:
        raise BayeshfError("soft_histogram: x must be a 1-d array of events and edges a 1-d array of >= 2 edges.")
    weights = jnp.ones_like(x) if weights is None else jnp.asarray(weights, dtype=jnp.float64)
    if bandwidth is None:
        bandwidth = 0.2 * jax.lax.stop_gradient(jnp.min(jnp.diff(edges)))
    scaled = (edges[None, :] - x[:, None]) / bandwidth  # (events, edges)
    window = ndtr(scaled) if method == "kde" else jax.nn.sigmoid(scaled)
    return weights @ (window[:, 1:] - window[:, :-1])
