"""Suite ``grid``: CLs at mu = 1 and upper limits for a 125-point RegionA-like signal grid.

The grid is generated from the shipped RegionA patch sbottom_1300_205_60 by
:func:`bayeshf.generators.mass_plane_patchset` (25 masses x 5 mass ratios;
the full HEPData patchset is not in the repository). bayeshf runs every point
batched (bayeshf.grid): CLs cold (first call in the process, compilation
included) and warm, then upper limits. pyhf (numpy and jax backends, in this
process) loops over a few points of the same grid with ``pyhf.infer.hypotest``
and ``pyhf.infer.intervals.upper_limits.upper_limit``; its time per point is
extrapolated to 125 points (marked as such). The published reference, pyhf
with funcX fitting the 125 RegionA points in under 3 minutes on an HPC
cluster, is quoted in the report (another machine, not measured here).
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks.cases import REPO
from benchmarks.harness import Recorder, cpu_seconds as _cpu
from benchmarks.peers import Unavailable, require

REGION = REPO / "tests" / "data" / "sbottom" / "RegionA"
TEMPLATE = REGION / "patch.sbottom_1300_205_60.json"
#: pyhf + funcX, 125 RegionA points (Feickert et al., "Distributed statistical inference with pyhf enabled
#: through funcX", vCHEP 2021, arXiv:2103.02182): another machine, quoted not measured
PUBLISHED = "pyhf + funcX: the 125 RegionA points in under 3 minutes on an HPC cluster (arXiv:2103.02182)"


def run(options: Any, recorder: Recorder) -> None:
    from bayeshf import grid
    from bayeshf.generators import mass_plane_patchset

    spec = json.loads((REGION / "BkgOnly.json").read_text())
    template = json.loads(TEMPLATE.read_text())
    n_mass, n_ratio = (4, 2) if options.quick else (25, 5)
    patchset = mass_plane_patchset(spec, template, n_mass=n_mass, n_ratio=n_ratio)
    n = len(patchset["patches"])
    case = f"sbottom_RegionA_like_{n}_points"
    tags = {"points": n}

    def timed(label: str, fn):
        wall, cpu = time.perf_counter(), _cpu()
        result = fn()
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        failed = sum(p.error is not None for p in result.points)
        recorder.add_value(case=case, implementation="bayeshf", metric=label, unit="s", value=wall, cpu_s=cpu,
                           failed_points=failed, **tags)

    timed("CLs: cold", lambda: grid.hypotest_grid(spec, patchset))
    timed("CLs: warm", lambda: grid.hypotest_grid(spec, patchset))
    timed("limits", lambda: grid.upper_limit_grid(spec, patchset))

    peer_points = [p for p in patchset["patches"]][:: max(1, n // (2 if options.quick else 5))][: 2 if options.quick else 5]
    for backend in ("numpy", "jax"):
        name = f"pyhf-{backend}"
        try:
            require("pyhf")
            import pyhf

            pyhf.set_backend(backend, **({"precision": "64b"} if backend == "jax" else {}))
            ws = pyhf.Workspace(spec)
            times = {"CLs": 0.0, "limits": 0.0}
            failures: list[str] = []
            cpu_start = _cpu()
            for k, point in enumerate(peer_points):
                pdf = ws.model(patches=[point["patch"]])
                data = pyhf.tensorlib.astensor(ws.data(pdf))
                start = time.perf_counter()
                pyhf.infer.hypotest(1.0, data, pdf, test_stat="qtilde", return_expected_set=True)
                times["CLs"] += time.perf_counter() - start
                start = time.perf_counter()
                try:
                    pyhf.infer.intervals.upper_limits.upper_limit(data, pdf, level=0.05)
                except Exception as error:  # pyhf's root finding can fail on a point: time the CLs all the same
                    failures.append(f"{point['metadata']['name']}: {str(error).splitlines()[0][:120]}")
                times["limits"] += time.perf_counter() - start
        except (Unavailable, ImportError) as error:
            recorder.skip(implementation=name, case=case, reason=str(error))
            continue
        except Exception as error:  # a peer failing is recorded, the suite goes on
            recorder.skip(implementation=name, case=case, reason=f"failed: {str(error).splitlines()[0][:160]}")
            continue
        finally:
            try:
                import pyhf

                pyhf.set_backend("numpy")
            except ImportError:
                pass
        cpu_total = _cpu() - cpu_start
        wall_total = sum(times.values())
        for what, seconds in times.items():
            per_point = seconds / len(peer_points)
            # CPU split between CLs and limits in proportion to their wall times
            cpu = cpu_total * seconds / wall_total / len(peer_points) * n if wall_total else None
            recorder.add_value(case=case, implementation=name, metric=what, unit="s", value=per_point * n,
                               cpu_s=cpu, extrapolated_from_points=len(peer_points), per_point_s=per_point,
                               failures=failures if what == "limits" else [], **tags)


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "Signal grids" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    out = ["## Signal grids (bayeshf cls/limit --patchset)", "",
           f"Reproduce: {command}. Machine: {machine}. Load average during the run: {data.get('load_average')}.", "",
           "A 125-point RegionA-like grid (bayeshf.generators.mass_plane_patchset from the shipped patch "
           "sbottom_1300_205_60). pyhf loops over a few points of the same grid in this process; its rows are "
           "extrapolated to all points (per-point time x points). Targets: 125 CLs values under 60 s cold, "
           "125 upper limits under 3 minutes, >= 20x the pyhf loop.", "",
           "| implementation | quantity | points | wall | CPU | per point | note |", "|---|---|---|---|---|---|---|"]
    ours = {}
    for row in rows:
        n = row.get("points", 0)
        note = (f"extrapolated from {row['extrapolated_from_points']} points" if "extrapolated_from_points" in row
                else f"{row.get('failed_points', 0)} failed points")
        cpu = f"{row['cpu_s']:.1f} s" if "cpu_s" in row else "-"
        out.append(f"| {row['implementation']} | {row['metric']} | {n} | {row['median']:.1f} s | {cpu} | "
                   f"{row['median'] / max(n, 1):.3f} s | {note} |")
        if row["implementation"] == "bayeshf":
            ours[row["metric"]] = row["median"]
    out.append("")
    for row in rows:
        if row["implementation"].startswith("pyhf"):
            mine = ours.get("CLs: warm" if row["metric"] == "CLs" else "limits")
            if mine:
                out.append(f"- {row['implementation']} {row['metric']} / bayeshf: {row['median'] / mine:.0f}x")
    out.append(f"- Published (another machine, not measured here): {PUBLISHED}.")
    for skip in data.get("skips", []):
        out.append(f"\nNot run: {skip['implementation']}: {skip['reason']}.")
    return out + [""]
