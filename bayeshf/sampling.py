"""NUTS and HMC (bayeshf.kernels, or blackjax's), blackjax random-walk Metropolis on the posterior -> arviz.InferenceData.

All chains and all steps (warm-up and draws) run in ONE compiled program: the
kernel is vmapped over chains and ``lax.scan``-ned over a chunk of steps; the
host calls the same compiled chunk again and again, so a progress bar moves,
Ctrl-C keeps the finished chunks, and nothing but the chunk's draws crosses to
the host. Warm-up is Stan's window adaptation (dual averaging of the step size,
Welford estimates of the inverse mass matrix in doubling windows), driven by
per-step flags fed to the scan, so warm-up and sampling share the program.
Chains start from the mode of the unconstrained log-density, jittered with its
Laplace covariance, and run on coordinates whitened by that covariance.
The compiled program itself lives in :mod:`bayeshf.chains`.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayeshf.chains import SAMPLERS, StepFlags, StepStats, _program, _schedule, algorithm, replicate, unpack_records
from bayeshf.runtime import chain_devices, enable_compilation_cache
from bayeshf.errors import BayeshfError, interrupt_behind
from bayeshf.laplace import _z_value_and_grad, find_mode_unconstrained
from bayeshf.posterior import Posterior
from bayeshf.priors import build_priors
from bayeshf.stored import stored_jit

METRICS = ("diagonal", "dense")
#: default target acceptance rate per sampler (MH: the 0.234 of Roberts, Gelman & Gilks 1997); NUTS 0.9 because a
#: flat-prior POI piled at 0 is stiff on its upper side in z (probit) and longer steps diverge there (docs/sampling.md)
TARGET_ACCEPTANCE = {sampler: {"mh": 0.234, "hmc": 0.8, "nuts": 0.9}[algorithm(sampler)] for sampler in SAMPLERS}
#: NUTS/HMC above this many free parameters, most of them interpolated systematics, target LARGE_MODEL_TARGET:
#: smaller steps for their curved high-statistics ridges (docs/sampling.md, "The ATLAS ttbar workspace")
LARGE_MODEL = 100
LARGE_MODEL_TARGET = 0.99
#: draws per chain the CLI takes for those models when --draws is not given (--target-ess adds what falls short)
LARGE_MODEL_DRAWS = 1000


def large_interpolated_model(sampler: str, ndim: int, interpolated: int | None = None) -> bool:
    """NUTS/HMC on more than LARGE_MODEL free parameters of which more than half are interpolated systematics."""
    return algorithm(sampler) != "mh" and ndim > LARGE_MODEL and (interpolated is None or 2 * interpolated > ndim)


def default_draws(model, sampler: str = "nuts") -> int:
    """Draws per chain the CLI takes for ``model``: 1000, LARGE_MODEL_DRAWS for large models of interpolated systematics."""
    ndim = int((~np.asarray(model.fixed, dtype=bool)).sum())
    return LARGE_MODEL_DRAWS if large_interpolated_model(sampler, ndim, interpolated_parameters(model)) else 1000


def interpolated_parameters(model) -> int:
    """Number of parameters that carry a normsys or histosys (interpolated) modifier."""
    arrays = model.arrays
    return int(np.union1d(np.asarray(arrays.normsys_param), np.asarray(arrays.histosys_param)).size)


def default_target_acceptance(sampler: str, ndim: int, interpolated: int | None = None) -> float:
    """0.234 for MH, 0.8 for HMC, 0.9 for NUTS; LARGE_MODEL_TARGET (0.99) above LARGE_MODEL free parameters of
    which more than half are interpolated systematics (``interpolated``; None: not known, counts as all)."""
    if large_interpolated_model(sampler, ndim, interpolated):
        return LARGE_MODEL_TARGET
    return TARGET_ACCEPTANCE[sampler]


#: whiten with the full Cholesky factor of the Laplace covariance up to this many free parameters; above, two
#: (d, d) products per leapfrog step cost more than the widths and a low-rank correction (docs/sampling.md)
DENSE_WHITENING = 150
#: from this many free parameters the low-rank whitening replaces the dense one where it holds every direction
#: whose Laplace correlation eigenvalue is off 1 by more than WHITENING_MIN_RATIO (at most WHITENING_RANK)
LOW_RANK_FROM = 75
#: above that, at most this many eigen-directions of the Laplace correlation matrix are whitened too
WHITENING_RANK = 8
#: ... those whose eigenvalue is off 1 by more than this factor
WHITENING_MIN_RATIO = 1.5


def low_rank_whitening(correlation: np.ndarray, rank: int | None = None,
                       min_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The strongest correlation directions of the Laplace approximation, as a low-rank whitening.

    With ``correlation = Q diag(lam) Q^T``, keep the (at most ``rank``) eigenvectors whose eigenvalue
    is off 1 by more than a factor ``min_ratio`` (the n-bin models: the signal strength against every
    per-bin shapesys, one eigenvalue ~ n times the others). ``M = I + V diag(sqrt(lam) - 1) V^T``
    then has ``M M^T`` equal to the correlation matrix in those directions and to 1 in the others,
    and ``z = centre + widths * (M u)`` costs two (d, k) products per leapfrog step instead of the
    (d, d) product of a full Cholesky factor. Returns (V, sqrt(lam) - 1, 1 / sqrt(lam) - 1): the
    basis and the weights of ``M`` and of ``M^-1``.
    """
    return _low_rank(*_strong_directions(correlation, min_ratio), rank)


def _low_rank(eigenvalues: np.ndarray, vectors: np.ndarray, rank: int | None = None):
    """:func:`low_rank_whitening` of the directions :func:`_strong_directions` found."""
    rank = WHITENING_RANK if rank is None else rank
    root = np.sqrt(eigenvalues[:rank])
    return vectors[:, :rank], root - 1.0, 1.0 / root - 1.0


def _strong_directions(correlation: np.ndarray, min_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of ``correlation`` off 1 by more than ``min_ratio`` (default
    WHITENING_MIN_RATIO), strongest first."""
    min_ratio = WHITENING_MIN_RATIO if min_ratio is None else min_ratio
    eigenvalues, vectors = np.linalg.eigh(0.5 * (correlation + correlation.T))
    eigenvalues = np.maximum(eigenvalues, 1e-12)
    strength = np.abs(np.log(eigenvalues))
    order = np.argsort(strength)[::-1]
    order = order[strength[order] > np.log(min_ratio)]
    return eigenvalues[order], vectors[:, order]



# --------------------------------------------------------------------------- driver

def posterior_for(model, priors=None, *, shapesys: str = "flat") -> Posterior:
    """The :class:`Posterior` of ``model``; cached per model for the derived priors (so programs are reused).

    The cache lives on the model object (``_posteriors``, not pickled), so it goes when the model goes.
    """
    if priors is not None:
        return Posterior(model, build_priors(model, priors, shapesys=shapesys))
    per_model = getattr(model, "__dict__", {}).setdefault("_posteriors", {})
    if shapesys not in per_model:
        per_model[shapesys] = Posterior(model, build_priors(model, shapesys=shapesys))
    return per_model[shapesys]


class RawDraws(NamedTuple):
    """Draws straight from the program, before InferenceData: StepStats arrays of (chains, draws, ...)."""

    stats: StepStats
    interrupted: bool
    warmup_done: int
    draws_done: int
    target_acceptance: float  # the step-size adaptation's target (given, or the default for the model)
    stop: str = "draws"  # why the draws ended: "draws", "converged", "max_time" (target_ess not reached), "interrupted"
    extensions: int = 0  # rounds of extra draws taken to reach target_ess
    seconds: float = 0.0  # wall time of the run (compilation, warm-up and draws)


def run_chains(posterior: Posterior, *, sampler: str = "nuts", chains: int = 4, warmup: int = 1000,
               draws: int = 1000, metric: str = "diagonal", seed: int = 0, progress: bool = True,
               init: str = "mode", target_acceptance: float | None = None, max_tree_depth: int = 10,
               num_integration_steps: int = 16, step_size: float | None = None,
               chunk_size: int | None = None, split_chains: bool = True, chain_loop: bool | None = None,
               keep_warmup: bool = False, target_ess: float | None = None, max_time: float | None = None,
               convergence=None) -> RawDraws:
    """Run the chains; returns the raw per-step records of the kept draws (see :func:`sample`).

    ``split_chains``: spread the chains over the CPU devices (one per core after :func:`bayeshf.runtime.configure`);
    False keeps them all on one device (same draws, one core). ``keep_warmup``: records of the warm-up
    steps too (first ``warmup`` along the draw axis; for diagnosing adaptation). ``chain_loop``: run a device's chains one
    after another (``lax.map``, the default) rather than batched (``vmap``): a batched NUTS
    ``while_loop`` selects every state element on every leapfrog step and waits for the longest tree,
    which on CPU costs more than it saves (docs/sampling.md, "Looped or batched chains").
    ``chunk_size``: steps per call of the compiled program (None: :func:`auto_chunk`, at most 10 calls
    with a progress bar, one without: Ctrl-C then keeps nothing, as the call is not interruptible;
    the CLI always passes the chunking of the progress bar);
    the draws do not depend on it.
    ``target_ess``: after the ``draws``, keep drawing in rounds until every parameter's bulk and tail ESS
    reach it and its rank-normalised split R-hat is below RHAT_TARGET, or until ``max_time`` seconds
    (counted from the call; None: no limit) would be passed (:func:`extend_until_converged`). The extra
    draws continue the same chains with the step keys of a longer run: a run that ends at n draws
    holds the same draws as ``draws=n`` would. ``convergence``: the ESS and R-hat function it uses (default
    :func:`bayeshf.diagnostics.convergence_table`).
    """
    started = time.perf_counter()
    if sampler not in SAMPLERS:
        raise BayeshfError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}.")
    if metric not in METRICS:
        raise BayeshfError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
    if chains < 1 or draws < 1 or warmup < 0:
        raise BayeshfError("chains and draws must be at least 1 and warmup at least 0.")
    if target_ess is not None and not target_ess >= 0:
        raise BayeshfError(f"target_ess must be a number of at least 0, not {target_ess!r}.")
    if max_time is not None and not max_time > 0:
        raise BayeshfError(f"max_time must be a positive number of seconds, not {max_time!r}.")
    if posterior.ndim == 0:
        raise BayeshfError(f"{posterior.model.label}: every parameter is fixed; there is no free parameter to sample.")
    dense = metric == "dense"
    target = (default_target_acceptance(sampler, posterior.ndim, interpolated_parameters(posterior.model))
              if target_acceptance is None else float(target_acceptance))
    shrinkage = float(min(posterior.ndim, 200)) if dense else 10.0
    devices = tuple(chain_devices(chains)) if split_chains else ()
    start, run_chunk = _program(posterior.structure, sampler, dense, int(max_tree_depth), int(num_integration_steps),
                                target, shrinkage, devices, _chain_loop(posterior.model) if chain_loop is None
                                else bool(chain_loop))

    init_key, chain_keys, noise = _seed_randomness(seed, chains, posterior.ndim)
    positions, covariance, centre = _initial_positions(posterior, init, chains, init_key, np.asarray(noise))
    ndim = posterior.ndim
    # sample u with z = centre + factor u (Laplace whitening): the target is near N(0, I) whatever the widths
    if covariance is not None:
        (centre, factor, basis, inverse_weights), preconditioner = _whitening(posterior, devices)
        if factor.ndim == 2:
            positions = np.linalg.solve(factor, (positions - centre).T).T
        else:
            scaled = (positions - centre) / factor
            positions = scaled + ((scaled @ basis) * inverse_weights) @ basis.T
    else:
        preconditioner = replicate(jax.device_put((np.zeros(ndim), np.ones(ndim), np.zeros((ndim, 0)), np.zeros(0))),
                                   devices)
    imm = np.ones(ndim) if not dense else np.eye(ndim)
    if step_size is None:
        step_size = 2.38 / math.sqrt(ndim) if algorithm(sampler) == "mh" else (0.5 if covariance is not None else 0.1)
    model = _replicated_model(posterior, devices)
    # NumPy arguments straight into the program: jnp.asarray / full / broadcast_to would each stage a small program
    carry = start(model, preconditioner, np.asarray(positions, dtype=np.float64),
                  np.full(chains, float(step_size)), np.ascontiguousarray(np.broadcast_to(imm, (chains,) + imm.shape)),
                  np.asarray(chain_keys))  # from the host: split over the devices without a slicing program

    total = warmup + draws
    if chunk_size is not None:
        chunk = max(1, min(int(chunk_size), total))
    else:  # with no progress bar to move, one call if the records fit RECORD_BYTES
        chunk = auto_chunk(total, 1 if not progress else MAX_CHUNKS,
                           record_bytes=chains * (2 * ndim + len(StepStats._fields)) * 8)  # u and theta
    flags, _ = _schedule(warmup, draws, chunk)
    packed = np.stack(flags, axis=1)  # (steps, 4): one array per chunk call
    pieces: list[StepStats] = []
    done = 0
    interrupted = False
    bar = _progress(progress, total, f"{sampler} {chains} chains")
    chunk_seconds = 0.0  # wall time of the chunk calls: their cost per step prices extra draws
    stop, extensions = "draws", 0

    def run_steps(begin: int, end: int, flags_of, deadline: float | None = None) -> bool:
        """Run steps [begin, end) in chunks; False when ``deadline`` passed first (checked between chunks)."""
        nonlocal carry, chunk_seconds
        for first in range(begin, end, chunk):
            if deadline is not None and time.perf_counter() > deadline:
                return False
            step_count = min(chunk, end - first)
            tick = time.perf_counter()
            carry, records = run_chunk(model, preconditioner, carry, flags_of(first), np.uint32(first),
                                       np.int32(step_count))
            pieces.append(unpack_records(np.asarray(records)[:step_count]))  # waits for the chunk
            chunk_seconds += time.perf_counter() - tick
            if bar is not None:
                bar.update(step_count)
                bar.set_postfix_str("warm-up" if first + step_count <= warmup else "sampling", refresh=False)
            done_steps[0] = first + step_count
        return True

    done_steps = [0]
    no_adaptation = np.zeros((chunk, len(StepFlags._fields)), dtype=bool)
    try:
        run_steps(0, total, lambda first: packed[first:first + chunk])
        while target_ess is not None and target_ess > 0:
            theta = np.concatenate([p.theta for p in pieces], axis=0)[warmup:]  # (draws, chains, ndim)
            extra = extra_draws(np.swapaxes(theta, 0, 1), target_ess, convergence=convergence)
            if extra == 0:
                stop = "converged"
                break
            drawn = done_steps[0] - warmup
            if max_time is not None:  # what the time left affords at the draws' pace so far
                per_step = chunk_seconds / max(done_steps[0], 1)
                left = max_time - (time.perf_counter() - started)
                extra = 0 if left <= 0 else min(extra, int(left / per_step) if per_step > 0 else extra)
            if extra < max(1, drawn // 10):  # too few to change the answer: stop and say so
                stop = "max_time"
                break
            extensions += 1
            if bar is not None:
                bar.total += extra
                bar.set_postfix_str("more draws (target ESS)", refresh=True)
            # the pace can change (a chain that stops moving makes steps cheap): the deadline is checked as
            # the extra draws run, not only priced in advance
            deadline = None if max_time is None else started + max_time
            if not run_steps(done_steps[0], done_steps[0] + extra, lambda first: no_adaptation, deadline):
                stop = "max_time"
                break
    except (Exception, KeyboardInterrupt) as error:  # Ctrl-C, also when a JAX callback wrapped it
        if interrupt_behind(error) is None:
            raise
        interrupted = True
        stop = "interrupted"
    finally:
        if bar is not None:
            bar.close()
    done = done_steps[0]
    if interrupted and done <= warmup:
        raise KeyboardInterrupt
    stats = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *pieces)
    kept = slice(0 if keep_warmup else warmup, done)
    stats = jax.tree.map(lambda x: np.swapaxes(x[kept], 0, 1), stats)  # (chains, [warm-up +] draws, ...)
    if interrupted:
        warnings.warn(f"sampling interrupted: keeping {done - warmup} of {draws} draws per chain.", stacklevel=2)
    return RawDraws(stats, interrupted, min(done, warmup), done - warmup, target, stop, extensions,
                    time.perf_counter() - started)


#: R-hat every parameter must be below for target_ess to count as reached (Vehtari et al. 2021)
RHAT_TARGET = 1.01
#: a round of extra draws takes at most this many times the draws made so far (then checks again)
MAX_EXTENSION = 2.0
#: ... and at least this fraction of them
MIN_EXTENSION = 0.25


def extra_draws(theta: np.ndarray, target_ess: float, rhat_max: float | None = None, *, convergence=None) -> int:
    """Extra draws per chain to ask for when ``theta`` (chains, draws, ndim) falls short of ``target_ess``
    (bulk and tail) or of R-hat below ``rhat_max`` (default RHAT_TARGET); 0 when it does not.

    ESS grows about in proportion to the draws, so the worst ratio target / ESS (with 10% to spare)
    says how many more; an R-hat above the threshold with enough ESS asks for half as many again.
    Bounded to [MIN_EXTENSION, MAX_EXTENSION] times the draws so far, then checked again.
    """
    if convergence is None:
        from bayeshf.diagnostics import convergence_table as convergence

    rhat_max = RHAT_TARGET if rhat_max is None else rhat_max
    drawn = theta.shape[1]
    bulk, tail, rhat = convergence(theta)
    ess = np.minimum(bulk, tail)
    ess = np.where(np.isfinite(ess), ess, 0.0)
    mixed = np.all(np.isfinite(rhat) & (rhat < rhat_max)) if theta.shape[0] > 1 else True
    if ess.size == 0 or (ess.min() >= target_ess and mixed):
        return 0
    factor = 1.1 * target_ess / max(ess.min(), 1.0) - 1.0 if ess.min() < target_ess else 0.5
    factor = min(max(factor, MIN_EXTENSION), MAX_EXTENSION)
    return max(1, int(math.ceil(factor * drawn)))


#: steps per call of the chunk program: 100 x 2**k, the smallest giving at most MAX_CHUNKS calls
CHUNK = 100
MAX_CHUNKS = 10
#: records of one chunk call at most this large (bytes) when the chunk size is chosen for one call
RECORD_BYTES = 256 * 2**20


def auto_chunk(total_steps: int, max_calls: int | None = None, *, record_bytes: int = 0) -> int:
    """Steps per chunk for a run of ``total_steps``: 100 x 2**k, the smallest giving at most ``max_calls``
    calls (default MAX_CHUNKS: the progress bar moves 10 times), unless a chunk's records
    (``record_bytes`` per step) would pass RECORD_BYTES.

    Few calls because each costs about a millisecond besides its steps (docs/sampling.md, "One program");
    powers of two keep the compiled variants few; a chunk runs only the steps it is given.
    """
    max_calls = MAX_CHUNKS if max_calls is None else max_calls
    chunk = CHUNK
    while math.ceil(total_steps / chunk) > max_calls and (chunk * 2) * record_bytes <= RECORD_BYTES:
        chunk *= 2
    return chunk


def _import_arviz_in_background() -> None:
    """Start importing ArviZ (xarray, matplotlib, scipy.stats) on a thread while the chains compile and run;
    the InferenceData step at the end then finds it imported (the import lock makes it wait if not)."""
    import sys
    import threading

    if "arviz" not in sys.modules:
        threading.Thread(target=__import__, args=("arviz",), name="bayeshf-import-arviz", daemon=True).start()


def _replicated_model(posterior: Posterior, devices: tuple):
    """The posterior's model on every device of ``devices``, copied once per posterior (not per run)."""
    if len(devices) <= 1:
        return posterior.model
    replicas = _cache(posterior, "_replicas")
    key = tuple(device.id for device in devices)
    if key not in replicas:
        replicas[key] = replicate(posterior.model, devices)
    return replicas[key]


def _cache(posterior: Posterior, name: str) -> dict:
    """The dictionary ``name`` of values derived from ``posterior.model``, emptied when the model was replaced."""
    model, entries = posterior.__dict__.get(name, (None, None))
    if model is not posterior.model:
        entries = {}
        posterior.__dict__[name] = (posterior.model, entries)
    return entries


def _read_only(*arrays):
    for array in arrays:
        if isinstance(array, np.ndarray):
            array.flags.writeable = False
    return arrays


#: models with fewer array elements than this run a device's chains one after another (see run_chains)
CHAIN_LOOP_MAX_SIZE = 20_000


def _chain_loop(model) -> bool:
    """Loop over chains for small models (per-operation overhead dominates: batching only adds selects);
    batch them (vmap) for large ones, where a batched gradient costs much less than one per chain."""
    return model.array_size < CHAIN_LOOP_MAX_SIZE


def _laplace(posterior: Posterior) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(mode in z, Laplace covariance or None, its Cholesky factor or None), computed once per posterior.

    A posterior (model, priors, transforms) does not change, and neither does its mode: repeated runs
    (other seeds, samplers, draws) reuse it, and keep the same draws for the same seed (the cached
    values are the ones a new search would return).
    """
    cache = _cache(posterior, "_laplace")
    if "mode" not in cache:
        z_mode, covariance = find_mode_unconstrained(posterior)
        cache["mode"] = _read_only(np.asarray(z_mode, dtype=float), covariance,
                                   None if covariance is None else np.linalg.cholesky(covariance))
    return cache["mode"]


def _whitening(posterior: Posterior, devices: tuple):
    """The Laplace whitening of ``posterior`` as NumPy ``(centre, factor, basis, inverse_weights)`` and as
    the program's replicated ``(centre, factor, basis, weights)``, cached per posterior, devices and
    settings.

    Up to DENSE_WHITENING parameters ``factor`` is the (d, d) Cholesky factor of the Laplace covariance;
    above, and from LOW_RANK_FROM where the low-rank form is complete, the Laplace widths with a low-rank
    correction (:func:`low_rank_whitening`).
    """
    key = (tuple(device.id for device in devices), DENSE_WHITENING, LOW_RANK_FROM, WHITENING_RANK, WHITENING_MIN_RATIO)
    per_posterior = _cache(posterior, "_whitenings")
    if key not in per_posterior:
        centre, covariance, cholesky = _laplace(posterior)
        ndim = posterior.ndim
        basis, weights, inverse_weights = np.zeros((ndim, 0)), np.zeros(0), np.zeros(0)
        widths = np.sqrt(np.diag(covariance))
        correlation = covariance / np.outer(widths, widths)
        directions = _strong_directions(correlation) if min(LOW_RANK_FROM, DENSE_WHITENING + 1) <= ndim else None
        # dense up to DENSE_WHITENING, unless the low rank is complete there (holds every strong direction)
        if ndim <= DENSE_WHITENING and (directions is None or len(directions[0]) > WHITENING_RANK):
            factor = cholesky
        else:
            factor = widths
            basis, weights, inverse_weights = _low_rank(*directions)
        per_posterior[key] = (_read_only(centre, factor, basis, inverse_weights),
                              replicate(jax.device_put((centre, factor, basis, weights)), devices))
    return per_posterior[key]


@stored_jit(static_argnums=(1, 2))
def _seed_randomness(seed, chains: int, ndim: int):
    """The starts' key, the chains' keys and the starts' normal jitter (chains, ndim) of ``seed``, in one program
    (eager random calls compile one program each)."""
    init_key, chain_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, jax.random.split(chain_key, chains), jax.random.normal(init_key, (chains, ndim))


def _initial_positions(posterior: Posterior, init: str, chains: int, key, noise: np.ndarray):
    """Chain starts in z: the mode with Laplace jitter ``noise`` ("mode"), the model inits ("init"), or the prior
    ("prior").

    Returns (positions, Laplace covariance or None, mode or None).
    """
    ndim = posterior.ndim
    if init == "mode":
        z_mode, covariance, cholesky = _laplace(posterior)
        if covariance is not None:
            positions = z_mode + noise @ cholesky.T
        else:
            positions = z_mode + 0.1 * noise
        return _finite_starts(posterior, positions, z_mode), covariance, z_mode
    if init == "init":
        z = np.where(np.isfinite(posterior.initial_position), posterior.initial_position, 0.0)
        noise = np.asarray(jax.random.uniform(key, (chains, ndim), minval=-0.1, maxval=0.1))
        return _finite_starts(posterior, z + noise, z), None, None
    if init == "prior":
        theta = np.asarray(posterior.prior_set.sample(key, chains))
        theta = np.stack([posterior.clip_inside(t) for t in theta])
        return np.asarray(posterior.unconstrain(jnp.asarray(theta))), None, None
    raise BayeshfError(f"unknown init {init!r}; use mode, init or prior.")


def _finite_starts(posterior: Posterior, positions: np.ndarray, centre: np.ndarray, tries: int = 40) -> np.ndarray:
    """Each start whose log-density or gradient is not finite, or whose log-density lies more than
    100 + 5 d below the centre's (a Gaussian jitter essentially never does), moves halfway towards ``centre``.

    A chain started where an expected count is negative (a jittered start where a histosys template makes
    it so: NaN in pyhf, a steep finite continuation in the posterior) has every transition divergent and
    never moves; other starts are unchanged.
    """
    out = np.array(positions, dtype=np.float64)
    structure = posterior.structure
    floor = float(_z_value_and_grad(structure, posterior.model, np.asarray(centre, np.float64))[0])
    floor = floor - 100.0 - 5.0 * out.shape[1] if np.isfinite(floor) else -np.inf
    for c in range(out.shape[0]):
        for _ in range(tries):
            value, grad = _z_value_and_grad(structure, posterior.model, out[c])
            if float(value) >= floor and np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))):
                break
            out[c] = 0.5 * (out[c] + centre)
    return out


def _progress(enabled: bool, total: int, description: str):
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step", file=sys.stderr, leave=False)


def sample(model, *, sampler: str = "nuts", chains: int = 4, warmup: int = 1000, draws: int = 1000,
           metric: str = "diagonal", seed: int = 0, priors=None, shapesys: str = "flat", progress: bool = True,
           init: str = "mode", target_acceptance: float | None = None, max_tree_depth: int = 10,
           num_integration_steps: int = 16, step_size: float | None = None, chunk_size: int | None = None,
           prior_draws: int | None = None, compilation_cache: bool = True, target_ess: float | None = None,
           max_time: float | None = None, convergence=None, as_groups: bool = False):
    """Sample the posterior of ``model`` (a model, or a :class:`Posterior` whose priors then hold); returns an
    ``arviz.InferenceData``.

    sampler: "nuts" (default; multinomial NUTS), "hmc" (``num_integration_steps``
    leapfrog steps) or "mh" (random-walk Metropolis with an adapted Gaussian
    proposal), bayeshf's kernels in :mod:`bayeshf.kernels`; "blackjax-nuts",
    "blackjax-hmc", "blackjax-mh": blackjax's kernels of the same algorithms
    (same distributions, other draws, slower on CPU).
    metric: "diagonal" or "dense" inverse mass matrix (MH: proposal covariance).
    priors: None (derived priors), a priors file path, or a dict (see
    :func:`bayeshf.priors.build_priors`); ``shapesys`` picks the shapesys
    convention. init: "mode" (default: the mode of the unconstrained density
    with Laplace jitter; also seeds the metric), "init" or "prior".

    Groups: posterior (one variable per parameter set, multi-element sets with
    a ``<set>_bin`` dimension), sample_stats (lp, diverging, tree_depth,
    n_steps, step_size, acceptance_rate, energy), observed_data,
    posterior_predictive and prior_predictive (Poisson draws of the main
    counts, one variable per channel), prior. The same ``seed`` gives the same
    draws. Ctrl-C keeps the finished draws (``idata.attrs["interrupted"]``).

    target_ess: keep drawing after ``draws`` until every parameter's bulk and
    tail ESS reach it and every R-hat is below 1.01, within ``max_time``
    seconds (see :func:`run_chains`); ``idata.posterior.attrs`` record
    ``target_ess``, ``stop`` ("converged", "max_time", "draws" or
    "interrupted") and ``draws_done``, and :func:`bayeshf.diagnostics.summarize`
    says which parameters fall short.

    compilation_cache: turn JAX's persistent compilation cache on
    (:func:`bayeshf.runtime.enable_compilation_cache`); False leaves JAX's
    setting as it is. convergence: the bulk/tail ESS and R-hat function
    ``target_ess`` uses (default :func:`bayeshf.diagnostics.convergence_table`).
    as_groups: return the groups and attributes as NumPy arrays
    (:func:`bayeshf.idata.inference_groups`; :func:`bayeshf.idata.assemble`
    makes the InferenceData) and import neither ArviZ nor xarray.
    """
    from bayeshf.idata import assemble, inference_groups

    if not as_groups:
        _import_arviz_in_background()
    if compilation_cache:
        enable_compilation_cache()
    posterior = model if isinstance(model, Posterior) else posterior_for(model, priors, shapesys=shapesys)
    raw = run_chains(posterior, sampler=sampler, chains=chains, warmup=warmup, draws=draws, metric=metric,
                     seed=seed, progress=progress, init=init, target_acceptance=target_acceptance,
                     max_tree_depth=max_tree_depth, num_integration_steps=num_integration_steps,
                     step_size=step_size, chunk_size=chunk_size, target_ess=target_ess, max_time=max_time,
                     convergence=convergence)
    settings = dict(sampler=sampler, chains=chains, warmup=warmup, draws=draws, metric=metric, seed=seed,
                    target_acceptance=raw.target_acceptance, target_ess=float(target_ess or 0),
                    max_time=float(max_time or 0), stop=raw.stop, extensions=raw.extensions,
                    init=init, max_tree_depth=max_tree_depth, num_integration_steps=num_integration_steps,
                    backend="blackjax", shapesys=posterior.prior_set.shapesys)
    groups = inference_groups(posterior, raw, seed=seed, settings=settings,
                              prior_draws=draws if prior_draws is None else prior_draws)
    return groups if as_groups else assemble(*groups)
