"""Log-density implementations compared by the suites, each a named runner.

Every ``prepare_*`` function takes a workspace spec and a point given by
parameter names, builds that implementation's model, and returns a
:class:`Prepared` with zero-argument thunks (value, value and gradient,
Hessian-vector product) that block until the result is ready. A runner that
cannot run raises :class:`Unavailable` with a one-line reason.

Two ways of timing a JAX log-density, both applied identically to every JAX
implementation:

- *per call* (``value``, ``value_and_grad``, ``hvp``): one call of the jitted
  function from Python, blocking on the result, as a host loop (scipy,
  iminuit) pays it. Besides the computation this holds JAX's fixed per-call
  cost: Python dispatch (~6-9 us here) and, for any program XLA estimates at
  over 1,000 flops, the hand-off of the execution to a worker thread and back
  (jax's asynchronous CPU dispatch; tens of microseconds on a loaded 2-core
  machine). A timing loop that does *not* block measures how fast calls can
  be queued, not what one costs.
- *in jit* (``value_and_grad_in_jit``): ``evaluations`` chained evaluations
  inside one compiled ``lax.fori_loop`` (each point depends on the previous
  result, so nothing is hoisted or skipped), time per evaluation: what a
  sampler or optimizer compiled with the model (blackjax under ``jit``) pays.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from benchmarks.harness import time_once


class Unavailable(Exception):
    """This implementation cannot run here; the message says why in one line."""


class PeerFailed(RuntimeError):
    """An implementation failed while being timed (``implementation``: its name); the others go on."""

    def __init__(self, message: str, implementation: str | None = None) -> None:
        super().__init__(message)
        self.implementation = implementation


@dataclass
class Prepared:
    """One implementation ready to be timed at one point."""

    name: str
    par_names: list[str]
    point: np.ndarray
    value: Callable[[], Any] | None = None
    value_and_grad: Callable[[], Any] | None = None
    hvp: Callable[[], Any] | None = None
    setup: dict[str, float] = field(default_factory=dict)  # seconds: load, first calls (trace + compile + run)
    logpdf: float = float("nan")  # at the point, to check that the implementations agree
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it is missing
    value_and_grad_in_jit: Callable[[], Any] | None = None  # `evaluations` chained evaluations in one jitted loop
    value_and_grad_host: Callable[[], Any] | None = None  # NumPy point in, (float, NumPy gradient) out
    evaluations: int = 1  # evaluations per call of the *_in_jit thunks
    close: Callable[[], None] | None = None  # frees what the runner holds (the child process of a *-alone runner)


def require(module: str, install: str | None = None) -> None:
    """Raise :class:`Unavailable` when ``module`` is not installed."""
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed (pip install {install or module})")


def reference_point(spec: dict[str, Any], seed: int = 0, scale: float = 0.1) -> tuple[list[str], np.ndarray]:
    """pyhf's parameter names and a reproducible point near the inits, inside the bounds.

    Free parameters move by ``scale`` x (bound width, capped at 2) uniformly at
    random around the init; fixed parameters stay at their init.
    """
    import pyhf

    pyhf.set_backend("numpy")
    model = pyhf.Workspace(spec).model()
    init = np.asarray(model.config.suggested_init(), dtype=float)
    bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
    fixed = np.asarray(model.config.suggested_fixed(), dtype=bool)
    rng = np.random.default_rng(seed)
    width = np.minimum(bounds[:, 1] - bounds[:, 0], 2.0)
    point = init + scale * width * rng.uniform(-1.0, 1.0, size=init.shape)
    point = np.where(fixed, init, np.clip(point, bounds[:, 0], bounds[:, 1]))
    return list(model.config.par_names), point


def reorder(point: np.ndarray, names: list[str], target: list[str], who: str) -> np.ndarray:
    """``point`` (ordered as ``names``) reordered to ``target``'s parameter order."""
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in target if name not in index]
    if missing:
        raise Unavailable(f"{who} names parameters differently from pyhf (e.g. {missing[0]!r})")
    return np.asarray([point[index[name]] for name in target], dtype=float)


def _jax_thunks(logpdf: Callable, state: Any, x: Any, v: Any, prepared: Prepared, *, closure: bool) -> None:
    """Jit value, value-and-grad and HVP of ``logpdf(state, pars)``; time their first calls.

    ``closure=True`` jits ``lambda p: logpdf(state, p)`` as a user typically
    writes it (the model's arrays become compile-time constants: least
    dispatch work per call); ``closure=False`` passes ``state`` (a pytree) as
    a jit argument (no constants; every leaf is an argument at every call).
    """
    import jax

    if closure:
        def bind(fn: Callable) -> Callable:
            return lambda *args: fn(state, *args)

        value = jax.jit(bind(logpdf))
        value_and_grad = jax.jit(bind(jax.value_and_grad(logpdf, argnums=1)))
        head: tuple = ()
    else:
        value = jax.jit(logpdf)
        value_and_grad = jax.jit(jax.value_and_grad(logpdf, argnums=1))
        head = (state,)

    def hvp_fn(s: Any, p: Any, d: Any) -> Any:
        return jax.jvp(lambda q: jax.grad(logpdf, argnums=1)(s, q), (p,), (d,))[1]

    hvp = jax.jit(lambda p, d: hvp_fn(state, p, d)) if closure else jax.jit(hvp_fn)
    for metric, fn, args in (("value", value, (*head, x)), ("value_and_grad", value_and_grad, (*head, x)),
                             ("hvp", hvp, (*head, x, v))):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        prepared.setup[f"first_call_{metric}"] = time.perf_counter() - start
        if metric == "value":
            prepared.logpdf = float(out)
    prepared.value = lambda: jax.block_until_ready(value(*head, x))
    prepared.value_and_grad = lambda: jax.block_until_ready(value_and_grad(*head, x))
    prepared.hvp = lambda: jax.block_until_ready(hvp(*head, x, v))
    x_host = np.asarray(x)

    def value_and_grad_host() -> tuple[float, np.ndarray]:  # as an optimiser on the host calls it
        value, grad = value_and_grad(*head, x_host)
        return float(value), np.asarray(grad)

    value_and_grad_host()
    prepared.value_and_grad_host = value_and_grad_host
    per_call = min(time_once(prepared.value_and_grad)[0] for _ in range(3))
    evaluations = int(np.clip(IN_JIT_SECONDS / per_call, IN_JIT_MIN, IN_JIT_MAX))
    gradient = jax.value_and_grad(logpdf, argnums=1)
    loop = in_jit_loop((lambda p: gradient(state, p)) if closure else gradient, evaluations)
    start = time.perf_counter()
    jax.block_until_ready(loop(*head, x))
    prepared.setup["first_call_value_and_grad_in_jit"] = time.perf_counter() - start
    prepared.value_and_grad_in_jit = lambda: jax.block_until_ready(loop(*head, x))
    prepared.evaluations = evaluations


#: evaluations per in-jit loop: about this many seconds of per-call time, within [MIN, MAX]
IN_JIT_SECONDS, IN_JIT_MIN, IN_JIT_MAX = 0.3, 10, 1000


def in_jit_loop(fn: Callable, evaluations: int) -> Callable:
    """Jitted ``(*head, x) -> scalar`` running ``fn(*head, point)`` ``evaluations`` times in a ``lax.fori_loop``.

    Each point is ``x`` moved by 1e-12 x tanh(sum of everything the previous
    evaluation returned): the evaluations form a chain, as in a sampler, so
    XLA can neither hoist the body out of the loop nor drop its outputs; the
    shift itself is far below the float64 resolution of any parameter that
    matters.
    """
    import jax
    import jax.numpy as jnp

    def run(*args: Any) -> Any:
        *head, x0 = args

        def body(_: Any, carry: Any) -> Any:
            out = fn(*head, x0 + 1e-12 * jnp.tanh(carry))
            return carry + sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(out))

        return jax.lax.fori_loop(0, evaluations, body, jnp.zeros((), x0.dtype))

    return jax.jit(run)


def _direction(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n)


def prepare_bayeshf(spec: dict[str, Any], names: list[str], point: np.ndarray, *, closure: bool = True) -> Prepared:
    """bayeshf: ``bayeshf.load`` then ``jax.jit`` of ``model.logpdf`` (and its grad / HVP).

    ``closure=False`` (runner ``bayeshf-pytree``) passes the model pytree as a jit argument instead.
    """
    import bayeshf
    import jax.numpy as jnp

    start = time.perf_counter()
    model = bayeshf.load(spec)
    load_s = time.perf_counter() - start
    x = reorder(point, names, list(model.par_names), "bayeshf")
    prepared = Prepared("bayeshf" if closure else "bayeshf-pytree", list(model.par_names), x, setup={"load": load_s})
    _jax_thunks(lambda m, p: m.logpdf(p), model, jnp.asarray(x), jnp.asarray(_direction(len(x))), prepared,
                closure=closure)
    if closure:  # bayeshf's own host API (one packed output; see HistFactoryModel.value_and_grad)
        start = time.perf_counter()
        model.value_and_grad(x)
        prepared.setup["first_call_value_and_grad_host"] = time.perf_counter() - start
        prepared.value_and_grad_host = lambda: model.value_and_grad(x)
    else:
        prepared.value_and_grad_host = None
        prepared.notes["value_and_grad_host"] = "bayeshf's host API is the `bayeshf` row"
    return prepared


def prepare_pyhf_jax(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
    """pyhf with its jax backend (float64), the log-density jitted by us as a user would."""
    require("pyhf")
    import jax.numpy as jnp
    import pyhf

    pyhf.set_backend("jax", precision="64b")
    start = time.perf_counter()
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = jnp.asarray(workspace.data(model))
    load_s = time.perf_counter() - start
    x = reorder(point, names, list(model.config.par_names), "pyhf")
    prepared = Prepared("pyhf-jax", list(model.config.par_names), x, setup={"load": load_s})
    _jax_thunks(lambda d, p: model.logpdf(p, d)[0], data, jnp.asarray(x), jnp.asarray(_direction(len(x))), prepared,
                closure=True)
    return prepared


def prepare_pyhf_numpy(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
    """pyhf with its numpy backend: value only (the backend has no gradient)."""
    require("pyhf")
    import pyhf

    pyhf.set_backend("numpy")
    start = time.perf_counter()
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = np.asarray(workspace.data(model))
    load_s = time.perf_counter() - start
    x = reorder(point, names, list(model.config.par_names), "pyhf")
    prepared = Prepared("pyhf-numpy", list(model.config.par_names), x, setup={"load": load_s})
    prepared.value = lambda: model.logpdf(x, data)
    start = time.perf_counter()
    prepared.logpdf = float(prepared.value()[0])
    prepared.setup["first_call_value"] = time.perf_counter() - start
    for metric in ("value_and_grad", "hvp", "value_and_grad_in_jit", "value_and_grad_host"):
        prepared.notes[metric] = "pyhf's numpy backend has no gradient"
    return prepared


def prepare_nextstat(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
    """NextStat (Rust): ``nextstat.from_pyhf`` model, ``nll`` and ``grad_nll`` (value+grad = both calls)."""
    require("nextstat")
    import nextstat

    start = time.perf_counter()
    model = nextstat.from_pyhf(json.dumps(spec))
    load_s = time.perf_counter() - start
    par_names = list(model.parameter_names())
    x = reorder(point, names, par_names, "NextStat")
    prepared = Prepared("nextstat", par_names, x, setup={"load": load_s})

    def value_and_grad() -> tuple[float, Any]:
        return model.nll(x), model.grad_nll(x)

    prepared.value = lambda: model.nll(x)
    prepared.value_and_grad = value_and_grad
    prepared.value_and_grad_host = value_and_grad  # NextStat's API takes and returns host values
    start = time.perf_counter()
    prepared.logpdf = -float(prepared.value())
    prepared.setup["first_call_value"] = time.perf_counter() - start
    prepared.notes["hvp"] = "NextStat exposes no Hessian-vector product"
    prepared.notes["value_and_grad_in_jit"] = "NextStat is not a JAX function (no compiled loop); see its per-call time"
    return prepared


def prepare_jax_call_floor(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
    """Not a log-density: JAX's cost per call from Python, measured like the JAX implementations.

    Jitted functions with the same inputs and outputs (a scalar; a scalar and
    a vector; a vector) whose work is one 32x32 matrix-vector product: enough
    for XLA's estimate (2,048 flops) to pass the 1,000-flop line above which
    the CPU client hands the execution to a worker thread, as it does for
    every real model here, and next to nothing to compute. No JAX function of
    that size can take less per call in the same process.
    """
    import jax
    import jax.numpy as jnp

    matrix = jnp.asarray(np.random.default_rng(0).normal(size=(32, 32)) / 32)

    def work(p: Any) -> Any:
        return jnp.sum(matrix @ jnp.resize(p, 32))

    x = jnp.asarray(point)
    prepared = Prepared("jax-call-floor", list(names), np.asarray(point), setup={"load": 0.0})
    value = jax.jit(work)
    value_and_grad = jax.jit(lambda p: (work(p), p * 1.0))
    hvp = jax.jit(lambda p, d: p * work(d))
    for metric, fn, args in (("value", value, (x,)), ("value_and_grad", value_and_grad, (x,)), ("hvp", hvp, (x, x))):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        prepared.setup[f"first_call_{metric}"] = time.perf_counter() - start
    prepared.value = lambda: jax.block_until_ready(value(x))
    prepared.value_and_grad = lambda: jax.block_until_ready(value_and_grad(x))
    prepared.hvp = lambda: jax.block_until_ready(hvp(x, x))
    x_host = np.asarray(point)
    # on the host the cheapest shape is one packed output (as HistFactoryModel.value_and_grad returns)
    packed = jax.jit(lambda p: jnp.concatenate([work(p)[None], p * 1.0]))

    def value_and_grad_host() -> tuple[float, np.ndarray]:
        out = np.asarray(packed(x_host))
        return float(out[0]), out[1:]

    value_and_grad_host()

    prepared.value_and_grad_host = value_and_grad_host
    prepared.notes["value_and_grad_in_jit"] = "jax-call-floor measures the per-call cost only"
    return prepared


def prepare_pyhf_jax_alone(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
    """pyhf's jax backend in a process of its own with JAX's defaults, as pyhf's users run it."""
    from benchmarks.isolated import alone  # that module imports this one

    return alone("pyhf-jax")(spec, names, point)


#: name -> prepare function, in the order tables list them (bayeshf first)
LOGDENSITY_IMPLEMENTATIONS: dict[str, Callable[[dict[str, Any], list[str], np.ndarray], Prepared]] = {
    "bayeshf": prepare_bayeshf,
    "bayeshf-pytree": lambda spec, names, point: prepare_bayeshf(spec, names, point, closure=False),
    "pyhf-jax": prepare_pyhf_jax,
    "pyhf-numpy": prepare_pyhf_numpy,
    "nextstat": prepare_nextstat,
    "jax-call-floor": prepare_jax_call_floor,
    "pyhf-jax-alone": prepare_pyhf_jax_alone,
}

