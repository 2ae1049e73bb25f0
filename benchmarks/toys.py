"""Suite ``toys``: toy-based CLs on sbottom RegionA + one signal patch, bayeshf against pyhf's ToyCalculator.

bayeshf fits every toy (s+b and b, a free and a fixed-POI fit each) in
batched compiled programs (bayeshf.toys); it runs the full count (10,000
toys under each hypothesis, 200 with ``--quick``), cold (first call in the
process, compilation included) and warm. pyhf's ``ToyCalculator`` (numpy and
jax backends, in this process) fits toys one by one, so it runs a few toys
and its time per toy is extrapolated to the same count; the table says so.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.cases import REPO
from benchmarks.harness import Recorder, cpu_seconds as _cpu
from benchmarks.peers import Unavailable, require

CASE = "sbottom_RegionA_1300_205_60"
REGION = REPO / "tests" / "data" / "sbottom" / "RegionA"
PATCH = REGION / "patch.sbottom_1300_205_60.json"


def run(options: Any, recorder: Recorder) -> None:
    import json

    import bayeshf
    from bayeshf import toys

    ntoys = 200 if options.quick else 10_000
    peer_toys = 3 if options.quick else 15
    model = bayeshf.load(REGION / "BkgOnly.json", patches=[PATCH])
    tags = {"ntoys_per_hypothesis": ntoys, "fits": 4 * ntoys}
    for label in ("cold", "warm"):
        wall, cpu = time.perf_counter(), _cpu()
        result = toys.hypotest(model, 1.0, ntoys=ntoys, seed=options.seed)
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        recorder.add_value(case=CASE, implementation="bayeshf", metric=f"{label}: wall", unit="s", value=wall,
                           cpu_s=cpu, CLs_obs=result.CLs_obs, failed_toys=result.n_failed, **tags)
    spec = json.loads((REGION / "BkgOnly.json").read_text())
    patch = json.loads(PATCH.read_text())
    for backend in ("numpy", "jax"):
        name = f"pyhf-{backend}"
        try:
            require("pyhf")
            import pyhf

            pyhf.set_backend(backend, **({"precision": "64b"} if backend == "jax" else {}))
            ws = pyhf.Workspace(spec)
            pdf = ws.model(patches=[patch])
            data = pyhf.tensorlib.astensor(ws.data(pdf))
            calc = pyhf.infer.calculators.ToyCalculator(data, pdf, ntoys=1, track_progress=False)
            calc.distributions(1.0)  # first call: backend set-up and any compilation, not timed
            calc = pyhf.infer.calculators.ToyCalculator(data, pdf, ntoys=peer_toys, track_progress=False)
            wall, cpu = time.perf_counter(), _cpu()
            calc.distributions(1.0)
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        except (Unavailable, ImportError) as error:
            recorder.skip(implementation=name, case=CASE, reason=str(error))
            continue
        finally:
            try:
                import pyhf

                pyhf.set_backend("numpy")
            except ImportError:
                pass
        per_toy = wall / (2 * peer_toys)
        recorder.add_value(case=CASE, implementation=name, metric="warm: wall", unit="s", value=per_toy * 2 * ntoys,
                           cpu_s=cpu / (2 * peer_toys) * 2 * ntoys, extrapolated_from_toys=peer_toys,
                           per_toy_s=per_toy, **tags)


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "Toys" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    out = ["## Toys (toy-based CLs)", "",
           f"Reproduce: {command}. Machine: {machine}. Load average during the run: "
           f"{data.get('load_average')}.", "",
           "CLs at mu = 1 on sbottom RegionA + patch sbottom_1300_205_60 from toys under s+b and b "
           "(a free and a fixed-POI fit per toy; bayeshf runs each from two starts and keeps the lower, "
           "docs/frequentist.md). pyhf's rows are extrapolated from the few toys it ran "
           "(per-toy time x the same count). Target: 10,000 toys under 60 s, >= 50x pyhf's jax backend.", "",
           "| implementation | run | toys per hypothesis | wall | CPU | per toy | note |", "|---|---|---|---|---|---|---|"]
    bayeshf_warm = None
    for row in rows:
        n = row.get("ntoys_per_hypothesis")
        per = row["median"] / (2 * n) if n else float("nan")
        note = (f"extrapolated from {row['extrapolated_from_toys']} toys" if "extrapolated_from_toys" in row
                else f"{row.get('failed_toys', 0)} failed toys, CLs_obs {row.get('CLs_obs', float('nan')):.4f}")
        cpu = f"{row['cpu_s']:.1f} s" if "cpu_s" in row else "-"
        out.append(f"| {row['implementation']} | {row['metric'].split(':')[0]} | {n} | {row['median']:.1f} s | {cpu} | "
                   f"{per * 1e3:.2f} ms | {note} |")
        if row["implementation"] == "bayeshf" and row["metric"].startswith("warm"):
            bayeshf_warm = row["median"]
    warm = next((r for r in rows if r["implementation"] == "bayeshf" and r["metric"].startswith("warm")), None)
    for row in rows:
        if row["implementation"].startswith("pyhf") and bayeshf_warm:
            out.append("")
            ratio = f"{row['implementation']} / bayeshf (warm): wall {row['median'] / bayeshf_warm:.1f}x"
            if warm and warm.get("cpu_s") and row.get("cpu_s"):
                ratio += f", CPU {row['cpu_s'] / warm['cpu_s']:.1f}x"
            out.append(ratio)
    for skip in data.get("skips", []):
        out.append(f"\nNot run: {skip['implementation']}: {skip['reason']}.")
    return out + [""]
