"""Suite ``nbin``: the log-density, fit and sampling suites over thesis n-bin models.

n in {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000} (``--sizes``); the model has
n + 1 parameters (:func:`bayeshf.generators.nbin_workspace`). ``--parts``
picks which suites to sweep (default all three; ``--quick`` leaves sampling
out unless asked for). A run of some parts keeps the rows the other parts
already have in nbin.json, each part with its own provenance, so the parts
can be run at different times: ``--parts logdensity,fit`` now,
``--parts sampling`` later.

Slow peers are kept in check by a per-call budget (:class:`Budget`): after
each size, an implementation's cost per call (a log-density call, one fit,
one sampling run) is extrapolated to the next size with the growth seen so
far (at least linear in n); when it would exceed the budget, that size and
all larger ones are recorded as skips with the reason instead of run.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from benchmarks import fitting, logdensity, sampling
from benchmarks.harness import Recorder
from benchmarks.progress import progress
from bayeshf.errors import BayeshfError
from bayeshf.generators import nbin_workspace

SIZES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
QUICK_SIZES = [2, 20]
PARTS = ("logdensity", "fit", "sampling")

#: seconds one call may take (log-density: slowest per-call metric; fit: one fit; sampling: one run)
BUDGET_S = {"logdensity": 0.5, "fit": 60.0, "sampling": 120.0}

LOGDENSITY = ["bayeshf", "pyhf-jax", "pyhf-numpy", "nextstat"]
FIT = ["bayeshf", "pyhf-numpy-slsqp", "pyhf-numpy-minuit", "nextstat"]
SAMPLING = ["bayeshf", "blackjax-pyhf", "nextstat"]
SAMPLING_STEPS = 500
SAMPLING_WARMUP = 300
#: warm runs per implementation and size, round robin (ESS of 2 x 500 draws varies by +-30% from run to run)
SAMPLING_REPEATS = 3
PER_CALL_METRICS = ("value", "value_and_grad", "hvp")


class Budget:
    """Per (part, implementation): the cost per call seen at each size, and the size from which to skip."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.history: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self.exceeded: dict[tuple[str, str], str] = {}

    def predict(self, part: str, name: str, n: int) -> float | None:
        """Cost per call expected at ``n`` from the last sizes measured (None before any)."""
        seen = self.history.get((part, name))
        if not seen:
            return None
        last_n, last_cost = seen[-1]
        slope = 1.0  # at least linear: small sizes are overhead-dominated and understate the growth
        if len(seen) >= 2:
            (n0, c0), (n1, c1) = seen[-2], seen[-1]
            if n1 > n0 and c0 > 0 and c1 > 0:
                slope = min(3.0, max(slope, math.log(c1 / c0) / math.log(n1 / n0)))
        return last_cost * (n / last_n) ** slope

    def allowed(self, part: str, names: list[str], recorder: Recorder, case: str, n: int) -> list[str]:
        """``names`` that may run at size ``n``; the others are recorded as skips with the reason."""
        kept = []
        for name in names:
            key = (part, name)
            predicted = self.predict(part, name, n)
            if key not in self.exceeded and predicted is not None and predicted > self.seconds[part]:
                last_n, last_cost = self.history[key][-1]
                self.exceeded[key] = (f"not run from n={n}: {part} took {last_cost:.3g} s per call at n={last_n}, "
                                      f"extrapolated {predicted:.3g} s at n={n} (budget {self.seconds[part]:.3g} s)")
            if key in self.exceeded:
                recorder.skip(implementation=name, case=case, reason=self.exceeded[key], suite=part, n_bins=n)
            else:
                kept.append(name)
        return kept

    def record(self, part: str, name: str, n: int, cost: float) -> None:
        self.history.setdefault((part, name), []).append((n, cost))

    def record_rows(self, part: str, names: list[str], n: int, rows: list[dict[str, Any]],
                    metrics: tuple[str, ...]) -> None:
        """Record for each of ``names`` its largest median among ``rows`` of ``metrics`` (runs measured together)."""
        for name in names:
            costs = [r["median"] for r in rows if r["implementation"] == name and r["metric"] in metrics]
            if costs:
                self.record(part, name, n, max(costs))


def choose_parts(options: Any) -> list[str]:
    parts = options.parts or [p for p in PARTS if not (options.quick and p == "sampling")]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise BayeshfError(f"unknown nbin part {unknown[0]!r}; choose from {', '.join(PARTS)}.")
    return [p for p in PARTS if p in parts]


def run(options: Any, recorder: Recorder) -> None:
    sizes = options.sizes or (QUICK_SIZES if options.quick else SIZES)
    parts = choose_parts(options)
    chosen = options.implementations
    budget = Budget(BUDGET_S)
    recorder.parts = parts
    others = [p for p in PARTS if p not in parts]
    previous = recorder.previous() if others else None
    if previous:
        recorder.carry_over(previous, others)

    def pick(names: list[str]) -> list[str]:
        return [n for n in names if chosen is None or n in chosen]

    def tagged(part: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` and tag the skips it records with the part (the other suites' modules do not)."""
        first = len(recorder.skips)
        fn()
        for entry in recorder.skips[first:]:
            entry.setdefault("suite", part)

    for n in progress(sizes, desc="nbin"):
        spec = nbin_workspace(n)
        case = f"nbin_{n}"
        tags = {"n_bins": n}
        if "logdensity" in parts:
            names = budget.allowed("logdensity", pick(LOGDENSITY), recorder, case, n)
            first_row = len(recorder.rows)
            tagged("logdensity", lambda: logdensity.measure_case(
                case, spec, recorder, implementations=names, repeats=options.repeats, min_time=options.min_time,
                seed=options.seed, suite="logdensity", **tags))
            # all interleaved at this size; the budget looks at each one's slowest call
            budget.record_rows("logdensity", names, n, recorder.rows[first_row:], PER_CALL_METRICS)
        if "fit" in parts:
            repeats = 1
            for name in budget.allowed("fit", pick(["bayeshf", "nextstat"] if options.quick else FIT), recorder,
                                       case, n):
                start = time.perf_counter()
                tagged("fit", lambda: fitting.measure_case(case, spec, recorder, implementations=[name],
                                                           repeats=repeats, suite="fit", **tags))
                budget.record("fit", name, n, (time.perf_counter() - start) / (1 + repeats))
        if "sampling" in parts:
            steps = (options.steps or [100 if options.quick else SAMPLING_STEPS])[0]
            warmup = 100 if options.quick else SAMPLING_WARMUP
            names = budget.allowed("sampling", pick(SAMPLING), recorder, case, n)
            first_row = len(recorder.rows)
            tagged("sampling", lambda: sampling.measure(
                case, spec, recorder, implementations=names, samplers=["nuts"], steps=[steps],
                repeats=1 if options.quick else SAMPLING_REPEATS, seed=options.seed, warmup=warmup,
                suite="sampling", **tags))
            # interleaved repeats; the budget looks at each one's warm run
            budget.record_rows("sampling", names, n, recorder.rows[first_row:], ("warm",))
