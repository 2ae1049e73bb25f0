"""Suite ``coldstart``: whole commands in fresh processes, as a user waits for them.

Side by side, in a round robin (one of each per repeat, so each round meets the
same machine load):

- ``python+jax``: a bare Python that imports JAX and runs one operation (the floor
  of any JAX program);
- ``import bayeshf`` and the same operation (bayeshf's own import above the floor);
- ``bayeshf sample --bogus``: an argument error (answered before JAX's import);
- ``bayeshf fit`` on the ATLAS ttbar workspace, ``first`` with an empty
  compilation cache and ``second`` with the cache the first filled;
- ``bayeshf sample examples/4_bin.json`` (the defaults: 4 chains, plots, posterior.nc),
  first and second run likewise;
- NextStat's whole process fitting the same workspace: its command line
  (``nextstat fit --input``) and Python (``import nextstat``, ``from_pyhf``, ``fit``).

Each row holds wall and CPU seconds (the child's user + system time); the
bayeshf rows also count the compilation cache's hits and misses (JAX's
monitoring events). ``--quick`` runs one round of the fit rows and ``python+jax``.
``--baseline DIR`` adds the bayeshf rows run from another revision's source tree
(its own compilation caches) to the same rounds: before and after under the same load.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cases import REAL_CASES, REPO, data_dir
from benchmarks.harness import Recorder, summarize
from benchmarks.progress import progress

#: runs a bayeshf command as the ``bayeshf`` script does (bayeshf.cli.entry), counting compilation cache hits and
#: misses and the programs loaded from / written to bayeshf's program store
BAYESHF_WRAPPER = """
import atexit, json, sys
events = {"hits": 0, "misses": 0, "loaded": 0, "stored": 0}
names = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses",
         "/bayeshf/stored_programs/loaded": "loaded", "/bayeshf/stored_programs/stored": "stored"}
def listen(name, **kwargs):
    if name in names:
        events[names[name]] += 1
def dump():
    with open(sys.argv[1], "w") as out:
        json.dump(events, out)
atexit.register(dump)
# the listener goes in when the command configures JAX, not before: importing JAX here would run ahead of what
# the command does before JAX (sample forks its writer first)
from bayeshf import runtime
configure = runtime.configure
def configure_and_listen(*args, **kwargs):
    settings = configure(*args, **kwargs)
    import jax.monitoring
    jax.monitoring.register_event_listener(listen)
    return settings
runtime.configure = configure_and_listen
import bayeshf.cli as cli
if hasattr(cli, "entry"):  # the bayeshf script: exit handlers, then os._exit
    cli.entry(sys.argv[2:])
code = cli.main(sys.argv[2:])  # an older revision (--baseline)
dump()
sys.exit(code)
"""

BARE_JAX = "import jax, jax.numpy as jnp; jnp.ones(3).sum().block_until_ready()"
NEXTSTAT_PYTHON = "import nextstat, sys; nextstat.fit(nextstat.from_pyhf(open(sys.argv[1]).read()))"

#: seconds a single command may take before the suite gives up on it
TIMEOUT_S = 600.0


def _child_env(cache: Path | None, source: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("JAX_")}
    env["BAYESHF_JAX_CACHE"] = str(cache) if cache is not None else "off"
    if source is not None:  # bayeshf from this source tree, ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_command(argv: list[str], *, cache: Path | None = None, cwd: Path | None = None,
                exit_code: int = 0, source: str | None = None) -> dict[str, Any]:
    """Run one command to completion: wall and CPU seconds (and cache events when it reports them);
    ``source``: a source tree whose bayeshf runs instead of the installed one.

    A command ending with another status than ``exit_code`` raises RuntimeError.
    """
    events_file = None
    if argv[:1] == ["bayeshf"]:
        events_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
        events_file.close()
        argv = [sys.executable, "-c", BAYESHF_WRAPPER, events_file.name, *argv[1:]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env(cache, source),
                          cwd=cwd, timeout=TIMEOUT_S)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != exit_code:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited with {done.returncode}: {last}"[:300])
    result = {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    if events_file is not None:
        result.update(json.loads(Path(events_file.name).read_text() or "{}"))
        os.unlink(events_file.name)
    return result


def commands(options: Any, scratch: Path) -> list[tuple[str, str, list[str], str | None]]:
    """(case, implementation, argv, cache role) per command; role ``first`` empties the cache first.
    With ``options.baseline`` every bayeshf command comes twice: ``bayeshf`` and ``baseline``."""
    ttbar = str(data_dir(options.data) / REAL_CASES["ttbar_ljets"][0])
    sample = [str(REPO / "examples" / "4_bin.json"), "--out", str(scratch / "sample")]
    nextstat_cli = shutil.which("nextstat")
    rows = [
        ("jax op", "python+jax", [sys.executable, "-c", BARE_JAX], None),
        ("fit ttbar_ljets", "bayeshf (first)", ["bayeshf", "fit", ttbar], "first"),
        ("fit ttbar_ljets", "bayeshf (second)", ["bayeshf", "fit", ttbar], "second"),
        ("fit ttbar_ljets", "nextstat (CLI)", [nextstat_cli or "nextstat", "fit", "--input", ttbar], None),
        ("fit ttbar_ljets", "nextstat (Python)", [sys.executable, "-c", NEXTSTAT_PYTHON, ttbar], None),
    ]
    if not options.quick:
        rows[1:1] = [("jax op", "import bayeshf", [sys.executable, "-c", "import bayeshf; " + BARE_JAX], None),
                     ("bad argument", "bayeshf", [sys.executable, "-m", "bayeshf", "sample", "--bogus"], None)]
        rows += [("sample 4_bin", "bayeshf (first)", ["bayeshf", "sample", *sample], "first"),
                 ("sample 4_bin", "bayeshf (second)", ["bayeshf", "sample", *sample], "second")]
    if getattr(options, "baseline", None):
        rows += [(case, name.replace("bayeshf", "baseline"), argv, role) for case, name, argv, role in rows
                 if argv[:1] == ["bayeshf"]]
    return rows


def run(options: Any, recorder: Recorder) -> None:
    repeats = 1 if options.quick else max(1, options.repeats)
    if getattr(options, "baseline", None):  # which revision the baseline tree holds, for the report
        done = subprocess.run(["git", "-C", str(options.baseline), "rev-parse", "HEAD"], capture_output=True, text=True)
        if done.returncode == 0:
            recorder.options["baseline_revision"] = done.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bayeshf-coldstart-") as tmp:
        scratch = Path(tmp)
        plan = commands(options, scratch)
        measured: dict[tuple[str, str], list[dict[str, Any]]] = {}
        failed: set[tuple[str, str]] = set()
        for round_ in progress(range(repeats), desc="coldstart"):
            for case, name, argv, role in plan:
                if (case, name) in failed:
                    continue
                cache = None
                source = options.baseline if name.startswith("baseline") else None
                if role is not None:
                    cache = scratch / f"cache-{case.split()[0]}-{name.split()[0]}"
                    if role == "first":
                        shutil.rmtree(cache, ignore_errors=True)
                try:
                    measured.setdefault((case, name), []).append(
                        run_command(argv, cache=cache, cwd=scratch, exit_code=2 if case == "bad argument" else 0,
                                    source=source))
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
                    failed.add((case, name))
                    recorder.skip(implementation=name, case=case, reason=f"failed: {error}"[:300])
        for (case, name), runs in measured.items():
            if not runs:
                continue
            extra = {}
            if "hits" in runs[0]:
                extra = {"cache_hits": [r["hits"] for r in runs], "cache_misses": [r["misses"] for r in runs],
                         "programs_loaded": [r.get("loaded", 0) for r in runs],
                         "programs_stored": [r.get("stored", 0) for r in runs]}
            for metric in ("wall", "cpu"):
                recorder.add(case=case, implementation=name, metric=metric, unit="s",
                             summary=summarize([r[metric] for r in runs]), **extra)


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "As a user waits for it" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    index = {(r["case"], r["implementation"], r["metric"]): r for r in rows}
    floor = index.get(("jax op", "python+jax", "wall"))
    floor_cpu = index.get(("jax op", "python+jax", "cpu"))
    out = ["## As a user waits for it", "",
           f"Reproduce: {command}. Machine: {machine}.", "",
           "Whole commands in fresh processes, one of each per round (median of the rounds). *first* = empty "
           "compilation cache, *second* = the cache the first run filled (`BAYESHF_JAX_CACHE`); *hits/misses* = "
           "programs read from / compiled into JAX's persistent cache, *loaded/stored* = whole programs loaded from / "
           "written to bayeshf's program store (`bayeshf.stored`; per run). *− floor* = the row minus a bare Python "
           "that imports JAX and runs one operation.", ""]
    baseline = (data.get("options") or {}).get("baseline")
    revision = (data.get("options") or {}).get("baseline_revision")
    if baseline:
        tree = f"`{baseline}`" + (f" (git {revision[:10]}: `git worktree add {baseline} {revision[:10]}`)"
                                   if revision else "")
        out += [f"*baseline* = the same bayeshf commands run from the source tree {tree}, in the same rounds "
                "(before and after under the same load).", ""]
    body = []
    for (case, name, metric), row in index.items():
        if metric != "wall":
            continue
        cpu = index.get((case, name, "cpu"))
        hits = row.get("cache_hits")
        misses = row.get("cache_misses")
        loaded, stored = row.get("programs_loaded"), row.get("programs_stored")
        body.append([case, name, f"{row['median']:.2f} s", f"{cpu['median']:.2f} s" if cpu else "–",
                     f"{row['median'] - floor['median']:+.2f} s" if floor else "–",
                     f"{cpu['median'] - floor_cpu['median']:+.2f} s" if cpu and floor_cpu else "–",
                     "–" if hits is None else f"{_median(hits)} / {_median(misses)}",
                     "–" if loaded is None else f"{_median(loaded)} / {_median(stored)}"])
    header = ["command", "implementation", "wall", "CPU", "wall − floor", "CPU − floor", "cache hits / misses",
              "programs loaded / stored"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in body]
    return out + [""] + _targets(index, floor, floor_cpu)


def _median(values: list) -> Any:
    return sorted(values)[len(values) // 2]


def _targets(index: dict, floor: dict | None, floor_cpu: dict | None) -> list[str]:
    """The cold-start targets against this run: the fit within 0.7 s of the floor, the sample under 3 s (wall)."""
    out = []
    for who in ("bayeshf", "baseline"):
        fit, fit_cpu = (index.get(("fit ttbar_ljets", f"{who} (second)", m)) for m in ("wall", "cpu"))
        if fit and floor and fit_cpu and floor_cpu:
            excess = fit["median"] - floor["median"]
            out.append(f"- Target: `bayeshf fit` on ttbar, second run, within 0.7 s of the floor ({who}): "
                       f"{excess:+.2f} s wall ({'met' if excess <= 0.7 else 'not met'}), "
                       f"{fit_cpu['median'] - floor_cpu['median']:+.2f} s CPU. The load average above inflates "
                       "wall times; the CPU difference is the steadier figure.")
        sample, sample_cpu = (index.get(("sample 4_bin", f"{who} (second)", m)) for m in ("wall", "cpu"))
        if sample and sample_cpu:
            out.append(f"- Target: `bayeshf sample examples/4_bin.json`, second run, under 3 s wall ({who}): "
                       f"{sample['median']:.2f} s wall ({'met' if sample['median'] < 3.0 else 'not met'}), "
                       f"{sample_cpu['median']:.2f} s CPU.")
    return out + [""] if out else []
