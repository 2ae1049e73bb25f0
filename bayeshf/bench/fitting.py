"""Suite ``fit``: maximum-likelihood fit wall time and the twice_nll each implementation reaches.

The first fit in the process (including any compilation) is recorded as
``first_fit``; then ``fit`` repeats the same fit warm. ``twice_nll`` is the
value each implementation reports at its minimum; the report compares it with
the lowest value any implementation reached on that case.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import numpy as np

from bayeshf.bench.cases import ATLAS_CASES, THESIS_CASES, load_case
from bayeshf.bench.harness import Recorder, summarize
from bayeshf.bench.peers import Unavailable, require
from bayeshf.bench.progress import progress

FitThunk = Callable[[], float]  # runs one fit, returns twice_nll at the minimum


def bayeshf_fit_function() -> Callable[..., Any]:
    """``bayeshf.fit`` (the function, whether exported at top level or only in bayeshf.fit)."""
    try:
        import bayeshf
        import bayeshf.fit as fit_module
    except ImportError as error:
        raise Unavailable(f"bayeshf.fit is not available yet ({error})") from error
    candidate = getattr(bayeshf, "fit", None)
    if callable(candidate):
        return candidate
    if callable(getattr(fit_module, "fit", None)):
        return fit_module.fit
    raise Unavailable("bayeshf.fit is not available yet")


def prepare_bayeshf(spec: dict[str, Any]) -> FitThunk:
    import bayeshf

    fit = bayeshf_fit_function()
    model = bayeshf.load(spec)
    return lambda: float(fit(model).twice_nll)


def _prepare_pyhf(spec: dict[str, Any], backend: str, optimizer: str) -> FitThunk:
    require("pyhf")
    import pyhf

    if optimizer == "minuit":
        require("iminuit")
    pyhf.set_backend(backend, optimizer, **({"precision": "64b"} if backend == "jax" else {}))
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = pyhf.tensorlib.astensor(workspace.data(model))

    def thunk() -> float:
        pyhf.set_backend(backend, optimizer, **({"precision": "64b"} if backend == "jax" else {}))
        _, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
        return float(np.asarray(twice_nll))

    return thunk


def prepare_nextstat(spec: dict[str, Any]) -> FitThunk:
    require("nextstat")
    import nextstat

    model = nextstat.from_pyhf(json.dumps(spec))
    return lambda: float(nextstat.fit(model).twice_nll)


FIT_IMPLEMENTATIONS: dict[str, Callable[[dict[str, Any]], FitThunk]] = {
    "bayeshf": prepare_bayeshf,
    "pyhf-numpy-slsqp": lambda spec: _prepare_pyhf(spec, "numpy", "scipy"),
    "pyhf-numpy-minuit": lambda spec: _prepare_pyhf(spec, "numpy", "minuit"),
    "pyhf-jax-slsqp": lambda spec: _prepare_pyhf(spec, "jax", "scipy"),
    "nextstat": prepare_nextstat,
}


def measure_case(case: str, spec: dict[str, Any], recorder: Recorder, *, implementations: list[str],
                 repeats: int, **extra: Any) -> None:
    """Fit ``spec`` with every implementation: first (cold) fit, then ``repeats`` warm fits."""
    for name in implementations:
        try:
            thunk = FIT_IMPLEMENTATIONS[name](spec)
            start = time.perf_counter()
            twice_nll = thunk()
            first = time.perf_counter() - start
        except Unavailable as reason:
            recorder.skip(implementation=name, case=case, reason=str(reason))
            continue
        except Exception as error:
            recorder.skip(implementation=name, case=case, reason=f"failed: {type(error).__name__}: {error}"[:300])
            continue
        times, values = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            values.append(thunk())
            times.append(time.perf_counter() - start)
        recorder.add_value(case=case, implementation=name, metric="first_fit", unit="s", value=first,
                           twice_nll=twice_nll, **extra)
        recorder.add(case=case, implementation=name, metric="fit", unit="s", summary=summarize(times),
                     twice_nll=float(np.min(values)), twice_nll_repeats=values, **extra)


def run(options: Any, recorder: Recorder) -> None:
    cases = options.cases or (["thesis_2_bin_corr", "thesis_4_bin"] if options.quick else [*THESIS_CASES, *ATLAS_CASES])
    implementations = options.implementations or (
        ["bayeshf", "pyhf-numpy-slsqp", "pyhf-numpy-minuit", "nextstat"] if options.quick else list(FIT_IMPLEMENTATIONS))
    repeats = 1 if options.quick else max(1, min(options.repeats, 3))
    for case in progress(cases, desc="fit"):
        measure_case(case, load_case(case, options.data), recorder, implementations=implementations, repeats=repeats)
