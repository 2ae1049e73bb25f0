"""``bayeshf.julia.sample``: the same posterior sampled by BAT.jl through juliacall.

Order of work, so that nothing starts (or half-writes) in vain: arguments are
checked first, then Julia is looked for (without downloading), then the model
and priors are built and the prior expressions validated, and only then is
juliacall imported. Nothing is written but a temporary workspace file for
LiteHF.jl, removed afterwards.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
import os
import tempfile
from pathlib import Path

import numpy as np

from bayeshf.errors import BayeshfError

LIKELIHOODS = ("litehf", "jax")
SAMPLERS = ("mh", "hmc")
#: other names accepted for BAT's samplers (BAT's HamiltonianMC uses a no-U-turn termination)
SAMPLER_ALIASES = {"nuts": "hmc", "rwmh": "mh"}


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BayeshfError(f"{name} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise BayeshfError(f"{name} must be {bound}, got {value}.")
    return int(value)


def validate_arguments(*, likelihood: str, sampler: str, chains, steps, seed) -> tuple[str, int, int, int]:
    """Check ``sample``'s options; returns ``(sampler, chains, steps, seed)`` (raises :class:`BayeshfError`)."""
    if likelihood not in LIKELIHOODS:
        raise BayeshfError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}.")
    sampler = SAMPLER_ALIASES.get(sampler, sampler) if isinstance(sampler, str) else sampler
    if sampler not in SAMPLERS:
        raise BayeshfError(f"BAT sampler must be one of {', '.join(SAMPLERS)} (or nuts for hmc), got {sampler!r}.")
    chains = _check_int("chains", chains, 1, 1024)
    steps = _check_int("steps", steps, 1)
    seed = _check_int("seed", seed, 0, 2**64 - 1)
    return sampler, chains, steps, seed


def _as_model(model_or_path):
    if isinstance(model_or_path, (str, os.PathLike, Mapping)):
        from bayeshf.workspace import load

        return load(model_or_path if isinstance(model_or_path, Mapping) else str(model_or_path))
    if not hasattr(model_or_path, "log_likelihood") or not hasattr(model_or_path, "parameters"):
        raise BayeshfError(f"expected a workspace (path or dict) or a bayeshf model, got {type(model_or_path).__name__}.")
    return model_or_path


def _julia_callback(callback):
    """Wrap the Python callback as a Julia CallbackLogDensity (conversions done by PythonCall in Main)."""
    from juliacall import Main as jl

    threads = int(jl.seval("Threads.maxthreadid()"))
    if threads > 1:  # BAT spawns a task per chain; PythonCall must stay on the thread holding the GIL
        raise BayeshfError(f"the JAX callback path needs Julia with one thread but it runs {threads}; "
                           "set PYTHON_JULIACALL_THREADS=1 (or unset JULIA_NUM_THREADS) before starting Python.")

    wrap = jl.seval(
        "(f, bridge) -> bridge.callback_loglikelihood("
        "x -> PythonCall.pyconvert(Float64, f.value(x)), "
        "x -> (r = f(x); (PythonCall.pyconvert(Float64, r[0]), PythonCall.pyconvert(Vector{Float64}, r[1]))); "
        "thread = Threads.threadid())"  # the thread holding the GIL: the only one allowed to call Python
    )
    from bayeshf.julia.environment import load_bridge

    return wrap(callback, load_bridge())


def sample(model_or_path, *, likelihood: str = "litehf", sampler: str = "mh", chains: int = 4, steps: int = 10000,
           seed: int = 0, priors=None, shapesys: str = "flat", prior_draws: int = 1000, callback=None):
    """Sample the posterior with BAT.jl's ``TransformedMCMC``; returns an ``arviz.InferenceData``.

    model_or_path: a bayeshf model, or a workspace path / dict for :func:`bayeshf.load`.

    likelihood: "litehf" (LiteHF.jl's main Poisson term, pure Julia) or "jax"
    (bayeshf's jitted JAX log-likelihood and gradient, called back from Julia).
    sampler: "mh" (``RandomWalk``) or "hmc" (``HamiltonianMC``, AdvancedHMC with
    the generalised no-U-turn termination; "nuts" is accepted for it).
    chains, steps: BAT's ``nchains`` and ``nsteps`` (steps per chain after
    BAT's own burn-in). priors: as :func:`bayeshf.priors.build_priors`; BAT's
    prior is the same PriorSet as Distributions.jl objects, and the
    likelihood carries no constraint term (docs/julia.md).

    callback: with likelihood="jax", another log-likelihood callback with
    the :class:`bayeshf.julia.callback.LogDensityCallback` interface (the
    BAT+pyhf benchmark passes pyhf's); default: bayeshf's JAX log-likelihood.

    Raises :class:`BayeshfError` at once, before touching Julia, for a bad
    argument or where Julia is missing (the sentence says how to get it).
    """
    sampler, chains, steps, seed = validate_arguments(likelihood=likelihood, sampler=sampler, chains=chains,
                                                      steps=steps, seed=seed)
    if callback is not None and (likelihood != "jax" or not callable(callback) or not hasattr(callback, "value")):
        raise BayeshfError("callback needs likelihood='jax' and a LogDensityCallback-like object (call and .value).")
    from bayeshf.julia.environment import load_bridge, require_julia

    require_julia()
    model = _as_model(model_or_path)
    from bayeshf.julia.expressions import prior_expressions, read_expression
    from bayeshf.julia.results import BATSamples, to_inference_data
    from bayeshf.priors import PriorSet, build_priors

    prior_set = priors if isinstance(priors, PriorSet) else build_priors(model, priors, shapesys=shapesys)
    free, expressions = prior_expressions(prior_set)
    if not free:
        raise BayeshfError(f"{model.label} has no free parameter to sample.")
    for expression in expressions:
        read_expression(expression)  # the Julia side evaluates only strings of this grammar
    template = np.where(prior_set.fixed, prior_set.fixed_values, np.asarray(model.init, dtype=float))
    names = spec = None
    if likelihood == "litehf":
        from bayeshf.julia.litehf import check_litehf_support, litehf_names, litehf_spec

        check_litehf_support(model)
        names, spec = litehf_names(model), litehf_spec(model)
    bridge = load_bridge()
    from juliacall import JuliaError

    try:
        raw = _run_bat(bridge, model, likelihood, callback, prior_set, names, spec, expressions, template, free,
                       sampler, chains, steps, seed)
    except JuliaError as error:  # a failure inside Julia: one line for the user, the full error chained
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "unknown Julia error")
        raise BayeshfError(f"BAT.jl failed while sampling {model.label} ({first}).") from error
    samples = BATSamples.from_arrays(*(np.asarray(a) for a in raw))
    attrs = dict(backend="BAT.jl", likelihood=likelihood, sampler=sampler, chains=chains, steps=steps, seed=seed,
                 shapesys=prior_set.shapesys, prior_expressions=list(expressions))
    return to_inference_data(samples, model, prior_set=prior_set, seed=seed, prior_draws=prior_draws, attrs=attrs)


def _run_bat(bridge, model, likelihood, callback, prior_set, names, spec, expressions, template, free, sampler,
             chains, steps, seed):
    """Build the likelihood on the Julia side and sample; returns BAT's flat arrays."""
    with tempfile.TemporaryDirectory(prefix="bayeshf-bat-") as tmp:
        if likelihood == "litehf":
            path = Path(tmp) / "workspace.json"
            path.write_text(json.dumps(spec))
            loglikelihood = bridge.litehf_loglikelihood(str(path), tuple(names))
            check_litehf_agrees(lambda theta: bridge.loglikelihood_at(loglikelihood, theta), model, prior_set)
        else:
            from bayeshf.julia.callback import callback_adapter

            if callback is None:
                callback = callback_adapter(model, prior_set, include_prior=False)
            loglikelihood = _julia_callback(callback)
        return bridge.sample_posterior(loglikelihood, tuple(expressions), template,
                                       np.asarray(free, dtype=np.int64) + 1, sampler, chains, steps, seed)


#: LiteHF's and bayeshf's log-likelihoods must agree this closely before BAT samples LiteHF's
LITEHF_RTOL = 1e-8


def check_points(model, prior_set, n: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` full parameter vectors inside the prior support, every free parameter at a different value.

    The first is the initial point (fixed parameters at their values); the
    others move every free parameter independently, so that two parameters
    read in each other's place change the log-likelihood.
    """
    rng = np.random.default_rng(seed)
    init = np.where(prior_set.fixed, prior_set.fixed_values, np.asarray(model.init, dtype=float))
    lower, upper = np.asarray(prior_set.lower, dtype=float), np.asarray(prior_set.upper, dtype=float)
    lo = np.maximum(lower, init - 0.5)
    hi = np.minimum(upper, init + 0.5)
    lo, hi = lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)  # off the bounds, where a prior may vanish
    points = [init] + [np.where(prior_set.fixed, init, rng.uniform(lo, hi)) for _ in range(n - 1)]
    return np.array(points)


def check_litehf_agrees(litehf_loglikelihood, model, prior_set, *, rtol: float = LITEHF_RTOL, n: int = 4) -> None:
    """Refuse (one sentence) when LiteHF's log-likelihood differs from bayeshf's beyond ``rtol`` relative.

    ``litehf_loglikelihood``: full parameter vector (bayeshf's order) -> LiteHF's
    value. bayeshf's side is the same workspace with LiteHF's interpolation
    codes (:func:`bayeshf.julia.litehf.litehf_reference_model`), so a parameter
    handed to LiteHF in the wrong place, or any other disagreement, stops the
    run before BAT samples a wrong posterior.
    """
    from bayeshf.julia.litehf import litehf_reference_model

    reference = litehf_reference_model(model)
    for theta in check_points(model, prior_set, n):
        theirs, ours = float(litehf_loglikelihood(theta)), float(reference.log_likelihood(theta))
        if theirs == ours:  # also both -inf
            continue
        difference = abs(theirs - ours) / max(abs(ours), 1.0)
        if not difference <= rtol:
            raise BayeshfError(
                f"LiteHF.jl's log-likelihood of {model.label} is {theirs:.10g} where bayeshf's is {ours:.10g} "
                f"(relative difference {difference:.1e}, more than {rtol:g}), so BAT would sample another "
                "posterior: not sampling; use likelihood='jax'."
            )
