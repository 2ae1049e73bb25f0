"""Suite ``logdensity``: time per call of value, value+gradient and Hessian-vector product.

Per-call times are one blocking call from Python; ``value_and_grad_host`` is
one call from NumPy to a float and a NumPy gradient, as an optimiser on the host
makes it (bayeshf: ``HistFactoryModel.value_and_grad``; JAX peers: their jitted
value-and-grad plus the conversions); ``value_and_grad_in_jit`` is
the time per evaluation inside one compiled loop (JAX implementations only);
:mod:`benchmarks.peers` says what each holds. Every implementation is evaluated at the same point (pyhf's inits moved at
random inside the bounds, matched by parameter name), after its first call
(trace + compile + run), which is recorded separately as ``first_call_*``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.cases import ATLAS_CASES, THESIS_CASES, load_case
from benchmarks.harness import Recorder, time_interleaved
from benchmarks.peers import LOGDENSITY_IMPLEMENTATIONS, PeerFailed, Unavailable, reference_point
from benchmarks.progress import progress

METRICS = ("value", "value_and_grad", "value_and_grad_host", "hvp", "value_and_grad_in_jit")


def per_evaluation(summary: dict[str, Any], evaluations: int) -> dict[str, Any]:
    """A timing summary of calls that each ran ``evaluations`` evaluations, scaled to one evaluation."""
    out = dict(summary)
    for key in ("median", "min", "max", "iqr"):
        out[key] = summary[key] / evaluations
    out["repeats"] = [v / evaluations for v in summary["repeats"]]
    out["evaluations"] = evaluations
    return out


def default_cases(quick: bool) -> list[str]:
    return ["thesis_2_bin_corr", "ttbar_ljets"] if quick else [*THESIS_CASES, *ATLAS_CASES]


def measure_case(case: str, spec: dict[str, Any], recorder: Recorder, *, implementations: list[str],
                 repeats: int, min_time: float, seed: int, **extra: Any) -> None:
    """Time every implementation on one workspace; rows carry ``extra`` (e.g. ``n_bins``).

    All implementations are prepared first, then each metric's repeats run
    round robin across them (:func:`time_interleaved`), so load drifting on a
    shared machine hits every implementation alike.
    """
    names, point = reference_point(spec, seed=seed)
    ready: dict[str, Any] = {}
    try:
        for name in implementations:
            prepare = LOGDENSITY_IMPLEMENTATIONS[name]
            try:
                ready[name] = prepare(spec, names, point)
            except Unavailable as reason:
                recorder.skip(implementation=name, case=case, reason=str(reason), **extra)
            except Exception as error:  # a peer failing on a workspace is a result, not a crash
                recorder.skip(implementation=name, case=case, reason=_failed(error), **extra)
        common = {name: {"npars": len(p.par_names), "logpdf": p.logpdf if p.logpdf == p.logpdf else None, **extra}
                  for name, p in ready.items()}  # None (JSON null) for what computes no log-density
        for name, prepared in ready.items():
            for metric, seconds in prepared.setup.items():
                recorder.add_value(case=case, implementation=name, metric=metric, unit="s", value=seconds,
                                   **common[name])
        _time_metrics(case, ready, recorder, common, repeats=repeats, min_time=min_time, extra=extra)
    finally:
        for prepared in ready.values():  # child processes of the *-alone runners
            _close(prepared)


def _failed(error: Exception) -> str:
    return f"failed: {type(error).__name__}: {error}"[:300]


def _close(prepared: Any) -> None:
    if prepared.close is not None:
        try:
            prepared.close()
        except Exception:  # pragma: no cover - freeing one must not keep the others alive
            pass


def _time_metrics(case: str, ready: dict[str, Any], recorder: Recorder, common: dict[str, Any], *, repeats: int,
                  min_time: float, extra: dict[str, Any]) -> None:
    """Each metric's repeats round robin; an implementation that fails while timed is skipped from then on."""
    ready = dict(ready)
    for metric in METRICS:
        fns = {}
        for name, prepared in ready.items():
            fn = getattr(prepared, metric)
            if fn is None:
                recorder.skip(implementation=name, case=case, reason=prepared.notes.get(metric, f"no {metric}"),
                              **extra)
            else:
                fns[name] = fn
        while True:
            try:
                timed = time_interleaved(fns, repeats=repeats, min_time=min_time)
                break
            except PeerFailed as error:
                failed = next((name for name in fns if error.implementation in (name, ready[name].name)), None)
                if failed is None:
                    raise
                recorder.skip(implementation=failed, case=case, reason=_failed(error), **extra)
                _close(ready.pop(failed))
                del fns[failed]
        for name, summary in timed.items():
            if metric.endswith("_in_jit"):
                summary = per_evaluation(summary, ready[name].evaluations)
            recorder.add(case=case, implementation=name, metric=metric, unit="s", summary=summary, **common[name])


def run(options: Any, recorder: Recorder) -> None:
    cases = options.cases or default_cases(options.quick)
    implementations = options.implementations or list(LOGDENSITY_IMPLEMENTATIONS)
    for case in progress(cases, desc="logdensity"):
        measure_case(case, load_case(case, options.data), recorder, implementations=implementations,
                     repeats=options.repeats, min_time=options.min_time, seed=options.seed)
