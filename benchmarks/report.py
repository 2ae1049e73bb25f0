"""Regenerate the plots and docs/benchmarks.md from the recorded results (``python -m benchmarks report``).

Nothing here measures: every number comes from ``<results>/<suite>.json``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.harness import format_seconds
from bayeshf.io import write_text

ORDER = ["bayeshf", "bayeshf-pytree", "pyhf-jax", "pyhf-jax-alone", "pyhf-numpy", "nextstat", "blackjax-pyhf", "pyhf-numpy-slsqp", "pyhf-numpy-minuit",
         "pyhf-jax-slsqp", "bat-litehf", "bat-jax-callback", "bat-pyhf", "jax-call-floor"]


def load_results(results: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(Path(results).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "suite" in data:
            out[data["suite"]] = data
    return out


def _rows(data: dict[str, Any] | None, **match: Any) -> list[dict[str, Any]]:
    if not data:
        return []
    return [r for r in data["rows"] if all(r.get(k) == v for k, v in match.items())]


def _impls(rows: list[dict[str, Any]]) -> list[str]:
    names = {r["implementation"] for r in rows}
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _sec(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    text = format_seconds(row["median"])
    if len(row.get("repeats", [])) > 1 and row["median"] > 0:
        text += f" ±{100 * row['iqr'] / 2 / row['median']:.0f}%"
    return text


def _index(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, dict[str, Any]]:
    return {tuple(r.get(k) for k in keys): r for r in rows}


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _machine(data: dict[str, Any]) -> str:
    m = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    load = data.get("load_average") or {}
    dispatch = {True: "; JAX CPU dispatch asynchronous", False: "; JAX CPU dispatch synchronous"}.get(
        m.get("jax_cpu_async_dispatch"), "")
    return (f"{m['cpu']}, {m['cpu_count']} cores, {m['memory_gb']} GB, Python {m['python']}{dispatch}; {versions}; "
            f"git {str(m.get('git_commit'))[:10]}; run {data['started']} ({data['duration_s']} s); "
            f"load average at start {load.get('start')}")


def _command(data: dict[str, Any]) -> str:
    return f"`{data['command'].strip()}`"


# -- sections -----------------------------------------------------------------------------


METRIC_TITLES = {
    "value": "value (per call)",
    "value_and_grad": "value + gradient (per call)",
    "value_and_grad_host": "value + gradient on the host (per call: NumPy in, float + NumPy gradient out)",
    "hvp": "Hessian-vector product (per call)",
    "value_and_grad_in_jit": "value + gradient (in jit, per evaluation)",
}


def section_logdensity(data: dict[str, Any]) -> list[str]:
    out = ["## Log-density: value, value + gradient, Hessian-vector product", "",
           f"Reproduce: {_command(data)}. Machine: {_machine(data)}.", "",
           "Time per call after the first call (median of the repeats, ± half the interquartile range); "
           "ratios are peer time / bayeshf time measured in the same run, repeats round robin (> 1: bayeshf is "
           "faster).", "",
           "*Per call* = one blocking call of the jitted function from Python, as a host loop (scipy, iminuit) "
           "makes it: the computation plus JAX's fixed cost per call. The benchmark, like the `bayeshf` command, "
           "calls `bayeshf.runtime.configure()`, which switches JAX's CPU client to synchronous dispatch "
           "(`BAYESHF_CPU_ASYNC=1` keeps JAX's default): a "
           "call runs on the calling thread instead of being handed to a worker thread, as JAX does by default "
           "for any program above 1,000 flops. That switch holds for the whole process, so the per-call rows "
           "(value, value + gradient, HVP) of `pyhf-jax`, measured next to bayeshf, are faster than pyhf's "
           "users get them. `pyhf-jax-alone` is pyhf's jax backend as its users run it: the same jitted "
           "functions in a process of its own with JAX's defaults (asynchronous dispatch, one CPU device), "
           "started and driven by the benchmark (benchmarks.isolated), its timing loops taking their turn "
           "in the same round robin (its `load` and first calls include a fresh process's one-off costs). "
           "*On the host* = the same from a NumPy point to a float and a NumPy gradient, what an optimiser "
           "needs: bayeshf's `HistFactoryModel.value_and_grad` (one compiled program per model returning value "
           "and gradient packed in one array: each output of a compiled call costs about 3 us of dispatch), "
           "the JAX peers' jitted value-and-grad followed by `float` and `np.asarray`, NextStat's `nll` and "
           "`grad_nll` as they are. "
           "*In jit* = time per evaluation "
           "of value + gradient inside one compiled loop of chained evaluations (what a sampler or optimizer "
           "compiled with the model pays; JAX implementations only). `jax-call-floor` is not a log-density: "
           "jitted functions of the same shapes that XLA puts above the 1,000-flop line but that compute almost "
           "nothing, i.e. the per-call cost no JAX implementation can go below (on the host: one packed "
           "output, the cheapest shape). See benchmarks/peers.py.", ""]
    rows = _rows(data)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    impls = _impls(rows)
    index = _index(rows, "case", "implementation", "metric")
    for metric in METRIC_TITLES:
        peers = [i for i in impls if i != "bayeshf" and any((c, i, metric) in index for c in cases)]
        columns = [i for i in impls if any((c, i, metric) in index for c in cases)]
        header = ["case", "pars", *columns, *(f"{p} / bayeshf" for p in peers)]
        body = []
        for case in cases:
            any_row = next((index[(case, i, metric)] for i in impls if (case, i, metric) in index), None)
            if any_row is None:
                continue
            line = [case, str(any_row.get("npars", ""))]
            line += [_sec(index.get((case, i, metric))) for i in columns]
            mine = index.get((case, "bayeshf", metric))
            for peer in peers:
                other = index.get((case, peer, metric))
                line.append(f"{other['median'] / mine['median']:.2f}x" if mine and other else "–")
            body.append(line)
        if body:
            out += [f"**{METRIC_TITLES[metric]}**", "", _table(header, body), ""]
    header = ["case"] + [f"{i} {m}" for i in ("bayeshf", "pyhf-jax") for m in ("load", "first value+grad")]
    body = []
    for case in cases:
        line = [case]
        for impl in ("bayeshf", "pyhf-jax"):
            line += [_sec(index.get((case, impl, "load"))), _sec(index.get((case, impl, "first_call_value_and_grad")))]
        body.append(line)
    out += ["**Setup: model build (`load`) and first value + gradient call (trace + compile + run)**", "",
            _table(header, body), ""]
    agreement = []
    for case in cases:
        values = {i: index[(case, i, "value")].get("logpdf") for i in impls if (case, i, "value") in index}
        ref = values.get("pyhf-numpy")
        if ref is None:
            continue
        worst = max((abs(v - ref) / max(abs(ref), 1.0) for v in values.values() if v is not None and v == v),
                    default=0.0)
        agreement.append(f"{case}: {worst:.1e}")
    if agreement:
        out += ["Agreement of the log-density at the timed point (max relative difference to pyhf numpy): "
                + "; ".join(agreement) + ".", ""]
    out += targets(index)
    return out


def targets(index: dict[tuple, dict[str, Any]]) -> list[str]:
    """Issue 2's speed targets, checked against the recorded rows."""
    out = ["**Targets (issue 2)**", ""]
    for case in ("ttbar_ljets", "sbottom_RegionA_1300_205_60"):
        mine = index.get((case, "bayeshf", "value_and_grad"))
        nextstat = index.get((case, "nextstat", "value_and_grad"))
        if not mine:
            out.append(f"- {case}: bayeshf not measured.")
            continue
        for metric, how in (("value_and_grad", "per call"), ("value_and_grad_host", "on the host"),
                            ("value_and_grad_in_jit", "in jit")):
            ours, pyhf_jax = index.get((case, "bayeshf", metric)), index.get((case, "pyhf-jax", metric))
            for peer, which in (("pyhf-jax", "in bayeshf's process"),
                                ("pyhf-jax-alone", "in its own process, as its users run it")):
                other = index.get((case, peer, metric))
                if ours and other:
                    ratio = other["median"] / ours["median"]
                    out.append(f"- {case}: value + gradient {how} {ratio:.1f}x faster than pyhf's jitted jax "
                               f"backend {which} (target >= 5x: {'met' if ratio >= 5 else 'NOT met'}).")
            floor = index.get((case, "jax-call-floor", metric))
            if pyhf_jax and floor:
                out.append(f"  (JAX's own cost per call here, `jax-call-floor`: {format_seconds(floor['median'])}; "
                           f"no JAX implementation can be more than {pyhf_jax['median'] / floor['median']:.1f}x "
                           "faster than pyhf-jax in bayeshf's process per call.)")
        host = index.get((case, "bayeshf", "value_and_grad_host"))
        if nextstat:
            ratio = nextstat["median"] / (host or mine)["median"]
            out.append(f"- {case}: NextStat nll + grad_nll / bayeshf {'host API' if host else 'per call'} = "
                       f"{ratio:.2f} (target: ahead of NextStat, > 1: {'met' if ratio > 1 else 'NOT met'}).")
    first = index.get(("ttbar_ljets", "bayeshf", "first_call_value_and_grad"))
    if first:
        out.append(f"- ttbar first value + gradient call (trace + compile): {format_seconds(first['median'])} "
                   f"(target < 1 s: {'met' if first['median'] < 1 else 'NOT met'}).")
    return out + [""]


def section_sampling(data: dict[str, Any], plots: Path, docs: Path) -> list[str]:
    out = ["## Sampling: wall time and ESS/s", "", f"Reproduce: {_command(data)}. Machine: {_machine(data)}.", "",
           "2 chains; `steps` = draws per chain after `warmup` adaptation steps. *cold* = first call in the "
           "process (trace + compile + run), *warm* = the same call again with another seed; ESS/s = minimum "
           "bulk ESS over parameters (ArviZ) / warm time.", ""]
    if data.get("interrupted"):
        out += [f"**This run is incomplete**: {data['interrupted']}.", ""]
    rows = _rows(data)
    index = _index(rows, "case", "implementation", "sampler", "steps", "metric")
    keys = sorted({(r["case"], r.get("sampler"), r.get("steps"), r["implementation"]) for r in rows
                   if r["metric"] == "warm"},
                  key=lambda k: (k[0], str(k[1]), k[2] or 0, ORDER.index(k[3]) if k[3] in ORDER else 99))
    body = []
    for case, sampler, steps, impl in keys:
        get = lambda m: index.get((case, impl, sampler, steps, m))  # noqa: E731
        ess, ess_s = get("min_ess_bulk"), get("ess_per_s")
        body.append([case, sampler, str(steps), impl, _sec(get("cold")), _sec(get("warm")),
                     f"{ess['median']:.0f}" if ess else "–", f"{ess_s['median']:.0f}" if ess_s else "–"])
    out += [_table(["case", "sampler", "steps", "implementation", "cold", "warm", "min bulk ESS", "ESS/s"], body), ""]
    process = [r for r in rows if r["metric"].startswith("cold_process")]
    if process:
        body = [[r["case"], r["sampler"], str(r["steps"]), r["implementation"],
                 "fresh process" if r["metric"] == "cold_process" else "fresh process, compilation cache filled",
                 _sec(r)] for r in process]
        out += ["Whole run as a user waits for it (`python` started, import, load, compile, warm-up "
                f"{process[0]['warmup']} steps, draws):", "",
                _table(["case", "sampler", "steps", "implementation", "how", "wall time"], body), ""]
    published = [r for r in rows if r["metric"] == "published"]
    if published:
        out += ["Thesis Table 5.1, 10,000 HMC steps, 2 chains, 2_bin_corr (**published, another machine**): "
                + ", ".join(f"{r['implementation']} {format_seconds(r['median'])}" for r in published)
                + ". Compare with the `hmc` / 10000 rows above.", ""]
    path = plot_sampling(rows, plots)
    if path:
        out += [f"![run time vs steps]({_rel(path, docs)})", ""]
    return out


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def section_fit(data: dict[str, Any]) -> list[str]:
    out = ["## Fit: wall time and twice_nll reached", "", f"Reproduce: {_command(data)}. Machine: {_machine(data)}.",
           "", "*fit* = warm fit (median of repeats), *first* = first fit in the process (includes compilation). "
           "Δ = twice_nll reached minus the lowest twice_nll any implementation reached on that case.", ""]
    rows = _rows(data)
    index = _index(rows, "case", "implementation", "metric")
    body = []
    for case in dict.fromkeys(r["case"] for r in rows):
        reached = [_finite(r.get("twice_nll")) for r in rows
                   if r["case"] == case and r["metric"] in ("fit", "first_fit")]
        best = min((v for v in reached if v is not None), default=None)
        for impl in _impls([r for r in rows if r["case"] == case]):
            fit = index.get((case, impl, "fit"))
            first = index.get((case, impl, "first_fit"))
            if not (fit or first):
                continue
            value = _finite((fit or first).get("twice_nll"))
            body.append([case, impl, _sec(fit) if fit else "– (one fit only)", _sec(first),
                         "–" if value is None else f"{value:.6f}",
                         "–" if value is None or best is None else f"{value - best:.1e}"])
    return out + [_table(["case", "implementation", "fit", "first", "twice_nll", "Δ"], body), ""]


def section_nbin(data: dict[str, Any], plots: Path, docs: Path) -> list[str]:
    out = ["## n-bin sweep (thesis n-bin model, n + 1 parameters)", ""]
    parts = data.get("parts") or {}
    if not parts:
        out += [f"Reproduce: {_command(data)}. Machine: {_machine(data)}.", ""]
    if data.get("interrupted"):
        out += [f"**This run is incomplete**: {data['interrupted']}.", ""]
    out += ["A peer whose cost per call, extrapolated from the sizes before, would exceed the sweep's budget is "
            "not run at that size and above (see *Not run*); – marks those cells.", ""]
    rows = _rows(data)
    panels = (("logdensity", "value_and_grad", "log-density value + gradient per call", "nbin_logdensity.png"),
              ("logdensity", "value_and_grad_in_jit", "log-density value + gradient in jit, per evaluation",
               "nbin_logdensity_in_jit.png"),
              ("fit", "fit", "fit wall time", "nbin_fit.png"),
              ("sampling", "warm", "NUTS 300 warm-up + 500 draws x 2 chains (warm)", "nbin_sampling.png"))
    shown = set()
    for suite, metric, label, filename in panels:
        selected = [r for r in rows if r.get("suite") == suite and r["metric"] == metric]
        if not selected:
            continue
        if suite in parts and suite not in shown:
            shown.add(suite)
            out += [f"*{suite}* reproduce: {_command(parts[suite])}. Machine: {_machine(parts[suite])}.", ""]
        sizes = sorted({r["n_bins"] for r in selected})
        impls = _impls(selected)
        index = _index(selected, "n_bins", "implementation")
        body = [[str(n)] + [_sec(index.get((n, i))) for i in impls] for n in sizes]
        out += [f"**{label}**", "", _table(["n bins", *impls], body), ""]
        path = plot_vs_bins(selected, plots / filename, f"{label} vs number of bins")
        if path:
            out += [f"![{label}]({_rel(path, docs)})", ""]
    ess = [r for r in rows if r.get("suite") == "sampling" and r["metric"] == "ess_per_s"]
    if ess:  # what the sampling target is stated in: ESS/s, and bayeshf's multiple of each peer's
        sizes = sorted({r["n_bins"] for r in ess})
        impls = _impls(ess)
        index = _index(ess, "n_bins", "implementation")
        peers = [i for i in impls if i != "bayeshf"]

        def ratio(n: int, peer: str) -> str:
            ours, theirs = index.get((n, "bayeshf")), index.get((n, peer))
            return f"{ours['median'] / theirs['median']:.2f}x" if ours and theirs and theirs["median"] > 0 else "–"

        body = [[str(n)] + [f"{index[(n, i)]['median']:.0f}" if (n, i) in index else "–" for i in impls]
                + [ratio(n, p) for p in peers] for n in sizes]
        out += ["**NUTS ESS/s (minimum bulk ESS over parameters / warm time, median over the warm repeats, which "
                "run round robin across the implementations with the same seeds; > 1x: bayeshf ahead)**", "",
                _table(["n bins", *impls, *(f"bayeshf / {p}" for p in peers)], body), ""]
    return out


def section_large(data: dict[str, Any]) -> list[str]:
    out = ["## Large synthetic model (bayeshf)", "", f"Reproduce: {_command(data)}. Machine: {_machine(data)}.", "",
           "1 signal + 4 flat backgrounds, every systematic a histosys on every sample "
           "(`bayeshf.generators.synthetic_arrays`).", ""]
    body = []
    for r in _rows(data):
        value = _sec(r) if r["unit"] == "s" else f"{r['median']:.0f} {r['unit']}"
        extra = f" (twice_nll {r['twice_nll']:.2f})" if "twice_nll" in r else ""
        body.append([r["case"], r["metric"], value + extra])
    return out + [_table(["case", "metric", "value"], body), ""]


def suite_sections(results: dict[str, dict[str, Any]]) -> list[str]:
    """Sections of the suites that write their own (``report_section`` in the suite's module)."""
    import importlib

    from benchmarks import SUITES

    out = []
    for suite, module_name in SUITES.items():
        module = importlib.import_module(f"benchmarks.{module_name}")
        if suite in results and hasattr(module, "report_section"):
            data = results[suite]
            out += module.report_section(data, _command(data), _machine(data))
    return out


def section_skips(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for suite, data in results.items():
        seen = set()
        for skip in data.get("skips", []):
            # case-specific outcomes (a run that did not finish or failed) name their case; generic reasons
            # (a peer without that sampler) are listed once
            specific = any(word in skip["reason"] for word in ("did not finish", "failed"))
            case = f" on {skip['case']}" if specific and skip.get("case") else ""
            key = (skip["implementation"], skip["reason"], case)
            if key not in seen:
                seen.add(key)
                part = f" {skip['suite']}" if skip.get("suite") and skip["suite"] != suite else ""
                lines.append(f"- {suite}{part} / {skip['implementation']}{case}: {skip['reason']}")
    return (["## Not run", "", *lines, ""] if lines else [])


# -- plots --------------------------------------------------------------------------------


def _rel(path: Path, docs: Path) -> str:
    import os

    return os.path.relpath(path, docs.parent)


def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    return fig, ax, plt


def plot_vs_bins(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    if not rows:
        return None
    fig, ax, plt = _axes()
    for impl in _impls(rows):
        points = sorted((r["n_bins"], r["median"]) for r in rows if r["implementation"] == impl)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=impl)
    ax.set(xscale="log", yscale="log", xlabel="number of bins", ylabel="seconds", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sampling(rows: list[dict[str, Any]], plots: Path) -> Path | None:
    warm = [r for r in rows if r["metric"] == "warm" and r["case"] == "thesis_2_bin_corr"]
    if not warm:
        return None
    fig, ax, plt = _axes()
    for impl in _impls(warm):
        for sampler in sorted({r["sampler"] for r in warm if r["implementation"] == impl}):
            points = sorted((r["steps"], r["median"]) for r in warm if r["implementation"] == impl and r["sampler"] == sampler)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{impl} {sampler}")
    for r in rows:
        if r["metric"] == "published":
            ax.scatter([r["steps"]], [r["median"]], marker="x", s=60, label=f"{r['implementation']} (published)")
    ax.set(xscale="log", yscale="log", xlabel="steps per chain (2 chains)", ylabel="seconds (warm)",
           title="thesis 2_bin_corr: run time vs steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path = plots / "sampling_steps.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


HOW_TO_RUN = [
    "## Running the benchmarks", "",
    "```",
    "pip install -e '.[bench]'                  # NextStat and iminuit, the peers that are not core dependencies",
    "python -m benchmarks logdensity            # or: bayeshf bench logdensity (same harness, from a repository checkout)",
    "python -m benchmarks sampling --steps 5000,10000",
    "python -m benchmarks fit --cases ttbar_ljets --impl bayeshf,nextstat",
    "python -m benchmarks nbin --sizes 1,10,100",
    "python -m benchmarks nbin --parts sampling # one part of the sweep; the other parts' rows in nbin.json stay",
    "python -m benchmarks large --bins 10000 --systematics 1000",
    "python -m benchmarks coldstart --repeats 5  # whole commands in fresh processes, as a user waits for them",
    "python -m benchmarks report                # regenerate this page and benchmarks/plots/ from benchmarks/results/",
    "python -m benchmarks all                   # every suite, then the report",
    "```", "",
    "`--quick` runs a smoke-test size of any suite in under a minute (results in benchmarks/results/quick/, "
    "not committed); `--repeats`, `--min-time`, `--seed`, `--data DIR` and `--output DIR` are shared by all "
    "suites. Implementations that are not installed (NextStat, Julia for the BAT runners) are skipped with "
    "a line saying why. The JSON files keep every repeat, the median, min, max and interquartile range, the "
    "seeds, the machine (CPU, cores, memory, load average) and the package versions.", "",
]


# -- entry point --------------------------------------------------------------------------


def write_report(results: Path, docs: Path | None = None, plots: Path | None = None) -> Path:
    """Write the plots and docs/benchmarks.md (default locations next to ``results``); return the doc path."""
    results = Path(results)
    repo_docs = results.parent.parent / "docs"
    docs = Path(docs) if docs else (repo_docs / "benchmarks.md" if repo_docs.is_dir() else results / "benchmarks.md")
    plots = Path(plots) if plots else results.parent / "plots"
    found = load_results(results)
    lines = ["# Benchmarks", "",
             "Generated by `python -m benchmarks report` from the JSON files in benchmarks/results/ "
             "(do not edit by hand). Each suite's section names the command that reproduces it and the machine "
             "it ran on; every JSON file holds all repeats, seeds and package versions. Timings on a shared "
             "machine are inflated by its load (recorded as the load average); ratios between implementations "
             "measured in the same run are the robust numbers.", ""]
    if "logdensity" in found:
        lines += section_logdensity(found["logdensity"])
    if "sampling" in found:
        lines += section_sampling(found["sampling"], plots, docs)
    if "fit" in found:
        lines += section_fit(found["fit"])
    if "nbin" in found:
        lines += section_nbin(found["nbin"], plots, docs)
    if "large" in found:
        lines += section_large(found["large"])
    lines += suite_sections(found)
    lines += section_skips(found)
    lines += HOW_TO_RUN
    write_text(docs, "\n".join(lines).rstrip() + "\n")
    print(f"wrote {docs}", file=sys.stderr)
    return docs
