"""Suite ``grid``: CLs at mu = 1 and upper limits for a 125-point RegionA-like signal grid, against a pyhf loop.

The grid is generated from the shipped RegionA patch sbottom_1300_205_60 by
:func:`bayeshf.generators.mass_plane_patchset` (25 masses x 5 mass ratios;
the full HEPData patchset is not in the repository).

- bayeshf, cold: each of ``bayeshf cls WS --patchset PS.json`` and ``bayeshf
  limit WS --patchset PS.json`` in a fresh process with JAX's persistent
  compilation cache off (``BAYESHF_JAX_CACHE=off``): imports, compilation and
  every point, as a user's first run. CPU = the child's user + system time.
- pyhf (numpy and jax backends, 64-bit), in this process, one point after the
  other: ``pyhf.infer.hypotest(1.0, ...)`` and the CLs upper limit by
  ``toms748_scan`` between 1e-4 and the POI's upper bound 10 (pyhf's
  ``upper_limit`` without a scan starts at mu = 0, where CLs is 0/0 and
  toms748 stops: "function value at x=0 is NaN"). The pyhf loop over all 125
  points would take hours here, so it runs on points spread over the plane
  (up to SUBSET_CLS / SUBSET_LIMITS, stopping once BUDGET_S is spent) and
  its time is scaled to all points (marked "scaled from k points"). Points whose limit lies above the
  POI's bound fail in pyhf as in bayeshf; they are timed all the same.
- Dask (part ``dask``): the CLs grid on a ``distributed.LocalCluster`` of 1,
  then 2 worker processes (1 thread each), each cluster new (so every worker
  compiles), with the load average before and after.

The bayeshf and pyhf measurements alternate (bayeshf, pyhf numpy, pyhf jax,
then bayeshf again) so that the machine's load is shared between them; the
load average is recorded beside every row. The published reference, pyhf with
funcX fitting the 125 RegionA points in under 3 minutes on an HPC cluster, is
quoted in the report (another machine, not measured here).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cases import REPO
from benchmarks.harness import Recorder, cpu_seconds as _cpu
from benchmarks.peers import Unavailable, require

REGION = REPO / "tests" / "data" / "sbottom" / "RegionA"
TEMPLATE = REGION / "patch.sbottom_1300_205_60.json"
#: pyhf + funcX, 125 RegionA points (Feickert et al., "Distributed statistical inference with pyhf enabled
#: through funcX", vCHEP 2021, arXiv:2103.02182): another machine, quoted not measured
PUBLISHED = "pyhf + funcX: the 125 RegionA points in under 3 minutes on an HPC cluster (arXiv:2103.02182)"
#: points of the pyhf loop (spread over the grid) for CLs and for limits, each within a time budget per
#: backend (a pyhf limit takes minutes here): the loop stops at the budget and its time is scaled to all points
SUBSET_CLS, SUBSET_LIMITS = 8, 3
BUDGET_S = {"CLs": 120.0, "limits": 240.0}
PARTS = ("bayeshf", "pyhf", "dask")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _cold(command: str, workspace: Path, patchset: Path, out: Path) -> tuple[float, float, int, int]:
    """(wall, CPU, failed points, exit code) of one fresh ``bayeshf cls|limit --patchset`` process."""
    env = dict(os.environ, BAYESHF_JAX_CACHE="off")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bayeshf", command, str(workspace), "--patchset", str(patchset),
                           "--output-file", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"bayeshf {command} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    failed = sum("error" in p for p in json.loads(out.read_text()))
    return wall, cpu, failed, done.returncode


def _pyhf_loop(backend: str, spec: dict, subsets: dict[str, list[dict]]) -> dict[str, Any]:
    """Wall and CPU seconds of pyhf's CLs (over ``subsets["CLs"]``) and upper limits (``subsets["limits"]``)."""
    require("pyhf")
    import pyhf
    from pyhf.infer.intervals.upper_limits import toms748_scan

    pyhf.set_backend(backend, **({"precision": "64b"} if backend == "jax" else {}))
    try:
        ws = pyhf.Workspace(spec)
        times = {"CLs": [0.0, 0.0], "limits": [0.0, 0.0]}
        done = {"CLs": [], "limits": []}
        failures: list[str] = []
        for what, points in subsets.items():
            for point in points:
                if done[what] and times[what][0] > BUDGET_S[what]:
                    break
                done[what].append(point["metadata"]["name"])
                pdf = ws.model(patches=[point["patch"]])
                data = pyhf.tensorlib.astensor(ws.data(pdf))
                wall, cpu = time.perf_counter(), _cpu()
                try:
                    if what == "CLs":
                        pyhf.infer.hypotest(1.0, data, pdf, test_stat="qtilde", return_expected_set=True)
                    else:
                        hi = float(pdf.config.suggested_bounds()[pdf.config.poi_index][1])
                        toms748_scan(data, pdf, 1e-4, hi, level=0.05)
                except Exception as error:  # a point pyhf cannot do (a limit above the bound) is timed all the same
                    failures.append(f"{what} {point['metadata']['name']}: {str(error).splitlines()[0][:100]}")
                times[what][0] += time.perf_counter() - wall
                times[what][1] += _cpu() - cpu
        return {"times": times, "failures": failures, "done": done}
    finally:
        pyhf.set_backend("numpy")


def _dask(spec: dict, patchset: dict, workers: int) -> tuple[float, int]:
    """Wall seconds and failed points of the CLs grid on a new LocalCluster of ``workers`` processes."""
    require("distributed")
    import distributed

    from bayeshf import grid

    with distributed.LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit=0) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(workers)
        start = time.perf_counter()
        result = grid.hypotest_grid(spec, patchset, scheduler=client)
        return time.perf_counter() - start, sum(p.error is not None for p in result.points)


def run(options: Any, recorder: Recorder) -> None:
    from bayeshf.generators import mass_plane_patchset

    spec = json.loads((REGION / "BkgOnly.json").read_text())
    template = json.loads(TEMPLATE.read_text())
    n_mass, n_ratio = (4, 2) if options.quick else (25, 5)
    patchset = mass_plane_patchset(spec, template, n_mass=n_mass, n_ratio=n_ratio)
    n = len(patchset["patches"])
    case = f"sbottom_RegionA_like_{n}_points"
    parts = [p for p in PARTS if p in (options.parts or PARTS)]
    others = [p for p in PARTS if p not in parts]
    previous = recorder.previous() if others else None
    if previous:  # a run of some parts keeps the other parts' last results
        recorder.carry_over(previous, others, key="part")

    def spread(k: int) -> list[dict]:
        return patchset["patches"][:: max(1, n // k)][:k]

    subsets = {"CLs": spread(2 if options.quick else SUBSET_CLS), "limits": spread(1 if options.quick else SUBSET_LIMITS)}

    with tempfile.TemporaryDirectory() as folder:
        ps_path = Path(folder) / "patchset.json"
        ps_path.write_text(json.dumps(patchset))
        out = Path(folder) / "out.json"

        def bayeshf_cold(metric: str, command: str, round_: int) -> None:
            load = _load()
            wall, cpu, failed, code = _cold(command, REGION / "BkgOnly.json", ps_path, out)
            recorder.add_value(case=case, implementation="bayeshf", metric=metric, unit="s", value=wall, cpu_s=cpu,
                               failed_points=failed, points=n, round=round_, load_before=load, load_after=_load(),
                               part="bayeshf")

        rounds = 2 if not options.quick else 1
        for round_ in range(rounds):  # bayeshf and pyhf alternate: both see the same machine load
            if "bayeshf" in parts:
                bayeshf_cold("CLs (cold process)", "cls", round_)
                bayeshf_cold("limits (cold process)", "limit", round_)
            if "pyhf" in parts and round_ == 0:
                for backend in ("numpy", "jax"):
                    name = f"pyhf-{backend}"
                    load = _load()
                    try:
                        loop = _pyhf_loop(backend, spec, subsets)
                    except (Unavailable, ImportError) as error:
                        recorder.skip(implementation=name, case=case, reason=str(error), part="pyhf")
                        continue
                    for what, (wall, cpu) in loop["times"].items():
                        k = len(loop["done"][what])
                        failed = [f for f in loop["failures"] if f.startswith(what)]
                        if len(failed) == k:  # nothing computed: no time to compare (pyhf 0.7.6's toms748_scan on jax)
                            recorder.skip(implementation=name, case=case, part="pyhf",
                                          reason=f"{what}: every timed point failed ({failed[0]})")
                            continue
                        recorder.add_value(case=case, implementation=name, metric=what, unit="s", value=wall * n / k,
                                           cpu_s=cpu * n / k, points=n, scaled_from_points=k, per_point_s=wall / k,
                                           load_before=load, load_after=_load(), part="pyhf",
                                           points_timed=loop["done"][what], failures=failed)
        if "dask" in parts:
            for workers in (1, 2):
                load = _load()
                try:
                    wall, failed = _dask(spec, patchset, workers)
                except (Unavailable, ImportError) as error:
                    recorder.skip(implementation="bayeshf-dask", case=case, reason=str(error), part="dask")
                    break
                recorder.add_value(case=case, implementation="bayeshf-dask", metric=f"CLs, {workers} worker(s)",
                                   unit="s", value=wall, points=n, failed_points=failed, workers=workers,
                                   load_before=load, load_after=_load(), part="dask")


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "Signal grids" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    out = ["## Signal grids (bayeshf cls/limit --patchset)", "",
           f"Reproduce: {command}. Machine: {machine}. Load average during the run: {data.get('load_average')}.", "",
           "A 125-point RegionA-like grid (bayeshf.generators.mass_plane_patchset from the shipped patch "
           "sbottom_1300_205_60). bayeshf: each command in a fresh process with the compilation cache off "
           "(imports, compilation, every point). pyhf loops over a subset of the same points in one process "
           "(hypotest at mu = 1; the upper limit by toms748_scan on [1e-4, 10]); its time is scaled to all points. "
           "The two alternate, and every row has the load average (1 min) before and after it. "
           "Targets: 125 CLs values under 60 s cold, 125 upper limits under 3 minutes, >= 20x the pyhf loop.", "",
           "| implementation | quantity | points | wall | CPU | per point | load before/after | note |",
           "|---|---|---|---|---|---|---|---|"]
    ours: dict[str, list[float]] = {}
    for row in rows:
        n = row.get("points", 0)
        if "scaled_from_points" in row:
            note = f"scaled from {row['scaled_from_points']} points; {len(row.get('failures', []))} failed there"
        else:
            note = f"{row.get('failed_points', 0)} points with an error"
        cpu = f"{row['cpu_s']:.1f} s" if row.get("cpu_s") is not None else "-"
        load = f"{row.get('load_before', '-')}/{row.get('load_after', '-')}"
        out.append(f"| {row['implementation']} | {row['metric']} | {n} | {row['median']:.1f} s | {cpu} | "
                   f"{row['median'] / max(n, 1):.3f} s | {load} | {note} |")
        if row["implementation"] == "bayeshf":
            ours.setdefault(row["metric"].split(" (")[0], []).append(row["median"])
    out.append("")
    for row in rows:
        if row["implementation"].startswith("pyhf"):
            mine = ours.get(row["metric"])
            if mine:
                best, worst = min(mine), max(mine)
                out.append(f"- {row['implementation']} {row['metric']} / bayeshf (cold process): "
                           f"{row['median'] / worst:.0f}x to {row['median'] / best:.0f}x")
    dask = {row.get("workers"): row["median"] for row in rows if row["implementation"] == "bayeshf-dask"}
    if 1 in dask and 2 in dask:
        out.append(f"- Dask LocalCluster, CLs grid: 1 worker {dask[1]:.1f} s, 2 workers {dask[2]:.1f} s "
                   f"(speed-up {dask[1] / dask[2]:.2f}x on 2 cores shared with other work; see the load columns)")
    out.append(f"- Published (another machine, not measured here): {PUBLISHED}.")
    for skip in data.get("skips", []):
        out.append(f"\nNot run: {skip['implementation']}: {skip['reason']}.")
    return out + [""]
