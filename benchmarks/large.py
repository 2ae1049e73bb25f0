"""Suite ``large``: the synthetic 10,000-bin x 1,000-systematic model, bayeshf only.

Records: array generation time and bytes, model build time, bytes held by the
compiled model's array leaves, first value+gradient call (trace + compile),
value+gradient per call, a fit's wall time and twice_nll, and the process'
resident memory (current after each stage, peak at the end).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import bayeshf
from benchmarks.harness import Recorder, current_rss_mb, peak_rss_mb, time_per_call
from bayeshf.generators import synthetic_arrays


def model_bytes(model: Any) -> int:
    """Bytes held by the array leaves of a compiled model (a JAX pytree)."""
    import jax

    return int(sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree_util.tree_leaves(model)))


def run(options: Any, recorder: Recorder) -> None:
    import jax
    import jax.numpy as jnp

    n_bins = options.n_bins or (200 if options.quick else 10_000)
    n_systematics = options.n_systematics if options.n_systematics is not None else (20 if options.quick else 1_000)
    case = f"synthetic_{n_bins}x{n_systematics}"
    tags = {"n_bins": n_bins, "n_systematics": n_systematics}

    def record(metric: str, unit: str, value: float) -> None:
        recorder.add_value(case=case, implementation="bayeshf", metric=metric, unit=unit, value=value, **tags)

    record("rss_start", "MB", current_rss_mb())
    start = time.perf_counter()
    arrays = synthetic_arrays(n_bins, n_systematics, seed=options.seed)
    record("generate", "s", time.perf_counter() - start)
    record("arrays", "MB", arrays.nbytes / 1e6)
    record("rss_after_generate", "MB", current_rss_mb())

    start = time.perf_counter()
    model = bayeshf.HistFactoryModel.from_arrays(arrays)
    record("build", "s", time.perf_counter() - start)
    record("model", "MB", model_bytes(model) / 1e6)
    record("rss_after_build", "MB", current_rss_mb())
    del arrays  # the model holds what it needs

    # the model is a jit argument (a pytree), not a closure: its arrays stay out of the program's constants
    value_and_grad = jax.jit(jax.value_and_grad(lambda m, p: m.logpdf(p), argnums=1))
    x = jnp.asarray(np.asarray(model.init, dtype=float))
    start = time.perf_counter()
    jax.block_until_ready(value_and_grad(model, x))
    record("first_call_value_and_grad", "s", time.perf_counter() - start)
    summary = time_per_call(lambda: jax.block_until_ready(value_and_grad(model, x)),
                            repeats=options.repeats, min_time=options.min_time)
    recorder.add(case=case, implementation="bayeshf", metric="value_and_grad", unit="s", summary=summary, **tags)
    record("rss_after_gradient", "MB", current_rss_mb())

    start = time.perf_counter()
    result = bayeshf.fit(model)
    recorder.add_value(case=case, implementation="bayeshf", metric="fit", unit="s",
                       value=time.perf_counter() - start, twice_nll=float(result.twice_nll),
                       success=bool(result.success), **tags)
    record("peak_rss", "MB", peak_rss_mb())
