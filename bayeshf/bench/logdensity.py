"""Suite ``logdensity``: time per call of value, value+gradient and Hessian-vector product.

Every implementation is evaluated at the same point (pyhf's inits moved at
random inside the bounds, matched by parameter name), after its first call
(trace + compile + run), which is recorded separately as ``first_call_*``.
"""

from __future__ import annotations

from typing import Any

from bayeshf.bench.cases import ATLAS_CASES, THESIS_CASES, load_case
from bayeshf.bench.harness import Recorder, time_per_call
from bayeshf.bench.peers import LOGDENSITY_IMPLEMENTATIONS, Unavailable, reference_point
from bayeshf.bench.progress import progress

METRICS = ("value", "value_and_grad", "hvp")


def default_cases(quick: bool) -> list[str]:
    return ["thesis_2_bin_corr", "ttbar_ljets"] if quick else [*THESIS_CASES, *ATLAS_CASES]


def measure_case(case: str, spec: dict[str, Any], recorder: Recorder, *, implementations: list[str],
                 repeats: int, min_time: float, seed: int, **extra: Any) -> None:
    """Time every implementation on one workspace; rows carry ``extra`` (e.g. ``n_bins``)."""
    names, point = reference_point(spec, seed=seed)
    for name in implementations:
        prepare = LOGDENSITY_IMPLEMENTATIONS[name]
        try:
            prepared = prepare(spec, names, point)
        except Unavailable as reason:
            recorder.skip(implementation=name, case=case, reason=str(reason))
            continue
        except Exception as error:  # a peer failing on a workspace is a result, not a crash
            recorder.skip(implementation=name, case=case, reason=f"failed: {type(error).__name__}: {error}"[:300])
            continue
        common = {"npars": len(prepared.par_names), "logpdf": prepared.logpdf, **extra}
        for metric, seconds in prepared.setup.items():
            recorder.add_value(case=case, implementation=name, metric=metric, unit="s", value=seconds, **common)
        for metric in METRICS:
            fn = getattr(prepared, metric)
            if fn is None:
                recorder.skip(implementation=name, case=case, reason=prepared.notes.get(metric, f"no {metric}"))
                continue
            summary = time_per_call(fn, repeats=repeats, min_time=min_time)
            recorder.add(case=case, implementation=name, metric=metric, unit="s", summary=summary, **common)


def run(options: Any, recorder: Recorder) -> None:
    cases = options.cases or default_cases(options.quick)
    implementations = options.implementations or list(LOGDENSITY_IMPLEMENTATIONS)
    for case in progress(cases, desc="logdensity"):
        measure_case(case, load_case(case, options.data), recorder, implementations=implementations,
                     repeats=options.repeats, min_time=options.min_time, seed=options.seed)
