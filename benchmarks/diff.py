"""``diff`` suite: cost of the gradient of profiled Z0 and of the expected upper limit w.r.t. all signal bins.

For each case: one evaluation without gradient (jitted ``bayeshf.diff`` call)
and one value + gradient with respect to every bin of the signal sample
(jitted ``jax.value_and_grad``), timed interleaved; the row ``ratio`` is
gradient time / value time (targets: <= 2 for Z0, <= 3 for the limit).
NextStat's ``ProfiledDifferentiableSession`` is timed side by side when its
Python API can run here (it needs a CUDA or Metal build and PyTorch; otherwise
the reason is recorded as a skip).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import bayeshf
import bayeshf.diff as diff
from benchmarks.cases import load_case
from benchmarks.harness import Recorder, time_interleaved

CASES = ["sbottom_RegionA_1300_205_60", "ttbar_ljets"]
QUANTITIES = {
    "Z0": lambda model, sample: lambda s: diff.significance(model, {sample: s}),
    "Z0 expected": lambda model, sample: lambda s: diff.significance(model, {sample: s}, expected=True),
    "limit expected": lambda model, sample: lambda s: diff.upper_limit(model, {sample: s}, expected=True),
}


def signal_sample(model) -> str:
    """The sample that carries the POI as a normfactor."""
    for channel in model.spec["channels"]:
        for sample in channel["samples"]:
            if any(m["type"] == "normfactor" and m["name"] == model.poi_name for m in sample["modifiers"]):
                return sample["name"]
    raise ValueError(f"{model.label}: no sample carries the POI {model.poi_name!r} as a normfactor")


def nextstat_status() -> str | None:
    """None when NextStat's profiled differentiable session can run here, else the reason it cannot."""
    try:
        import nextstat
    except ImportError:
        return "nextstat is not installed"
    if getattr(nextstat, "ProfiledDifferentiableSession", None) is None:
        return (f"nextstat {getattr(nextstat, '__version__', '?')}: ProfiledDifferentiableSession is None in this "
                "build (it needs NextStat built with CUDA or Metal, i.e. a GPU)")
    try:
        import torch  # noqa: F401
    except ImportError:
        return "NextStat's profiled differentiable session is driven through PyTorch, which is not installed"
    return None


def measure_case(case: str, recorder: Recorder, options: Any, quantities: list[str]) -> None:
    model = bayeshf.load(load_case(case, options.data))
    sample = signal_sample(model)
    s0 = jax.numpy.asarray(model.sample_yields()[sample])
    for name in quantities:
        f = QUANTITIES[name](model, sample)
        value = jax.jit(f)
        value_grad = jax.jit(jax.value_and_grad(f))
        v = float(value(s0))
        _, g = value_grad(s0)
        finite = bool(np.all(np.isfinite(np.asarray(g))))
        times = time_interleaved({"value": lambda: value(s0).block_until_ready(),
                                  "value+grad": lambda: value_grad(s0)[1].block_until_ready()},
                                 repeats=options.repeats, min_time=options.min_time)
        extra = {"quantity": name, "n_signal_bins": int(s0.shape[0]), "result": v, "gradient_finite": finite}
        recorder.add(case=case, implementation="bayeshf", metric=f"{name}: value", unit="s", summary=times["value"],
                     **extra)
        recorder.add(case=case, implementation="bayeshf", metric=f"{name}: value+grad", unit="s",
                     summary=times["value+grad"], **extra)
        recorder.add_value(case=case, implementation="bayeshf", metric=f"{name}: ratio", unit="x",
                           value=times["value+grad"]["median"] / times["value"]["median"], **extra)


def run(options: Any, recorder: Recorder) -> None:
    cases = options.cases or (CASES[:1] if options.quick else CASES)
    quantities = ["Z0", "limit expected"] if options.quick else list(QUANTITIES)
    reason = nextstat_status()
    if reason is not None:
        recorder.skip(implementation="nextstat", reason=reason)
    for case in cases:
        measure_case(case, recorder, options, quantities)


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "Differentiable inference" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    out = ["## Differentiable inference (bayeshf.diff)", "",
           f"Reproduce: {command}. Machine: {machine}.", "",
           "Gradient with respect to every bin of the signal sample against one evaluation without it "
           "(jitted, interleaved repeats, medians). Targets: <= 2x for Z0, <= 3x for the limit.", "",
           "| case | quantity | value | value + gradient | ratio | gradient finite |", "|---|---|---|---|---|---|"]
    index = {(r["case"], r["metric"]): r for r in rows}
    for (case, metric), row in index.items():
        if not metric.endswith(": ratio"):
            continue
        name = metric[: -len(": ratio")]
        value, grad = index.get((case, f"{name}: value")), index.get((case, f"{name}: value+grad"))
        out.append(f"| {case} | {name} | {value['median'] * 1e3:.1f} ms | {grad['median'] * 1e3:.1f} ms | "
                   f"{row['median']:.2f}x | {row.get('gradient_finite')} |")
    for skip in data.get("skips", []):
        out.append("")
        out.append(f"Not run: {skip['implementation']}: {skip['reason']}.")
        break
    return out + [""]
