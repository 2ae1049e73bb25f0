"""bayeshf's sampling kernels, lean on CPU: NUTS (the default), static HMC and random-walk Metropolis.

Each implements the algorithm of the blackjax kernel of the same name
(``blackjax.mcmc.nuts``, ``blackjax.mcmc.hmc``, ``blackjax.mcmc.random_walk``),
which stays available in :mod:`bayeshf.chains` as ``blackjax-nuts``,
``blackjax-hmc`` and ``blackjax-mh``.

NUTS: same algorithm as blackjax's NUTS (``blackjax.mcmc.nuts``, after numpyro's
iterative NUTS): a trajectory doubled in a random direction until it makes a
U-turn or reaches ``max_tree_depth`` doublings; within a doubling the proposal
is sampled progressively and uniformly in proportion to exp(-H); across
doublings with Betancourt's biased progressive sampling; the U-turn criterion
inside a doubling is checked at the numpyro checkpoints; a doubling that
diverges (H - H0 > 1000) or turns contributes no proposal and ends the tree.
Draws follow the same distribution as blackjax's kernel; they are not the same
draws (different use of the random stream).

Why it exists: on CPU, XLA runs every operation of a while-loop body as a
separate kernel, and blackjax's NUTS spends about 45 of them per leapfrog step
on bookkeeping (pytree states copied through ``lax.cond``, a nested
``while_loop`` over U-turn checkpoints, a random key per step). For the models
of this package the gradient itself is cheaper than that bookkeeping. Here one
state is one flat array ``[z, p, grad, logdensity]`` (an edge or proposal
update is one select), the checkpoint U-turn test is one vectorised
expression over all checkpoints, and all of a transition's random numbers
come from SplitMix64 streams seeded by the transition's key (itself a
threefry output computed with the chunk's other keys in one vectorised
call): a key split, a normal draw or ``jax.random.bits`` each cost a small
while loop on CPU. HMC and MH draw from the same streams. See
docs/sampling.md for the measurements.

The contract shared with the blackjax adapters in :mod:`bayeshf.chains`:
``step(key, state, step_size, inverse_mass_matrix) -> (state, TransitionInfo)``
with :class:`HMCState` (NUTS, HMC) or :class:`RWState` (MH), blackjax's state fields (blackjax's own
classes for its kernels).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

DIVERGENCE_THRESHOLD = 1000.0


class HMCState(NamedTuple):
    """A NUTS or HMC chain's state: blackjax's ``HMCState`` fields, in a class whose program outputs
    unpickle without importing blackjax (bayeshf.stored)."""

    position: Any
    logdensity: Any
    logdensity_grad: Any


class RWState(NamedTuple):
    """A random-walk Metropolis chain's state (blackjax's ``RWState`` fields)."""

    position: Any
    logdensity: Any


def hmc_init(position, logdensity_fn: Callable) -> HMCState:
    """The state at ``position`` (blackjax's ``hmc.init``)."""
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return HMCState(position, logdensity, grad)


def rw_init(position, logdensity_fn: Callable) -> RWState:
    """The state at ``position`` (blackjax's ``random_walk.init``)."""
    return RWState(position, logdensity_fn(position))


class TransitionInfo(NamedTuple):
    """What one transition reports, whichever kernel ran it (ours or blackjax's)."""

    acceptance_rate: Any   # mean Metropolis acceptance probability over the trajectory (MH: of the proposal)
    is_divergent: Any      # the energy error exceeded DIVERGENCE_THRESHOLD
    energy: Any            # Hamiltonian of the state kept (MH: -log density)
    n_steps: Any           # leapfrog steps (MH: 1)
    tree_depth: Any        # NUTS doublings (0 for HMC and MH)

_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix(seed, counter):
    """Output ``counter`` of the SplitMix64 stream seeded by ``seed``: a random 64-bit word from a few fused integer ops."""
    x = seed + (jnp.asarray(counter).astype(jnp.uint64) + jnp.uint64(1)) * jnp.uint64(_GOLDEN)
    x = (x ^ (x >> jnp.uint64(30))) * jnp.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> jnp.uint64(27))) * jnp.uint64(0x94D049BB133111EB)
    return x ^ (x >> jnp.uint64(31))


def _uniform(seed, counter):
    """U[0, 1) from a 64-bit seed and an integer counter (one SplitMix64 output).

    SplitMix64 over a counter passes BigCrush; a NUTS transition uses fewer than 2,100 values of its
    trajectory's stream.
    """
    return _unit(_splitmix(seed, counter), jnp.float64)


def _words(key, n):
    """``n`` random 64-bit words for one transition: the SplitMix64 stream seeded by the key's 64 bits.

    The key of each transition is already a threefry output (``fold_in(chain key, step)``, computed
    for a whole chunk in one vectorised call by the chunk program), so its bits are uniformly random;
    drawing from it again with threefry (``jax.random.bits``) would cost a 5-trip while loop of ~16
    small kernels per transition on CPU, SplitMix64 costs one fused kernel.
    """
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key  # typed or raw
    seed = (data[0].astype(jnp.uint64) << jnp.uint64(32)) | data[1].astype(jnp.uint64)
    return _splitmix(seed, jnp.arange(n))


#: up to this dimension a (d, d) matrix-vector product is written as a multiply-sum, which XLA fuses
#: with the code around it (a dot is a library call of its own on CPU, and so is its transpose in a
#: gradient); faster up to 16, slower from 20 (docs/sampling.md)
FUSED_MATVEC = 16


def matvec(matrix, v, *, transposed: bool = False):
    """``matrix @ v`` (``v @ matrix`` if ``transposed``) for a (d, d) matrix and v of shape (..., d).

    Up to FUSED_MATVEC a multiply-sum (rows of ``matrix`` against ``v``: the callers' transposed
    matrices are symmetric), above a dot.
    """
    if matrix.shape[0] <= FUSED_MATVEC:
        return jnp.sum(matrix * v[..., None, :], axis=-1)
    return v @ matrix if transposed else matrix @ v


def _velocity(imm, p):
    """M^-1 p for a diagonal (d,) or dense (d, d) (symmetric) inverse mass matrix; p may be (..., d)."""
    return imm * p if imm.ndim == 1 else matvec(imm, p, transposed=True)


def checkpoint_update(ckpt, i, p_new, p_sum):
    """numpyro's checkpoints for step ``i`` of a doubling: even steps store ``[p_new, p_sum]`` at row
    popcount(i >> 1); odd steps write the scratch last row, which nothing reads."""
    n_ckpt = ckpt.shape[0] - 1
    row = jnp.where(i % 2 == 0, jax.lax.population_count(i >> 1), n_ckpt)
    return jax.lax.dynamic_update_slice(ckpt, jnp.concatenate([p_new, p_sum])[None, :], (row, jnp.zeros_like(row)))


def checkpoint_turning(ckpt, i, p_new, p_sum, imm):
    """Does any subtree that ends at step ``i`` of a doubling make a U-turn?

    numpyro's iterative criterion (blackjax ``iterative_uturn_numpyro``): at odd steps the subtrees
    ending here start at checkpoints idx_min..idx_max; each is tested with its own momentum sum
    ``p_sum - p_sum[ckpt] + p[ckpt]``. blackjax walks those rows in a nested while loop; here every
    row is tested in one expression and the open rows are selected by a mask.
    """
    n_ckpt = ckpt.shape[0] - 1
    d = p_new.shape[-1]
    idx_max = jax.lax.population_count(i >> 1)
    idx_min = idx_max - jax.lax.population_count((~i & (i + 1)) - 1) + 1
    r_ck, rs_ck = ckpt[:, :d], ckpt[:, d:]
    # rho = subtree momentum sum - (p_left + p_right) / 2, subtree sum = p_sum - rs_ck + r_ck
    rho = p_sum[None, :] - rs_ck + 0.5 * (r_ck - p_new[None, :])
    turn_each = (jnp.sum(_velocity(imm, r_ck) * rho, axis=1) <= 0) | (
        jnp.sum(rho * _velocity(imm, p_new)[None, :], axis=1) <= 0)
    index = jnp.arange(n_ckpt + 1)
    return jnp.any(turn_each & (index >= idx_min) & (index <= idx_max) & (index < n_ckpt))


def checkpoint_step(ckpt, i, p_new, p_sum, imm):
    """Step ``i`` of a doubling with numpyro's checkpoints: (new checkpoints, does a subtree turn here).

    Even steps store a checkpoint and end no subtree (idx_min > idx_max in checkpoint_turning); odd
    steps test the subtrees ending there and store nothing (their row is the scratch row nothing
    reads). One branch per step instead of both (docs/sampling.md).
    """
    return jax.lax.cond(i % 2 == 0, lambda ck: (checkpoint_update(ck, i, p_new, p_sum), jnp.asarray(False)),
                        lambda ck: (ck, checkpoint_turning(ck, i, p_new, p_sum, imm)), ckpt)


def _unit(bits, dtype):
    """Uniforms in [0, 1) from random 64-bit words (their top 53 bits)."""
    return (bits >> jnp.uint64(11)).astype(dtype) * (2.0 ** -53)


def _normal(bits, dtype):
    """Standard normals from random 64-bit words (inverse normal CDF of a uniform in (0, 1), as
    jax.random.normal does)."""
    unit = ((bits >> jnp.uint64(11)).astype(dtype) + 0.5) * (2.0 ** -53)  # the midpoints: in (0, 1)
    return jnp.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * unit - 1.0)


def _momentum(bits, imm, dtype):
    """p ~ N(0, M), M = imm^-1, from d random 64-bit words."""
    noise = _normal(bits, dtype)
    if imm.ndim == 2:
        return jnp.linalg.cholesky(jnp.linalg.inv(imm)) @ noise
    return noise / jnp.sqrt(imm)


def _kinetic(imm, p):
    return 0.5 * jnp.sum(p * _velocity(imm, p))


def _log_ratio(delta):
    """An energy or log-density difference with NaN (an undefined end point) as -inf: never accepted."""
    return jnp.where(jnp.isnan(delta), -jnp.inf, delta)


def _pack(z, p, g, logp):
    """One trajectory point as one array ``[z, p, grad, logdensity]``."""
    return jnp.concatenate([z, p, g, logp[None]])


def _leapfrog(value_and_grad, imm, d):
    """Velocity Verlet on a packed state ``[z, p, grad, logdensity]``."""

    def leapfrog(s, eps):
        z, p, g = s[:d], s[d:2 * d], s[2 * d:3 * d]
        p = p + 0.5 * eps * g
        z = z + eps * _velocity(imm, p)
        logp, g = value_and_grad(z)
        p = p + 0.5 * eps * g
        return _pack(z, p, g, logp)

    return leapfrog


def build_mh_step(logdensity_fn: Callable) -> Callable:
    """Random-walk Metropolis (blackjax's additive random walk with a Gaussian proposal):
    ``z' = z + step_size * chol(imm) @ N(0, I)`` (diagonal: ``sqrt(imm) * N(0, I)``), accepted with
    probability min(1, p(z') / p(z)). All randomness from the transition key's SplitMix64 stream; energy is -log p of the state kept."""
    def step(key, state, step_size, imm):
        z0, logp0 = state.position, state.logdensity
        d, dtype = z0.shape[0], z0.dtype
        bits = _words(key, d + 1)
        noise = _normal(bits[:d], dtype)
        scaled = jnp.linalg.cholesky(imm) @ noise if imm.ndim == 2 else jnp.sqrt(imm) * noise
        z1 = z0 + step_size * scaled
        logp1 = logdensity_fn(z1)
        p_accept = jnp.minimum(jnp.exp(_log_ratio(logp1 - logp0)), 1.0)
        accept = _unit(bits[d], dtype) < p_accept
        new = RWState(jnp.where(accept, z1, z0), jnp.where(accept, logp1, logp0))
        return new, TransitionInfo(p_accept, jnp.asarray(False), -new.logdensity, jnp.asarray(1), jnp.asarray(0))

    return step


#: static HMC draws its step size per transition uniformly in step_size * [1 - J, 1 + J] (Neal 2011,
#: sec. 5.4.2.2; Stan's stepsize_jitter): a fixed number of steps with one step size can span a whole
#: period of a near-Gaussian target and return where it started (docs/sampling.md). Each step size
#: keeps the target invariant, so the mixture does too.
HMC_JITTER = 0.5


def build_hmc_step(logdensity_fn: Callable, num_integration_steps: int) -> Callable:
    """Static HMC transition (blackjax's ``hmc.build_kernel`` algorithm): ``num_integration_steps``
    leapfrog steps, Metropolis acceptance of the end point, divergence if H - H0 > 1000; unlike
    blackjax's, the step size is jittered per transition (HMC_JITTER).

    Momentum, jitter and acceptance uniform from the transition key's SplitMix64 stream, the trajectory a ``fori_loop``
    over one packed array. Reports the energy of the state kept (Stan's ``energy__``).
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)
    n_steps = int(num_integration_steps)

    def step(key, state, step_size, imm):
        z0, logp0, g0 = state.position, state.logdensity, state.logdensity_grad
        d, dtype = z0.shape[0], z0.dtype
        bits = _words(key, d + 2)
        p0 = _momentum(bits[:d], imm, dtype)
        h0 = -logp0 + _kinetic(imm, p0)
        leapfrog = _leapfrog(value_and_grad, imm, d)
        eps = step_size * (1.0 + HMC_JITTER * (2.0 * _unit(bits[d + 1], dtype) - 1.0))
        end = jax.lax.fori_loop(0, n_steps, lambda _, s: leapfrog(s, eps), _pack(z0, p0, g0, logp0))
        h1 = -end[3 * d] + _kinetic(imm, end[d:2 * d])
        delta = _log_ratio(h0 - h1)
        p_accept = jnp.minimum(jnp.exp(delta), 1.0)
        accept = _unit(bits[d], dtype) < p_accept
        new = HMCState(jnp.where(accept, end[:d], z0), jnp.where(accept, end[3 * d], logp0),
                       jnp.where(accept, end[2 * d:3 * d], g0))
        return new, TransitionInfo(p_accept, -delta > DIVERGENCE_THRESHOLD, jnp.where(accept, h1, h0),
                                   jnp.asarray(n_steps), jnp.asarray(0))

    return step


class _Doubling(NamedTuple):
    """Loop state of the leapfrog steps of one doubling."""

    i: Any            # steps taken
    edge: Any         # last state (packed)
    proposal: Any     # state proposed by this doubling (packed)
    log_w: Any        # log sum of the weights of its states
    log_acc: Any      # log sum of their acceptance probabilities
    p_sum: Any        # momentum sum
    ckpt: Any         # numpyro's checkpoints (checkpoint_step)
    diverging: Any
    turning: Any


class _Trajectory(NamedTuple):
    """Loop state of the doublings of one NUTS transition."""

    depth: Any
    left: Any         # packed edge states
    right: Any
    p_sum: Any        # momentum sum of the whole trajectory
    proposal: Any
    log_w: Any
    log_acc: Any
    n_states: Any     # leapfrog steps taken
    diverging: Any
    turning: Any


def build_nuts_step(logdensity_fn: Callable, max_tree_depth: int = 10) -> Callable:
    """NUTS transition on a flat position vector (diagonal or dense inverse mass matrix)."""
    value_and_grad = jax.value_and_grad(logdensity_fn)
    n_ckpt = max(int(max_tree_depth), 1)

    def step(key, state, step_size, imm):
        z0, logp0, g0 = state.position, state.logdensity, state.logdensity_grad
        d = z0.shape[0]
        dtype = z0.dtype

        def is_turning(p_left, p_right, p_sum):
            # blackjax's gaussian_euclidean criterion: rho = p_sum - (p_left + p_right) / 2
            rho = p_sum - 0.5 * (p_left + p_right)
            return (jnp.sum(_velocity(imm, p_left) * rho) <= 0) | (jnp.sum(_velocity(imm, p_right) * rho) <= 0)

        # all from the SplitMix64 stream of the transition key (_words): d uniforms for the
        # momentum (inverse normal CDF, as jax.random.normal does) and the seed of the trajectory's stream
        bits = _words(key, d + 1)
        seed = bits[d]
        extra = 2 ** max_tree_depth
        p0 = _momentum(bits[:d], imm, dtype)
        h0 = -logp0 + _kinetic(imm, p0)
        s0 = _pack(z0, p0, g0, logp0)
        leapfrog = _leapfrog(value_and_grad, imm, d)

        def energy_of(s):
            return -s[3 * d] + _kinetic(imm, s[d:2 * d])

        def weight_of(s):
            return _log_ratio(h0 - energy_of(s))  # log weight relative to the initial energy

        def subtree(start, eps, n_steps, base):
            """Integrate up to ``n_steps`` from ``start``; stop at a U-turn or a divergence.

            Returns the final :class:`_Doubling` (its ``ckpt`` is of no further use).
            """
            # checkpoint rows [p | p_sum]; row n_ckpt is scratch (odd steps write there, nothing reads it)
            ckpt = jnp.zeros((n_ckpt + 1, 2 * d), dtype)
            inf = jnp.asarray(-jnp.inf, dtype)

            def cond(c: _Doubling):
                return (c.i < n_steps) & ~c.diverging & ~c.turning

            def body(c: _Doubling) -> _Doubling:
                new = leapfrog(c.edge, eps)
                w = weight_of(new)
                p_new = new[d:2 * d]
                p_sum = c.p_sum + p_new
                # progressive uniform sampling within the doubling (the first state is always taken:
                # its log weight is the running total)
                log_w = jnp.logaddexp(c.log_w, w)
                proposal = jnp.where(_uniform(seed, base + c.i) < jnp.exp(w - log_w), new, c.proposal)
                log_acc = jnp.logaddexp(c.log_acc, jnp.minimum(w, 0.0))
                ckpt, turning = checkpoint_step(c.ckpt, c.i, p_new, p_sum, imm)  # U-turns inside the doubling
                return _Doubling(c.i + 1, new, proposal, log_w, log_acc, p_sum, ckpt,
                                 -w > DIVERGENCE_THRESHOLD, turning)

            return jax.lax.while_loop(cond, body, _Doubling(
                jnp.asarray(0), start, start, inf, inf, jnp.zeros((d,), dtype), ckpt, jnp.asarray(False),
                jnp.asarray(False)))

        def cond(t: _Trajectory):
            return (t.depth < max_tree_depth) & ~t.diverging & ~t.turning

        def body(t: _Trajectory) -> _Trajectory:
            # random counters: 0 .. 2**max_tree_depth - 2 for the steps, then two per doubling
            forward = _uniform(seed, extra + 2 * t.depth) < 0.5
            eps = jnp.where(forward, step_size, -step_size)
            sub = subtree(jnp.where(forward, t.right, t.left), eps, 2 ** t.depth, 2 ** t.depth - 1)
            # biased progressive sampling across doublings; a diverging or turning doubling proposes nothing
            rejected = sub.diverging | sub.turning
            accept = ~rejected & (_uniform(seed, extra + 2 * t.depth + 1) < jnp.exp(sub.log_w - t.log_w))
            # the doubling extends the trajectory on its side; its last state is the new edge
            left = jnp.where(forward, t.left, sub.edge)
            right = jnp.where(forward, sub.edge, t.right)
            p_sum = t.p_sum + sub.p_sum
            turning = is_turning(left[d:2 * d], right[d:2 * d], p_sum)
            return _Trajectory(t.depth + 1, left, right, p_sum, jnp.where(accept, sub.proposal, t.proposal),
                               jnp.where(rejected, t.log_w, jnp.logaddexp(t.log_w, sub.log_w)),
                               jnp.logaddexp(t.log_acc, sub.log_acc), t.n_states + sub.i, sub.diverging,
                               rejected | turning)

        end = jax.lax.while_loop(cond, body, _Trajectory(
            jnp.asarray(0), s0, s0, p0, s0, jnp.asarray(0.0, dtype), jnp.asarray(-jnp.inf, dtype), jnp.asarray(0),
            jnp.asarray(False), jnp.asarray(False)))
        prop = end.proposal
        acceptance = jnp.exp(end.log_acc) / jnp.maximum(end.n_states, 1)
        return HMCState(prop[:d], prop[3 * d], prop[2 * d:3 * d]), TransitionInfo(
            acceptance, end.diverging, energy_of(prop), end.n_states, end.depth)

    return step
