"""Peer runner: blackjax samplers on pyhf's own jax log-density, written the way a user would.

The target is pyhf's ``logpdf`` in the parameter space, flat inside the
suggested bounds (``-inf`` outside, so proposals leaving the box are
rejected): the thesis' Python+BAT setup with the likelihood evaluated by pyhf,
but compiled as one XLA program (window adaptation + draws, chains vmapped,
draws scanned). Fixed parameters are held at their inits.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from benchmarks.peers import require

MH_SCALE = 2.38  # MH: proposal sigma = MH_SCALE / sqrt(d) x Laplace widths at the init (Roberts et al. 1997)


def build_runner(spec: dict[str, Any], sampler: str, *, chains: int, warmup: int, draws: int,
                 num_integration_steps: int = 16) -> tuple[Callable[[int], np.ndarray], list[str]]:
    """A function ``run(seed) -> draws (chains, draws, n_free)`` (jitted; first call compiles) and the free names."""
    require("blackjax")
    require("pyhf")
    import blackjax
    import jax
    import jax.numpy as jnp
    import pyhf

    pyhf.set_backend("jax", precision="64b")
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = jnp.asarray(workspace.data(model))
    init = np.asarray(model.config.suggested_init(), dtype=float)
    bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
    free = ~np.asarray(model.config.suggested_fixed(), dtype=bool)
    free_index = jnp.asarray(np.flatnonzero(free))
    names = [n for n, f in zip(model.config.par_names, free) if f]
    lo, hi = jnp.asarray(bounds[free, 0]), jnp.asarray(bounds[free, 1])
    full_init = jnp.asarray(init)

    def logdensity(position: jax.Array) -> jax.Array:
        pars = full_init.at[free_index].set(position)
        inside = jnp.all((position >= lo) & (position <= hi))
        value = model.logpdf(pars, data)[0]
        return jnp.where(inside, value, -jnp.inf)

    start = jnp.asarray(init[free])
    if sampler == "mh":  # Laplace widths at the init: sqrt(diag(inverse(-Hessian)))
        hessian = np.asarray(jax.hessian(logdensity)(start))
        try:
            widths = np.sqrt(np.abs(np.diag(np.linalg.inv(-hessian))))
        except np.linalg.LinAlgError:
            widths = np.full(start.shape, 0.1)
        widths = np.where(np.isfinite(widths) & (widths > 0), widths, 0.1)
        proposal_sigma = jnp.asarray(MH_SCALE / np.sqrt(max(1, start.size)) * widths)

    def one_chain(key: jax.Array) -> jax.Array:
        adapt_key, sample_key, jitter_key = jax.random.split(key, 3)
        # start slightly away from the init, clipped into the box
        position = jnp.clip(start + 0.01 * jax.random.normal(jitter_key, start.shape), lo, hi)
        if sampler == "mh":
            kernel = blackjax.additive_step_random_walk.normal_random_walk(logdensity, proposal_sigma)
            state = kernel.init(position)
            step = kernel.step
            total = warmup + draws
        else:
            algorithm = blackjax.nuts if sampler == "nuts" else blackjax.hmc
            extra = {} if sampler == "nuts" else {"num_integration_steps": num_integration_steps}
            adaptation = blackjax.window_adaptation(algorithm, logdensity, **extra)
            (state, parameters), _ = adaptation.run(adapt_key, position, num_steps=warmup)
            kernel = algorithm(logdensity, **parameters)
            step = kernel.step
            total = draws

        def body(state, key):
            state, _ = step(key, state)
            return state, state.position

        _, positions = jax.lax.scan(body, state, jax.random.split(sample_key, total))
        return positions[-draws:]

    run_all = jax.jit(lambda key: jax.vmap(one_chain)(jax.random.split(key, chains)))

    def run(seed: int) -> np.ndarray:
        return np.asarray(jax.block_until_ready(run_all(jax.random.PRNGKey(seed))))

    return run, names
