"""Suite ``fit``: maximum-likelihood fit wall time and the twice_nll each implementation reaches.

The first fit in the process (including any compilation) is recorded as
``first_fit``; then ``fit`` repeats the same fit warm. ``twice_nll`` is the
value each implementation reports at its minimum; the report compares it with
the lowest value any implementation reached on that case.

``--sizes B1,B2,...`` runs the synthetic scaling sweep instead (cases
``synthetic_<bins>x<systematics>``, with B/10 systematics per size unless
``--systematics K`` is given; :func:`bayeshf.generators.synthetic_arrays`):
each implementation fits each size in a fresh subprocess under a wall-clock
budget (:data:`SYNTHETIC_BUDGET_S`), killed when the budget or
:data:`SYNTHETIC_MEMORY_GB` of resident memory runs out, which is recorded as
a skip saying how far it got. pyhf gets the JSON workspace
(``synthetic_workspace``, not validated, as bayeshf's array path is not);
bayeshf gets the same workspace up to :data:`WORKSPACE_LIMIT` template
numbers and the arrays beyond. Rows of (case, implementation) pairs not
measured in a run are kept from the previous ``fit.json``, marked with the
run that measured them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.cases import ATLAS_CASES, REPO, THESIS_CASES, load_case
from benchmarks.harness import Recorder, summarize
from benchmarks.peers import Unavailable, require
from benchmarks.progress import progress

FitThunk = Callable[[], float]  # runs one fit, returns twice_nll at the minimum


def prepare_bayeshf(spec: dict[str, Any]) -> FitThunk:
    import bayeshf

    model = bayeshf.load(spec)
    return lambda: float(bayeshf.fit(model).twice_nll)


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


# ---------------------------------------------------------------------------
# synthetic scaling sweep: one subprocess per (implementation, size), under a budget

#: wall-clock budget of one (implementation, size) subprocess, seconds: 15 min for the issue's
#: 10,000 x 1,000 model, 5 min below (enough to see where each implementation stops scaling)
SYNTHETIC_BUDGET_S = {"large": 900.0, "default": 300.0}
#: template numbers (bins x systematics x 5 samples) from which a size counts as large
LARGE_TEMPLATES = 10_000_000
#: resident memory at which a subprocess is stopped (the machine is shared)
SYNTHETIC_MEMORY_GB = 14.0
#: largest model bayeshf reads through the JSON workspace (beyond: straight from the arrays)
WORKSPACE_LIMIT = 2_000_000
#: implementations of the sweep (pyhf's minuit adds nothing to the scaling of SLSQP's)
SYNTHETIC_IMPLEMENTATIONS = ["bayeshf", "pyhf-numpy-slsqp", "pyhf-jax-slsqp"]


def synthetic_case(n_bins: int, n_systematics: int) -> str:
    return f"synthetic_{n_bins}x{n_systematics}"


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def synthetic_child(implementation: str, n_bins: int, n_systematics: int, seed: int, budget: float) -> None:
    """Run in the subprocess: build and fit one synthetic size, printing one JSON line per stage.

    Stages: ``generate`` (arrays / workspace dict, not the implementation's
    cost), ``build`` (workspace or arrays -> model), for pyhf ``logpdf`` (one
    call at the inits, compilation included for jax), ``first_fit`` (cold,
    includes any compilation) and ``fit`` (a second, warm fit, only when the
    first used under a sixth of the budget).
    """
    from bayeshf.generators import synthetic_arrays

    if implementation not in SYNTHETIC_IMPLEMENTATIONS:
        raise ValueError(f"{implementation!r} is not one of {SYNTHETIC_IMPLEMENTATIONS}")
    start = time.perf_counter()
    arrays = synthetic_arrays(n_bins, n_systematics, seed=seed)
    templates = n_bins * n_systematics * len(arrays.sample_names)
    use_arrays = implementation == "bayeshf" and templates > WORKSPACE_LIMIT
    spec = None if use_arrays else arrays.to_workspace()
    _emit(stage="generate", seconds=time.perf_counter() - start, input="arrays" if use_arrays else "workspace")
    if spec is not None:
        del arrays

    start = time.perf_counter()
    if implementation == "bayeshf":
        import bayeshf

        if use_arrays:
            model = bayeshf.HistFactoryModel.from_arrays(arrays)
            del arrays
        else:
            model = bayeshf.load(spec)

        def thunk() -> tuple[float, bool]:
            result = bayeshf.fit(model)
            return float(result.twice_nll), bool(result.success)
    else:
        import pyhf

        backend = "jax" if implementation == "pyhf-jax-slsqp" else "numpy"
        pyhf.set_backend(backend, "scipy", **({"precision": "64b"} if backend == "jax" else {}))
        workspace = pyhf.Workspace(spec, validate=False)
        pyhf_model = workspace.model(validate=False)
        data = pyhf.tensorlib.astensor(workspace.data(pyhf_model))

        def thunk() -> tuple[float, bool]:
            _, twice_nll = pyhf.infer.mle.fit(data, pyhf_model, return_fitted_val=True)
            return float(np.asarray(twice_nll)), True
    spec = None
    _emit(stage="build", seconds=time.perf_counter() - start)
    if implementation != "bayeshf":  # a fit needs many of these: SLSQP's numerical gradient costs npars + 1
        start = time.perf_counter()
        pyhf_model.logpdf(pyhf.tensorlib.astensor(pyhf_model.config.suggested_init()), data)
        _emit(stage="logpdf", seconds=time.perf_counter() - start, npars=int(pyhf_model.config.npars))

    start = time.perf_counter()
    twice_nll, success = thunk()
    first = time.perf_counter() - start
    _emit(stage="first_fit", seconds=first, twice_nll=twice_nll, success=success)
    if first < budget / 6:
        start = time.perf_counter()
        twice_nll, success = thunk()
        _emit(stage="fit", seconds=time.perf_counter() - start, twice_nll=twice_nll, success=success)


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0**2
    except OSError:
        pass
    return 0.0


def run_synthetic(implementation: str, n_bins: int, n_systematics: int, *, seed: int, budget: float,
                  memory_gb: float = SYNTHETIC_MEMORY_GB) -> tuple[list[dict[str, Any]], str | None]:
    """Run :func:`synthetic_child` in a subprocess; its stage records, and why it stopped early (or None)."""
    # the child runs in the repository root, where ``benchmarks`` is importable
    code = ("import sys; from benchmarks.fitting import synthetic_child; "
            "synthetic_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bayeshf-fit-{os.getpid()}-{implementation}.jsonl"
    err_path = out_path.with_suffix(".err")
    with open(out_path, "w") as out, open(err_path, "w") as err:  # files: a full pipe would stall the child
        process = subprocess.Popen([sys.executable, "-c", code, implementation, str(n_bins), str(n_systematics),
                                    str(seed), str(budget)], stdout=out, stderr=err, env=env,
                                   start_new_session=True, cwd=REPO)
        start, reason, peak = time.monotonic(), None, 0.0
        while process.poll() is None:
            time.sleep(0.5)
            peak = max(peak, _rss_gb(process.pid))
            elapsed = time.monotonic() - start
            if elapsed > budget:
                reason = f"did not finish in {budget:.0f} s"
            elif peak > memory_gb:
                reason = f"stopped at {peak:.1f} GB resident memory after {elapsed:.0f} s (limit {memory_gb:.0f} GB)"
            if reason:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
    stderr = err_path.read_text(errors="replace")
    stages = [json.loads(line) for line in out_path.read_text().splitlines() if line.startswith("{")]
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    for stage in stages:
        stage["peak_rss_gb"] = round(peak, 2)
    if reason is None and process.returncode != 0:
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        reason = f"failed (exit {process.returncode}): {last}"[:300]
    if reason is not None:
        done = ", ".join(f"{s['stage']} {s['seconds']:.1f} s" for s in stages)
        last = stages[-1]["stage"] if stages else None
        running = {None: "generating the model", "generate": "building the model",
                   "build": "in the first fit" if implementation == "bayeshf" else "in the first logpdf",
                   "logpdf": "in the first fit", "first_fit": "in the second fit"}.get(last, "")
        reason += f" ({done + '; ' if done else ''}stopped {running})" if running else f" ({done})"
    return stages, reason


def synthetic_sizes(options: Any) -> list[tuple[int, int]]:
    """(bins, systematics) of the sweep: ``--sizes`` with B/10 systematics, or ``--bins``/``--systematics``."""
    if options.sizes:
        return [(b, options.n_systematics if options.n_systematics is not None else max(1, b // 10))
                for b in options.sizes]
    if options.n_bins:
        return [(options.n_bins, options.n_systematics if options.n_systematics is not None else options.n_bins // 10)]
    return []


def measure_synthetic(options: Any, recorder: Recorder, implementations: list[str]) -> list[str]:
    """The scaling sweep, smallest size first.

    An implementation that stops at one size skips the larger ones with the
    same budget, but still gets the large model's own budget.
    """
    cases = []
    stopped: dict[tuple[str, float], str] = {}
    for n_bins, n_systematics in sorted(synthetic_sizes(options), key=lambda bs: bs[0] * bs[1]):
        case = synthetic_case(n_bins, n_systematics)
        cases.append(case)
        templates = 5 * n_bins * n_systematics
        budget = SYNTHETIC_BUDGET_S["large" if templates >= LARGE_TEMPLATES else "default"]
        tags = {"n_bins": n_bins, "n_systematics": n_systematics, "budget_s": budget}
        for name in implementations:
            if name not in SYNTHETIC_IMPLEMENTATIONS:
                recorder.skip(implementation=name, case=case, reason="not part of the synthetic sweep", **tags)
                continue
            if (name, budget) in stopped:
                recorder.skip(implementation=name, case=case, reason=f"not run: {stopped[name, budget]}", **tags)
                continue
            print(f"  {case} {name} (budget {budget:.0f} s)", file=sys.stderr, flush=True)
            stages, reason = run_synthetic(name, n_bins, n_systematics, seed=options.seed, budget=budget)
            for stage in stages:
                extra = {k: v for k, v in stage.items() if k not in ("stage", "seconds")}
                recorder.add_value(case=case, implementation=name, metric=stage["stage"], unit="s",
                                   value=stage["seconds"], **extra, **tags)
            if reason is not None:
                recorder.skip(implementation=name, case=case, reason=reason, **tags)
                stopped[name, budget] = f"stopped at the smaller {case}: {reason.split(' (')[0]}"
    return cases


def keep_previous_rows(recorder: Recorder, measured: set[tuple[str, str]]) -> None:
    """Carry over from the last ``fit.json`` the rows and skips of (case, implementation) pairs not measured now.

    Each kept entry says which run measured it (``measured_in``: command, start, load).
    """
    if recorder.output is None:
        return
    try:
        previous = json.loads((Path(recorder.output) / "fit.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    provenance = {k: previous.get(k) for k in ("command", "started", "load_average")}

    def kept(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**entry, "measured_in": entry.get("measured_in", provenance)} for entry in entries
                if (entry.get("case"), entry.get("implementation")) not in measured]

    recorder.rows[:0] = kept(previous.get("rows", []))
    recorder.skips[:0] = kept(previous.get("skips", []))


def run(options: Any, recorder: Recorder) -> None:
    sizes = synthetic_sizes(options)
    if sizes and not options.cases:
        implementations = options.implementations or SYNTHETIC_IMPLEMENTATIONS
        cases = measure_synthetic(options, recorder, implementations)
        keep_previous_rows(recorder, {(case, name) for case in cases for name in implementations})
        return
    cases = options.cases or (["thesis_2_bin_corr", "thesis_4_bin"] if options.quick else [*THESIS_CASES, *ATLAS_CASES])
    implementations = options.implementations or (
        ["bayeshf", "pyhf-numpy-slsqp", "pyhf-numpy-minuit", "nextstat"] if options.quick else list(FIT_IMPLEMENTATIONS))
    repeats = 1 if options.quick else max(1, min(options.repeats, 3))
    for case in progress(cases, desc="fit"):
        measure_case(case, load_case(case, options.data), recorder, implementations=implementations, repeats=repeats)
    keep_previous_rows(recorder, {(case, name) for case in cases for name in implementations})
