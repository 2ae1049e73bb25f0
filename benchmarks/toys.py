"""Suite ``toys``: toy-based CLs on sbottom RegionA + one signal patch, bayeshf against pyhf's ToyCalculator.

bayeshf fits every toy (s+b and b, a free and a fixed-POI fit each) in
batched compiled programs (bayeshf.toys); it runs the full count (10,000
toys under each hypothesis, 200 with ``--quick``), cold (first call in the
process, compilation included) and warm. pyhf's ``ToyCalculator`` (numpy and
jax backends, in this process) fits toys one by one, so it runs a few toys
and its time per toy is extrapolated to the same count; the table says so.
Each warm bayeshf run is followed by a pyhf-jax run (interleaved repeats), and
the ratios are the medians of the pairs' ratios, wall and CPU: the shared
machine's load drifts, and a pair sees about the same load.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.cases import REPO
from benchmarks.harness import Recorder, cpu_seconds as _cpu, summarize
from benchmarks.peers import Unavailable, require

CASE = "sbottom_RegionA_1300_205_60"
REGION = REPO / "tests" / "data" / "sbottom" / "RegionA"
PATCH = REGION / "patch.sbottom_1300_205_60.json"


def _timed(fn: Any) -> tuple[float, float, Any]:
    """Wall and CPU seconds of one call of ``fn`` and its result."""
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    return time.perf_counter() - wall, _cpu() - cpu, result


def _pyhf_calculator(backend: str, spec: dict[str, Any], patch: dict[str, Any], ntoys: int) -> Any:
    """pyhf's ToyCalculator for ``ntoys`` toys on ``backend``, its first call (set-up, compilation) made, untimed."""
    require("pyhf")
    import pyhf

    pyhf.set_backend(backend, **({"precision": "64b"} if backend == "jax" else {}))
    ws = pyhf.Workspace(spec)
    pdf = ws.model(patches=[patch])
    data = pyhf.tensorlib.astensor(ws.data(pdf))
    pyhf.infer.calculators.ToyCalculator(data, pdf, ntoys=1, track_progress=False).distributions(1.0)
    return pyhf.infer.calculators.ToyCalculator(data, pdf, ntoys=ntoys, track_progress=False)


def _reset_pyhf() -> None:
    try:
        import pyhf

        pyhf.set_backend("numpy")
    except ImportError:
        pass


def run(options: Any, recorder: Recorder) -> None:
    """bayeshf cold once, then bayeshf warm and pyhf-jax interleaved (``--repeats``, at most 3), then pyhf-numpy."""
    import json
    import os

    import jax

    import bayeshf
    from bayeshf import toys

    ntoys = 200 if options.quick else 10_000
    peer_toys = 3 if options.quick else 40
    repeats = max(1, min(options.repeats, 3))
    model = bayeshf.load(REGION / "BkgOnly.json", patches=[PATCH])
    tags = {"ntoys_per_hypothesis": ntoys, "fits": 4 * ntoys, "cpu_devices": len(jax.devices("cpu"))}

    def ours():
        return toys.hypotest(model, 1.0, ntoys=ntoys, seed=options.seed)

    wall, cpu, result = _timed(ours)
    recorder.add_value(case=CASE, implementation="bayeshf", metric="cold: wall", unit="s", value=wall, cpu_s=cpu,
                       CLs_obs=result.CLs_obs, failed_toys=result.n_failed, **tags)
    spec = json.loads((REGION / "BkgOnly.json").read_text())
    patch = json.loads(PATCH.read_text())
    try:
        peer = _pyhf_calculator("jax", spec, patch, peer_toys)
    except (Unavailable, ImportError) as error:
        recorder.skip(implementation="pyhf-jax", case=CASE, reason=str(error))
        peer = None
    # interleaved: each pyhf-jax measurement is taken right after a bayeshf one, under the same load
    mine, theirs, loads = [], [], []
    for _ in range(repeats):
        wall, cpu, result = _timed(ours)
        mine.append((wall, cpu))
        if peer is not None:
            w, c, _ = _timed(lambda: peer.distributions(1.0))
            theirs.append((w / peer_toys * ntoys, c / peer_toys * ntoys))  # per toy pair, times the same count
        loads.append(round(os.getloadavg()[0], 2))
    _reset_pyhf()
    recorder.add(case=CASE, implementation="bayeshf", metric="warm: wall", unit="s",
                 summary=summarize([w for w, _ in mine]), cpu_s=float(np.median([c for _, c in mine])),
                 cpu_repeats=[c for _, c in mine], CLs_obs=result.CLs_obs, failed_toys=result.n_failed,
                 load_average_1min=loads, **tags)
    if theirs:
        recorder.add(case=CASE, implementation="pyhf-jax", metric="warm: wall", unit="s",
                     summary=summarize([w for w, _ in theirs]), cpu_s=float(np.median([c for _, c in theirs])),
                     cpu_repeats=[c for _, c in theirs], extrapolated_from_toys=peer_toys,
                     ratio_wall=float(np.median([t[0] / m[0] for t, m in zip(theirs, mine)])),
                     ratio_cpu=float(np.median([t[1] / m[1] for t, m in zip(theirs, mine)])),
                     load_average_1min=loads, ntoys_per_hypothesis=ntoys, fits=4 * ntoys)
    try:
        calc = _pyhf_calculator("numpy", spec, patch, peer_toys)
        wall, cpu, _ = _timed(lambda: calc.distributions(1.0))
        w_ours, c_ours, _ = _timed(ours)
        recorder.add_value(case=CASE, implementation="pyhf-numpy", metric="warm: wall", unit="s",
                           value=wall / peer_toys * ntoys, cpu_s=cpu / peer_toys * ntoys,
                           extrapolated_from_toys=peer_toys, ratio_wall=wall / peer_toys * ntoys / w_ours,
                           ratio_cpu=cpu / peer_toys * ntoys / c_ours, load_average_1min=[round(os.getloadavg()[0], 2)],
                           ntoys_per_hypothesis=ntoys, fits=4 * ntoys)
    except (Unavailable, ImportError) as error:
        recorder.skip(implementation="pyhf-numpy", case=CASE, reason=str(error))
    finally:
        _reset_pyhf()


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "Toys" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    out = ["## Toys (toy-based CLs)", "",
           f"Reproduce: {command}. Machine: {machine}. Load average during the run: "
           f"{data.get('load_average')}.", "",
           "CLs at mu = 1 on sbottom RegionA + patch sbottom_1300_205_60 from toys under s+b and b "
           "(a free and a fixed-POI fit per toy; bayeshf runs each from two starts and keeps the lower, "
           "docs/frequentist.md). pyhf's rows are extrapolated from the few toys it ran "
           "(per-toy time x the same count). bayeshf's warm runs and pyhf-jax's are interleaved; a ratio "
           "is the median over the pairs (each pair under about the same load). "
           "Target: 10,000 toys under 60 s, >= 50x pyhf's jax backend.", "",
           "| implementation | run | toys per hypothesis | wall (median) | CPU (median) | per toy | load (1 min) | note |",
           "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        n = row.get("ntoys_per_hypothesis")
        per = row["median"] / (2 * n) if n else float("nan")
        note = (f"extrapolated from {row['extrapolated_from_toys']} toys" if "extrapolated_from_toys" in row
                else f"{row.get('failed_toys', 0)} failed toys, CLs_obs {row.get('CLs_obs', float('nan')):.4f}, "
                     f"{row.get('cpu_devices', 1)} CPU devices")
        if len(row.get("repeats", [])) > 1:
            note += f"; {len(row['repeats'])} repeats, wall {min(row['repeats']):.1f}-{max(row['repeats']):.1f} s"
        cpu = f"{row['cpu_s']:.1f} s" if "cpu_s" in row else "-"
        load = ", ".join(f"{v:g}" for v in row.get("load_average_1min", [])) or "-"
        out.append(f"| {row['implementation']} | {row['metric'].split(':')[0]} | {n} | {row['median']:.1f} s | {cpu} | "
                   f"{per * 1e3:.2f} ms | {load} | {note} |")
    for row in rows:
        if "ratio_wall" in row:
            out += ["", f"{row['implementation']} / bayeshf (warm, same-run pairs): wall {row['ratio_wall']:.1f}x, "
                        f"CPU {row['ratio_cpu']:.1f}x"]
    for skip in data.get("skips", []):
        out.append(f"\nNot run: {skip['implementation']}: {skip['reason']}.")
    return out + [""]
