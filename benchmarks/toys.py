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


def _nextstat_toys(spec: dict[str, Any], patch: Any, ntoys: int, seed: int) -> Any:
    """NextStat's toy-based CLs (``nextstat.hypotest_toys``, qtilde, CPU) at mu = 1 on the patched workspace,
    its model built and one small call made, untimed."""
    require("nextstat")
    import json

    import jsonpatch
    import nextstat

    operations = patch["patch"] if isinstance(patch, dict) and "patch" in patch else patch
    model = nextstat.from_pyhf(json.dumps(jsonpatch.apply_patch(spec, operations)))
    nextstat.hypotest_toys(1.0, model, n_toys=2, seed=seed)
    return lambda: nextstat.hypotest_toys(1.0, model, n_toys=ntoys, seed=seed, expected_set=True)


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
    nextstat_toys = 20 if options.quick else 200
    try:
        nextstat_run = _nextstat_toys(spec, patch, nextstat_toys, options.seed)
    except (Unavailable, ImportError) as error:
        recorder.skip(implementation="nextstat", case=CASE, reason=str(error))
        nextstat_run = None
    # interleaved: each peer measurement is taken right after a bayeshf one, under the same load
    mine, theirs, loads, nextstat_times, nextstat_cls = [], [], [], [], []
    for _ in range(repeats):
        wall, cpu, result = _timed(ours)
        mine.append((wall, cpu))
        if peer is not None:
            w, c, _ = _timed(lambda: peer.distributions(1.0))
            theirs.append((w / peer_toys * ntoys, c / peer_toys * ntoys))  # per toy pair, times the same count
        if nextstat_run is not None:
            w, c, value = _timed(nextstat_run)
            nextstat_times.append((w / nextstat_toys * ntoys, c / nextstat_toys * ntoys))
            nextstat_cls.append(float(value[0]))
        loads.append(round(os.getloadavg()[0], 2))
    if nextstat_times:
        recorder.add(case=CASE, implementation="nextstat", metric="warm: wall", unit="s",
                     summary=summarize([w for w, _ in nextstat_times]),
                     cpu_s=float(np.median([c for _, c in nextstat_times])), extrapolated_from_toys=nextstat_toys,
                     CLs_obs=nextstat_cls[-1],
                     ratio_wall=float(np.median([t[0] / m[0] for t, m in zip(nextstat_times, mine)])),
                     ratio_cpu=float(np.median([t[1] / m[1] for t, m in zip(nextstat_times, mine)])),
                     load_average_1min=loads, ntoys_per_hypothesis=ntoys, fits=4 * ntoys)
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
           "(a free and a fixed-POI fit per toy; bayeshf probes the mirror images of the parameters that can "
           "make a second valley and refits the promising ones, docs/frequentist.md, Toys). pyhf's and NextStat's rows are extrapolated from the toys they ran "
           "(per-toy time x the same count). bayeshf's warm runs and the peers' are interleaved; a ratio "
           "is the median over the pairs (each pair under about the same load). "
           "Target: 10,000 toys under 60 s, >= 50x pyhf's jax backend.", "",
           "| implementation | run | toys per hypothesis | wall (median) | CPU (median) | per toy | load (1 min) | note |",
           "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        n = row.get("ntoys_per_hypothesis")
        per = row["median"] / (2 * n) if n else float("nan")
        note = (f"extrapolated from {row['extrapolated_from_toys']} toys"
                + (f", CLs_obs {row['CLs_obs']:.4f} (its own toys)" if "CLs_obs" in row else "")
                if "extrapolated_from_toys" in row
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


# ---------------------------------------------------------------------------
# the toys' minima against an oracle (docs/frequentist.md, Toys: "Several minima")


def _valley_candidates(model: Any) -> np.ndarray:
    """Free parameters along which some bin's expected count is not monotone (a scan at the inits), plus kinked ones.

    Found numerically, not from the interpolation tables bayeshf.toys reads, so the oracle does not
    share the toys' idea of where valleys are.
    """
    import sys

    import bayeshf.fit  # noqa: F401  (the module; bayeshf.fit is also the function)

    fitmod = sys.modules["bayeshf.fit"]
    box = np.asarray(model.bounds, float)
    grid = np.linspace(-5.0, 5.0, 201)
    out = []
    for p in range(model.npars):
        if model.fixed[p] or p == model.poi_index:
            continue
        points = np.tile(np.asarray(model.init, float), (grid.size, 1))
        points[:, p] = np.clip(grid, box[p, 0], box[p, 1])
        counts = np.array([np.asarray(model.expected_counts(x)) for x in points])
        step = np.diff(counts, axis=0)
        scale = 1e-12 * np.abs(counts[1:])
        if np.any(np.any(step > scale, axis=0) & np.any(step < -scale, axis=0)):
            out.append(p)
    return np.union1d(np.union1d(np.asarray(out, int), fitmod.kinked_parameters(model)),
                      fitmod.non_monotone_parameters(model)).astype(int)


def valley_oracle(model: Any, poi_value: float, data: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
    """Per fit (free fits of all toys, then fixed), the lowest converged twice_nll found by other means.

    ``bayeshf.fit`` free and fixed (from the free fit, with it as reference; global_fit's starts), then
    batched exact-Newton fits from the mirror images (alpha -> -alpha, or +-0.5 near 0) in every
    parameter of :func:`_valley_candidates` of each candidate minimum (``candidates``: (2n, npars)
    arrays, e.g. the toys' own minima) and of the single fits, twice (the second round from the best).
    """
    import bayeshf
    from bayeshf import batchfit

    n = len(data)
    free_mask, free_values, lo, hi = batchfit.fit_setup(model)
    fixed_mask, fixed_values, _, _ = batchfit.fit_setup(model, poi_value)
    masks = np.array([free_mask] * n + [fixed_mask] * n)
    values = np.array([free_values] * n + [fixed_values] * n)
    both = np.concatenate([data, data])
    best = np.full(2 * n, np.inf)
    best_x = np.full((2 * n, model.npars), np.nan)
    for i in range(n):
        free = bayeshf.fit(model, data=data[i])
        fixed = bayeshf.fit(model, data=data[i], fixed={model.poi_name: poi_value}, init=free.bestfit,
                            reference=free if free.success else None)
        for k, result in ((i, free), (n + i, fixed)):
            if result.success:
                best[k], best_x[k] = result.twice_nll, result.bestfit
    params = _valley_candidates(model)
    starts_from = [best_x.copy(), *candidates]
    for _ in range(2):
        starts, items = [], []
        for origin in starts_from:
            for p in params:
                for near_zero in (0.5, -0.5):
                    s = np.array(origin)
                    s[:, p] = np.where(np.abs(s[:, p]) > 0.05, -s[:, p], near_zero)
                    starts.append(s)
                    items.append(np.arange(2 * n))
        x0, item = np.concatenate(starts), np.concatenate(items)
        keep = np.all(np.isfinite(x0), axis=1)
        x0, item = np.clip(x0[keep], lo, hi), item[keep]
        parts = [batchfit.batch_minimize(model, x0[k:k + 512], both[item[k:k + 512]], masks[item[k:k + 512]],
                                         values[item[k:k + 512]], lo, hi, method="newton", maxiter=200)
                 for k in range(0, len(x0), 512)]
        out = batchfit.BatchFitResult.concatenate(parts)
        nll = np.where(out.converged, out.twice_nll, np.inf)
        for j in np.argsort(nll):
            if nll[j] < best[item[j]]:
                best[item[j]], best_x[item[j]] = nll[j], out.bestfit[j]
        starts_from = [best_x.copy()]
    return best


def valley_check(workspace: str, patches: list[str], seed: int, ntoys: int, poi_value: float = 1.0) -> dict[str, Any]:
    """Toys as ``toys.hypotest`` draws them (s+b and b, ``ntoys`` each); how many of the batched minima
    (``toys.toy_minima``) lie above :func:`valley_oracle` (and below it) by more than 1e-6."""
    import bayeshf
    from bayeshf import toys

    model = bayeshf.load(workspace, patches=patches)
    observed = np.concatenate([np.asarray(model.observed, float), np.asarray(model.auxdata, float)])
    _, at_test, at_zero = toys._observed_fits(model, poi_value, observed, "qtilde")
    rng = np.random.default_rng(seed)
    sets = [(toys.sample_toys(model, at_test.bestfit, ntoys, rng), at_test.bestfit),
            (toys.sample_toys(model, at_zero.bestfit, ntoys, rng), at_zero.bestfit)]
    report: dict[str, Any] = {"workspace": workspace, "patches": patches, "seed": seed, "ntoys_per_hypothesis": ntoys,
                              "fits": 4 * ntoys, "above": 0, "below": 0, "failed_toys": 0}
    for data, start in sets:
        minima = toys.toy_minima(model, poi_value, data, start)
        ours = np.concatenate([minima.free_nll, minima.fixed_nll])
        oracle = valley_oracle(model, poi_value, data, [np.concatenate([minima.free_x, minima.fixed_x])])
        report["above"] += int(np.sum(ours > oracle + 1e-6))
        report["below"] += int(np.sum(ours < oracle - 1e-6))
        report["failed_toys"] += int(np.sum(~minima.converged))
    return report


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="toys' minima against the oracle of single and mirror-start fits")
    parser.add_argument("workspace")
    parser.add_argument("--patch", action="append", default=[])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ntoys", type=int, default=150)
    parser.add_argument("--poi-value", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(valley_check(args.workspace, args.patch, args.seed, args.ntoys, args.poi_value)))
