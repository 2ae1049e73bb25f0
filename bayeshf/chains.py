"""The compiled chain program: blackjax kernels, window adaptation and the chunked scan.

``_program(structure, ...)`` returns two jitted functions: ``start`` (chain
states and adaptation state from starting points) and ``run_chunk`` (a
``lax.scan`` over a chunk of steps of a ``vmap`` over chains). Per-step flags
(:class:`StepFlags`) are scanned inputs, so warm-up and sampling share the one
program. The driver is :mod:`bayeshf.sampling`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayeshf.algorithms import ALGORITHMS, SAMPLERS, algorithm  # noqa: F401  (chains' names, as before)
from bayeshf.stored import StoredJit


class StepFlags(NamedTuple):
    """Per-step schedule fed to the scan (all scalars, same for every chain)."""

    adapt: Any         # update the step size / metric adaptation
    slow: Any          # slow window: accumulate the metric estimate
    window_end: Any    # end of a slow window: set a new metric, restart dual averaging
    warmup_end: Any    # last warm-up step: freeze the averaged step size


class Adaptation(NamedTuple):
    """Per-chain adaptation state."""

    dual_averaging: Any
    mass_matrix: Any
    step_size: Any
    inverse_mass_matrix: Any


class DualAveraging(NamedTuple):
    """blackjax's step-size dual averaging state (its fields), in a class of bayeshf's: the chain programs'
    outputs then unpickle without importing blackjax (bayeshf.stored)."""

    log_step_size: Any
    log_step_size_avg: Any
    step: Any
    avg_error: Any
    mu: Any


class Welford(NamedTuple):
    """blackjax's Welford accumulator state (its fields)."""

    mean: Any
    m2: Any
    sample_size: Any


class MassMatrix(NamedTuple):
    """blackjax's mass-matrix adaptation state (its fields)."""

    inverse_mass_matrix: Any
    wc_state: Welford


class Carry(NamedTuple):
    """What the scan carries from step to step (per chain)."""

    states: Any           # the kernels' states (kernels.HMCState / RWState; blackjax's for its kernels)
    adaptation: Adaptation
    keys: Any             # chain keys; step t uses fold_in(key, t)


class StepStats(NamedTuple):
    """What each step records (per chain)."""

    theta: Any            # constrained free parameters
    lp: Any               # log density (unconstrained, incl. Jacobian)
    acceptance_rate: Any
    diverging: Any
    energy: Any
    n_steps: Any
    tree_depth: Any
    step_size: Any


# --------------------------------------------------------------------------- kernels


def _kernel(logdensity_fn: Callable, sampler: str, max_tree_depth: int, num_integration_steps: int,
            dense: bool) -> tuple[Callable, Callable]:
    """(init(u) -> state, step(key, state, step_size, inverse_mass_matrix) -> (state, TransitionInfo))."""
    from bayeshf.kernels import TransitionInfo

    name = algorithm(sampler)
    if name in ("nuts", "hmc"):
        if sampler in ("nuts", "hmc"):  # bayeshf's kernels of blackjax's algorithms (bayeshf.kernels)
            from bayeshf.kernels import build_hmc_step, build_nuts_step, hmc_init

            init = functools.partial(hmc_init, logdensity_fn=logdensity_fn)
            if sampler == "nuts":
                return init, build_nuts_step(logdensity_fn, max_tree_depth)
            return init, build_hmc_step(logdensity_fn, num_integration_steps)
        import blackjax

        init = functools.partial(blackjax.mcmc.hmc.init, logdensity_fn=logdensity_fn)
        if name == "nuts":  # blackjax-nuts
            nuts = blackjax.mcmc.nuts.build_kernel()

            def step(key, state, step_size, imm):
                state, info = nuts(key, state, logdensity_fn, step_size, imm, max_num_doublings=max_tree_depth)
                return state, TransitionInfo(info.acceptance_rate, info.is_divergent, info.energy,
                                             info.num_integration_steps, info.num_trajectory_expansions)
        else:  # blackjax-hmc
            hmc = blackjax.mcmc.hmc.build_kernel()

            def step(key, state, step_size, imm):
                state, info = hmc(key, state, logdensity_fn, step_size, imm, num_integration_steps)
                return state, TransitionInfo(info.acceptance_rate, info.is_divergent, info.energy,
                                             jnp.asarray(num_integration_steps), jnp.asarray(0))
        return init, step

    if sampler == "mh":
        from bayeshf.kernels import build_mh_step, rw_init

        return functools.partial(rw_init, logdensity_fn=logdensity_fn), build_mh_step(logdensity_fn)
    from blackjax.mcmc import random_walk

    init = functools.partial(random_walk.init, logdensity_fn=logdensity_fn)
    additive = random_walk.build_additive_step()  # blackjax-mh

    def step(key, state, step_size, imm):
        if dense:
            factor = jnp.linalg.cholesky(imm)

            def move(k, position):
                return step_size * factor @ jax.random.normal(k, position.shape)
        else:
            scale = jnp.sqrt(imm)

            def move(k, position):
                return step_size * scale * jax.random.normal(k, position.shape)

        state, info = additive(key, state, logdensity_fn, move)
        return state, TransitionInfo(info.acceptance_rate, jnp.asarray(False), -state.logdensity, jnp.asarray(1),
                                     jnp.asarray(0))

    return init, step


def pack_records(stats: StepStats):
    """A chunk's records as one float64 array (steps, chains, ndim + 7): theta, then the other fields in
    StepStats order (integers and flags are exact in float64): one device-to-host copy per chunk
    instead of eight."""
    others = [getattr(stats, name).astype(jnp.float64)[..., None] for name in StepStats._fields[1:]]
    return jnp.concatenate([stats.theta] + others, axis=-1)


def unpack_records(records: np.ndarray) -> StepStats:
    """:class:`StepStats` (NumPy views, flags as bool and counts as int64) of :func:`pack_records` output."""
    n_other = len(StepStats._fields) - 1
    fields = {name: records[..., -n_other + i] for i, name in enumerate(StepStats._fields[1:])}
    for name in ("n_steps", "tree_depth"):
        fields[name] = fields[name].astype(np.int64)
    fields["diverging"] = fields["diverging"] > 0.5
    return StepStats(theta=records[..., :-n_other], **fields)


@functools.lru_cache(maxsize=16)
def _program(structure, sampler: str, dense: bool, max_tree_depth: int, num_integration_steps: int, target: float,
             shrinkage: float = 10.0, devices: tuple = (), chain_loop: bool = False):
    """Jitted ``start(model, ...)`` and ``run_chunk(model, preconditioner, carry, flags[capacity], first_step,
    n_steps)`` -> (carry, records[capacity, chains, ndim + 7]) (:func:`pack_records`; :func:`unpack_records`
    reads them), of which the first ``n_steps`` are the steps run.

    Keyed on the posterior's :class:`~bayeshf.posterior.Structure`; the model
    is a traced argument, so other data reuse the compiled program. With more
    than one device in ``devices`` the chains are split over them
    (``shard_map``: every device runs the same program on its own chains, with
    no communication); model, preconditioner and flags are replicated.
    """
    from bayeshf.kernels import matvec

    def to_z(preconditioner, u):
        shift, factor, basis, weights = preconditioner
        if factor.ndim == 1:
            if basis.shape[-1]:  # low-rank correction of the correlations (see sampling.low_rank_whitening)
                u = u + basis @ (weights * (u @ basis))
            return shift + factor * u
        return shift + matvec(factor, u)

    def kernel(model, preconditioner):
        posterior = structure.bind(model)

        def logdensity_fn(u):
            return posterior.logdensity_fn(to_z(preconditioner, u))

        return _kernel(logdensity_fn, sampler, max_tree_depth, num_integration_steps, dense)

    def adaptations():
        """blackjax's step-size and metric adaptations, imported when a program is traced (a stored one is not)."""
        from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
        from blackjax.adaptation.step_size import dual_averaging_adaptation

        from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, WelfordAlgorithmState
        from blackjax.adaptation.step_size import DualAveragingAdaptationState

        da_init, da_update, _ = dual_averaging_adaptation(target)
        # shrink each window's estimate towards the previous metric (identity at first: the preconditioned
        # target has unit scale), not only towards Stan's 1e-3 * I, which for a dense metric estimated from
        # fewer draws than dimensions would leave near-zero directions
        mm_init, mm_update, mm_final = mass_matrix_adaptation(not dense, imm_shrinkage_to_previous=shrinkage)

        # blackjax's functions on blackjax's classes, the carry in bayeshf's (same fields, same arithmetic)
        def ours(m):
            return MassMatrix(m.inverse_mass_matrix, Welford(*m.wc_state))

        def theirs(m):
            return MassMatrixAdaptationState(m.inverse_mass_matrix, WelfordAlgorithmState(*m.wc_state))

        return ((lambda step_size: DualAveraging(*da_init(step_size)),
                 lambda d, rate: DualAveraging(*da_update(DualAveragingAdaptationState(*d), rate)), None),
                (lambda *a: ours(mm_init(*a)), lambda m, x: ours(mm_update(theirs(m), x)),
                 lambda m: ours(mm_final(theirs(m)))))

    def adapt_update(adaptation: Adaptation, position, acceptance_rate, flags: StepFlags) -> Adaptation:
        (da_init, da_update, _), (_, mm_update, mm_final) = adaptations()
        acceptance_rate = jnp.where(jnp.isfinite(acceptance_rate), acceptance_rate, 0.0)
        da = da_update(adaptation.dual_averaging, acceptance_rate)
        mm = jax.lax.cond(flags.slow, lambda m: mm_update(m, position), lambda m: m, adaptation.mass_matrix)
        new = Adaptation(da, mm, jnp.exp(da.log_step_size), adaptation.inverse_mass_matrix)

        def end_window(a: Adaptation) -> Adaptation:
            m = mm_final(a.mass_matrix)
            d = da_init(jnp.exp(a.dual_averaging.log_step_size_avg))
            return Adaptation(d, m, jnp.exp(d.log_step_size), m.inverse_mass_matrix)

        return jax.lax.cond(flags.window_end, end_window, lambda a: a, new)

    def finalize(adaptation: Adaptation) -> Adaptation:
        return adaptation._replace(step_size=jnp.exp(adaptation.dual_averaging.log_step_size_avg))

    def advance(model, preconditioner, carry: Carry, flags: StepFlags, subkeys):
        step = kernel(model, preconditioner)[1]
        adaptation = carry.adaptation
        arguments = (subkeys, carry.states, adaptation.step_size, adaptation.inverse_mass_matrix)
        if chain_loop and subkeys.shape[0] == 1:  # one chain on this device: no loop at all
            states, info = jax.tree.map(lambda x: x[None], step(*jax.tree.map(lambda x: x[0], arguments)))
        elif chain_loop:  # one chain after another: no batched while-loop predicates (selects on every iteration)
            states, info = jax.lax.map(lambda a: step(*a), arguments)
        else:
            states, info = jax.vmap(step)(*arguments)
        # positions are recorded in the sampler's coordinates u and mapped to theta once per chunk
        stats = StepStats(states.position, states.logdensity, info.acceptance_rate, info.is_divergent,
                          info.energy, info.n_steps, info.tree_depth, adaptation.step_size)
        adaptation = jax.lax.cond(
            flags.adapt,
            lambda a: jax.vmap(adapt_update, in_axes=(0, 0, 0, None))(a, states.position, info.acceptance_rate, flags),
            lambda a: a, adaptation)
        adaptation = jax.lax.cond(flags.warmup_end, jax.vmap(finalize), lambda a: a, adaptation)
        return Carry(states, adaptation, carry.keys), stats

    def run_chunk(model, preconditioner, carry, packed, first_step, n_steps):
        # ``packed``: the chunk's StepFlags as one (capacity, 4) bool array (one small host-to-device copy
        # per chunk); the first ``n_steps`` (traced, <= capacity) run and are recorded, so one program
        # per capacity serves chunks of any length: the last chunk of a run does no wasted steps.
        capacity = packed.shape[0]
        # the key of step t of a chain is fold_in(chain key, t): all of the chunk's keys in one vectorised
        # threefry call here, not a split per step inside the loop (threefry is a small loop on CPU), and
        # independent of the chunk size
        steps = first_step + jnp.arange(capacity, dtype=jnp.uint32)
        step_keys = jax.vmap(lambda t: jax.vmap(lambda k: jax.random.fold_in(k, t))(carry.keys))(steps)

        def one(c, i):
            return advance(model, preconditioner, c, StepFlags(*packed[i]), step_keys[i])

        shapes = jax.eval_shape(one, carry, 0)[1]
        records = jax.tree.map(lambda x: jnp.zeros((capacity,) + x.shape, x.dtype), shapes)

        def body(i, state):
            c, r = state
            c, stats = one(c, i)
            return c, jax.tree.map(lambda a, x: jax.lax.dynamic_update_index_in_dim(a, x, i, 0), r, stats)

        carry, stats = jax.lax.fori_loop(0, n_steps, body, (carry, records))
        posterior = structure.bind(model)
        theta = jax.vmap(jax.vmap(lambda u: posterior.constrain_free(to_z(preconditioner, u))))(stats.theta)
        return carry, pack_records(stats._replace(theta=theta))

    def start(model, preconditioner, positions, step_size, inverse_mass_matrix, keys):
        (da_init, _, _), (mm_init, _, _) = adaptations()
        states = jax.vmap(kernel(model, preconditioner)[0])(positions)
        chains, ndim = positions.shape
        mm = jax.vmap(lambda imm: mm_init(ndim, imm))(inverse_mass_matrix)
        da = jax.vmap(da_init)(step_size)
        return Carry(states, Adaptation(da, mm, step_size, inverse_mass_matrix), keys)

    # what the closures are made of, for the program store (devices by id: they do not pickle)
    key = (structure, sampler, dense, max_tree_depth, num_integration_steps, target, shrinkage,
           tuple(d.id for d in devices), chain_loop)
    if len(devices) <= 1:
        return (StoredJit(start, key=key, name="bayeshf.chains.start"),
                StoredJit(run_chunk, key=key, name="bayeshf.chains.run_chunk"))
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.asarray(devices), ("chains",))
    chain, shared = P("chains"), P()
    start = jax.shard_map(start, mesh=mesh, in_specs=(shared, shared, chain, chain, chain, chain), out_specs=chain,
                          check_vma=False)
    # scanned stats are (steps, chains, ...): the chain axis is the second
    run_chunk = jax.shard_map(run_chunk, mesh=mesh, in_specs=(shared, shared, chain, shared, shared, shared),
                              out_specs=(chain, P(None, "chains")), check_vma=False)
    return (StoredJit(start, key=key, name="bayeshf.chains.start"),
            StoredJit(run_chunk, key=key, name="bayeshf.chains.run_chunk"))


def replicate(tree, devices: tuple):
    """Place ``tree`` on every device of ``devices`` once (so chunks do not copy the model again)."""
    if len(devices) <= 1:
        return tree
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    return jax.device_put(tree, NamedSharding(Mesh(np.asarray(devices), ("chains",)), P()))


def warmup_windows(steps: int, initial: int = 75, final: int = 50, first_window: int = 25):
    """Stan's windowed adaptation of ``steps`` warm-up steps: (slow, window_end) boolean arrays.

    A fast interval of ``initial`` steps (step size only), slow windows of ``first_window`` steps doubling
    in size (the metric is estimated in each; the last is stretched to the final interval when the next
    would not fit), a final fast interval of ``final`` steps. Warm-ups shorter than the three together
    take 15% / 75% / 10%; under 20 steps there is no slow window. The schedule of blackjax's
    ``build_schedule`` (tests/test_kernels.py checks them equal), without importing blackjax.
    """
    slow, window_end = np.zeros(steps, dtype=bool), np.zeros(steps, dtype=bool)
    if steps < 20:
        return slow, window_end
    if initial + final + first_window > steps:
        initial, final = int(0.15 * steps), int(0.1 * steps)
        first_window = steps - initial - final
    stop = steps - final
    start, size = initial, first_window
    while start < stop:
        end = start + size
        if end + 2 * size > stop:  # the next window would not fit: this one runs to the final interval
            end = stop
        slow[start:end] = True
        window_end[end - 1] = True
        start, size = end, 2 * size
    return slow, window_end


@functools.lru_cache(maxsize=32)
def _schedule(warmup: int, draws: int, chunk: int) -> tuple[StepFlags, int]:
    """Per-step flags for warm-up + draws, padded to a multiple of ``chunk`` (cached, read-only arrays)."""
    total = warmup + draws
    padded = chunk * math.ceil(total / chunk)
    flags = {k: np.zeros(padded, dtype=bool) for k in StepFlags._fields}
    if warmup > 0:
        slow, window_end = warmup_windows(warmup)
        flags["adapt"][:warmup] = True
        flags["slow"][:warmup] = slow
        flags["window_end"][:warmup] = window_end
        flags["warmup_end"][warmup - 1] = True
    for array in flags.values():
        array.flags.writeable = False
    return StepFlags(**flags), padded
