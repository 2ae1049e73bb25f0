"""Suite ``nbin``: the log-density, fit and sampling suites over thesis n-bin models.

n in {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000} (``--sizes``); the model has
n + 1 parameters (:func:`bayeshf.generators.nbin_workspace`). An
implementation whose measurement at one size took longer than the budget is
not run at larger sizes (recorded as a skip with the reason).
"""

from __future__ import annotations

import time
from typing import Any

from bayeshf.bench import fitting, logdensity, sampling
from bayeshf.bench.harness import Recorder
from bayeshf.bench.progress import progress
from bayeshf.generators import nbin_workspace

SIZES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
QUICK_SIZES = [2, 20]
BUDGET_S = 45.0  # wall time of one implementation at one size beyond which larger sizes are skipped

LOGDENSITY = ["bayeshf", "pyhf-jax", "pyhf-numpy", "nextstat"]
FIT = ["bayeshf", "pyhf-numpy-slsqp", "pyhf-numpy-minuit", "nextstat"]
SAMPLING = ["bayeshf", "blackjax-pyhf", "nextstat"]
SAMPLING_STEPS = 500
SAMPLING_WARMUP = 300


class Budget:
    """Remembers which (suite, implementation) exceeded the time budget, and at which size."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.exceeded: dict[tuple[str, str], str] = {}

    def allowed(self, suite: str, names: list[str], recorder: Recorder, case: str) -> list[str]:
        kept = []
        for name in names:
            reason = self.exceeded.get((suite, name))
            if reason:
                recorder.skip(implementation=name, case=case, reason=reason)
            else:
                kept.append(name)
        return kept

    def run(self, suite: str, name: str, n: int, fn: Any) -> None:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        if elapsed > self.seconds:
            self.exceeded[(suite, name)] = (f"not run above n={n}: {suite} took {elapsed:.0f} s at n={n} "
                                            f"(budget {self.seconds:.0f} s)")


def run(options: Any, recorder: Recorder) -> None:
    sizes = options.sizes or (QUICK_SIZES if options.quick else SIZES)
    chosen = options.implementations
    budget = Budget(BUDGET_S)

    def pick(names: list[str]) -> list[str]:
        return [n for n in names if chosen is None or n in chosen]

    for n in progress(sizes, desc="nbin"):
        spec = nbin_workspace(n)
        case = f"nbin_{n}"
        tags = {"n_bins": n}
        for name in budget.allowed("logdensity", pick(LOGDENSITY), recorder, case):
            budget.run("logdensity", name, n, lambda: logdensity.measure_case(
                case, spec, recorder, implementations=[name], repeats=options.repeats, min_time=options.min_time,
                seed=options.seed, suite="logdensity", **tags))
        fit_names = pick(["bayeshf", "nextstat"] if options.quick else FIT)
        for name in budget.allowed("fit", fit_names, recorder, case):
            budget.run("fit", name, n, lambda: fitting.measure_case(
                case, spec, recorder, implementations=[name], repeats=1, suite="fit", **tags))
        if options.quick:
            continue  # sampling compiles take 10-20 s per implementation: not in the smoke test
        for name in budget.allowed("sampling", pick(SAMPLING), recorder, case):
            budget.run("sampling", name, n, lambda: sampling.measure(
                case, spec, recorder, implementations=[name], samplers=["nuts"], steps=[SAMPLING_STEPS],
                repeats=1, seed=options.seed, warmup=SAMPLING_WARMUP, suite="sampling", **tags))
