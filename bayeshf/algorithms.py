"""The sampler names: an algorithm on bayeshf's kernel, or as ``blackjax-<name>`` on blackjax's.

Kept apart from :mod:`bayeshf.chains` (which needs JAX) so that the command line builds its parser
without importing JAX.
"""

from __future__ import annotations

#: the algorithms; each runs on bayeshf's kernel (bayeshf.kernels) or, as "blackjax-<name>", on blackjax's
ALGORITHMS = ("nuts", "hmc", "mh")
SAMPLERS = ALGORITHMS + tuple(f"blackjax-{name}" for name in ALGORITHMS)


def algorithm(sampler: str) -> str:
    """The algorithm a sampler name runs ("blackjax-nuts" -> "nuts")."""
    return sampler.removeprefix("blackjax-")
