"""``bayeshf sample WS --seed S`` over seeds, one fresh CLI process at a time, recording what issue 15 checks.

    nice -n 10 python -m benchmarks.sample_seeds WS [--patch P] [--seeds 0-19] [--name NAME]
        [--tail PARAMETER:THRESHOLD] [--output benchmarks/results/sample_seeds_NAME.json] [-- EXTRA CLI ARGS]

Per seed: max rank-normalised split R-hat, min bulk and tail ESS over all free parameters (summary.json),
divergences, draws per chain, whether --target-ess was reached, wall and CPU time of the process (user +
system of the child, so a loaded machine shows as wall >> CPU / cores), the load average before and after,
and with ``--tail P:T`` the mass P(P < T) and the 1% quantile of P (the tail check of ttbar's WjetsNorm_1b).
The CLI runs with its defaults: only ``--seed``, ``--out`` (a temporary directory) and ``--quiet`` (no
progress bar; the chunking, hence the draws, are the same) are passed, plus ``--patch`` and EXTRA.
Results are rewritten after every seed, so an interrupted sweep keeps the seeds done.
``python -m benchmarks.sample_seeds --table FILE ...`` prints the markdown table docs/sampling.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_seed(workspace: str, seed: int, patches: list[str], extra: list[str], tail: tuple[str, float] | None,
             keep: str | None = None) -> dict:
    """One ``bayeshf sample`` process; the row of its numbers."""
    with tempfile.TemporaryDirectory(prefix="bayeshf-seeds-") as out:
        command = [sys.executable, "-m", "bayeshf", "sample", workspace, "--seed", str(seed), "--out", out, "--quiet"]
        for patch in patches:
            command += ["--patch", patch]
        command += extra
        load_before = os.getloadavg()
        cpu, wall = _children_cpu(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - wall, _children_cpu() - cpu
        row = {"seed": seed, "exit": done.returncode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
               "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()]}
        if done.returncode != 0:
            row["stderr"] = done.stderr[-2000:]
            return row
        summary = json.loads((Path(out) / "summary.json").read_text())
        parameters = summary["parameters"]
        rhat = {k: v["r_hat"] for k, v in parameters.items()}
        bulk = {k: v["ess_bulk"] for k, v in parameters.items()}
        tail_ess = {k: v["ess_tail"] for k, v in parameters.items()}
        row.update(max_rhat=max(rhat.values()), max_rhat_par=max(rhat, key=rhat.get),
                   min_ess_bulk=min(bulk.values()), min_ess_bulk_par=min(bulk, key=bulk.get),
                   min_ess_tail=min(tail_ess.values()), min_ess_tail_par=min(tail_ess, key=tail_ess.get),
                   divergences=summary["divergences"], draws=summary["draws"], chains=summary["chains"],
                   converged=summary.get("converged"), stop=summary.get("settings", {}).get("stop"),
                   target_acceptance=summary.get("settings", {}).get("target_acceptance"),
                   warnings=summary["warnings"])
        if tail is not None:
            import arviz as az

            idata = az.from_netcdf(str(Path(out) / "posterior.nc"))
            draws = np.asarray(idata.posterior[tail[0]].values, dtype=float)  # (chains, draws)
            stats = idata.sample_stats
            row.update(tail_parameter=tail[0], tail_threshold=tail[1],
                       tail_mass=float((draws < tail[1]).mean()),
                       tail_mass_per_chain=[float(v) for v in (draws < tail[1]).mean(axis=1)],
                       q01=float(np.quantile(draws, 0.01)),
                       steps_per_draw=float(np.asarray(stats["n_steps"].values).mean()),
                       step_size=float(np.asarray(stats["step_size"].values).mean()))
            divergent = np.asarray(stats["diverging"].values, dtype=bool)
            if divergent.any():  # where: the tail parameter's value at the divergent transitions
                row["divergent_at"] = [float(v) for v in draws[divergent]]
            idata.close()
        if keep is not None and row.get("divergences"):  # keep the draws of a divergent run for a closer look
            import shutil

            shutil.copytree(out, Path(keep) / f"seed{seed}", dirs_exist_ok=True)
        return row


def table(paths: list[str]) -> str:
    """Markdown rows, one per results file: median and worst over seeds (``--table FILE ...``)."""
    lines = ["| workspace | seeds | max R-hat: median (worst) | min bulk ESS | min tail ESS | divergences (seeds with any) "
             "| draws per chain | P(tail) [lowest, highest] | 1% quantile | CPU s | wall s | load average |",
             "|" + "---|" * 12]
    for path in paths:
        document = json.loads(Path(path).read_text())
        rows = [r for r in document["rows"] if r.get("exit") == 0]
        failed = len(document["rows"]) - len(rows)
        if not rows:
            lines.append(f"| {Path(path).stem} | all {failed} failed |" + " |" * 10)
            continue

        def column(key, worst, digits):
            values = [r[key] for r in rows]
            return f"{np.median(values):{digits}} ({worst(values):{digits}})"

        seeds = [r["seed"] for r in rows]
        divergences = [r["divergences"] for r in rows]
        tail = ("–", "–")
        if "tail_mass" in rows[0]:
            mass, q01 = [r["tail_mass"] for r in rows], [r["q01"] for r in rows]
            tail = (f"{np.median(mass):.4f} [{min(mass):.4f}, {max(mass):.4f}]",
                    f"{np.median(q01):.2f} [{min(q01):.2f}, {max(q01):.2f}]")
        load = [r["load_before"][0] for r in rows]
        lines.append("| " + " | ".join([
            Path(path).stem.removeprefix("sample_seeds_"),
            f"{min(seeds)}-{max(seeds)} ({len(rows)}{f', {failed} failed' if failed else ''})",
            column("max_rhat", max, ".4f"), column("min_ess_bulk", min, ".0f"), column("min_ess_tail", min, ".0f"),
            f"{sum(divergences)} ({sum(d > 0 for d in divergences)})",
            f"{int(np.median([r['draws'] for r in rows]))} ({max(r['draws'] for r in rows)})", *tail,
            column("cpu_s", max, ".1f"), column("wall_s", max, ".1f"), f"{min(load):.1f}-{max(load):.1f}"]) + " |")
    return "\n".join(lines)


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--table"]:
        print(table(argv[1:]))
        return 0
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sample_seeds", description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--patch", action="append", default=[])
    parser.add_argument("--seeds", default="0-19")
    parser.add_argument("--name", default=None, help="results name (default: the workspace's file stem)")
    parser.add_argument("--tail", default=None, metavar="PARAMETER:THRESHOLD")
    parser.add_argument("--output", default=None)
    parser.add_argument("--keep-divergent", default=None, metavar="DIR",
                        help="copy the outputs of runs with divergences to DIR/seedS")
    args = parser.parse_args(argv)
    name = args.name or Path(args.workspace).stem
    output = Path(args.output) if args.output else RESULTS / f"sample_seeds_{name}.json"
    tail = None
    if args.tail:
        parameter, _, threshold = args.tail.rpartition(":")
        tail = (parameter, float(threshold))
    rows = []
    for seed in _seeds(args.seeds):
        rows.append(run_seed(args.workspace, seed, args.patch, extra, tail, args.keep_divergent))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "warnings"}), flush=True)
        document = {"command": " ".join(["bayeshf sample", args.workspace, *(f"--patch {p}" for p in args.patch),
                                         "--seed S", *extra]),
                    "workspace": args.workspace, "patches": args.patch, "extra": extra, "cpus": os.cpu_count(),
                    "commit": _commit(),
                    "rows": rows}
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
