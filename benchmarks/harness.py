"""Timing, machine description and result recording shared by every benchmark suite.

A suite records *rows*: one measurement of one implementation on one case
(e.g. ``bayeshf`` / ``ttbar`` / ``value_and_grad``), holding every repeat,
their median and spread. Implementations that cannot run record a *skip* with
the one-line reason. :class:`Recorder` writes everything, with the machine and
package versions, to ``<output>/<suite>.json`` atomically.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bayeshf.io import write_json

PACKAGES = ("bayeshf", "jax", "jaxlib", "numpy", "scipy", "pyhf", "blackjax", "nextstat", "iminuit", "arviz", "juliacall")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages the suites compare (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: host, CPU, cores, memory, Python, versions, git commit."""
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    import jax

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
        "python": sys.version.split()[0],
        "jax_devices": [str(d) for d in jax.devices()],
        # bayeshf.runtime.configure() (called by the harness) switches JAX's CPU client to synchronous dispatch
        # for every JAX implementation in the process; recorded so the per-call rows can be read
        "jax_cpu_async_dispatch": bool(jax.config.values.get("jax_cpu_enable_async_dispatch", True)),
        "versions": package_versions(),
        "git_commit": _git_commit(),
    }


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (comparable across moments where wall time is not)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux ru_maxrss is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current resident memory of this process in MB (Linux; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def summarize(values: list[float]) -> dict[str, Any]:
    """Median and spread (min, max, interquartile range) of repeated measurements."""
    array = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {
        "repeats": [float(v) for v in array],
        "median": float(median),
        "min": float(array.min()),
        "max": float(array.max()),
        "iqr": float(q3 - q1),
    }


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call of ``fn`` (seconds) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def calibrate(fn: Callable[[], Any], min_time: float) -> int:
    """Calls per timing loop so that one loop of an already-warm ``fn`` lasts about ``min_time`` seconds.

    timeit's autorange idea: keeps the clock's resolution out of microsecond timings. An ``fn`` with
    its own ``calibrate`` method (one timed in another process, benchmarks.isolated) does it there.
    """
    if hasattr(fn, "calibrate"):
        return fn.calibrate(min_time)
    elapsed, _ = time_once(fn)
    number = max(1, int(min_time / max(elapsed, 1e-7)))
    if number > 1:  # refine with a short loop: the first warm call is often slower
        probe = min(number, 100)
        start = time.perf_counter()
        for _ in range(probe):
            fn()
        number = max(1, int(min_time / max((time.perf_counter() - start) / probe, 1e-7)))
    return number


def timing_loop(fn: Callable[[], Any], number: int) -> float:
    """Seconds per call over one loop of ``number`` calls, garbage collection off (an ``fn`` with its own
    ``timing_loop`` method runs the loop itself, in the process it lives in)."""
    if hasattr(fn, "timing_loop"):
        return fn.timing_loop(number)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def time_per_call(fn: Callable[[], Any], *, repeats: int = 7, min_time: float = 0.2) -> dict[str, Any]:
    """Seconds per call of an already-warm ``fn``: ``repeats`` loops of ``number`` calls each."""
    return time_interleaved({"fn": fn}, repeats=repeats, min_time=min_time)["fn"]


def time_interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 7,
                     min_time: float = 0.2) -> dict[str, dict[str, Any]]:
    """Time several warm functions with their repeats interleaved (round robin).

    On a shared machine the load drifts; interleaving exposes every
    implementation to the same drift, so the ratios of their medians stay fair.
    """
    numbers = {name: calibrate(fn, min_time) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timing_loop(fn, numbers[name]))
    out = {}
    for name in fns:
        out[name] = summarize(times[name])
        out[name]["number"] = numbers[name]
    return out


class Recorder:
    """Collects the rows and skips of one suite run and writes them as JSON."""

    def __init__(self, suite: str, options: dict[str, Any], output: Path | None, *, echo: bool = True) -> None:
        self.suite = suite
        self.options = options
        self.output = output
        self.echo = echo
        self.rows: list[dict[str, Any]] = []
        self.skips: list[dict[str, Any]] = []
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self.load_start = _load_average()
        self.carried: dict[str, Any] = {"rows": [], "skips": [], "parts": {}}
        self.parts: list[str] | None = None  # a suite made of parts (nbin) names those this run measures

    def previous(self) -> dict[str, Any] | None:
        """The results this suite last wrote to ``<output>/<suite>.json`` (None if none or unreadable)."""
        if self.output is None:
            return None
        try:
            data = json.loads((Path(self.output) / f"{self.suite}.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) and data.get("suite") == self.suite else None

    def carry_over(self, previous: dict[str, Any], parts: list[str], key: str = "suite") -> None:
        """Keep the rows and skips of ``previous`` whose ``key`` is one of ``parts`` (not re-run now).

        Each kept part keeps its own provenance (command, start, machine) under
        ``parts`` in the written file, so a report can say where each came from.
        """
        self.carried["rows"] = [r for r in previous.get("rows", []) if r.get(key) in parts]
        self.carried["skips"] = [s for s in previous.get("skips", []) if s.get(key) in parts]
        provenance = previous.get("parts") or {}
        for part in parts:
            if part in provenance:
                self.carried["parts"][part] = provenance[part]
            elif any(r.get(key) == part for r in self.carried["rows"]):
                self.carried["parts"][part] = {k: previous.get(k) for k in _PROVENANCE}

    def add(self, *, case: str, implementation: str, metric: str, unit: str, summary: dict[str, Any],
            **extra: Any) -> dict[str, Any]:
        """Record one measurement (``summary`` from :func:`summarize` or :func:`time_per_call`)."""
        row = {"case": case, "implementation": implementation, "metric": metric, "unit": unit, **summary, **extra}
        self.rows.append(row)
        if self.echo:
            print(f"  {case:<28} {implementation:<22} {metric:<22} {_fmt(row['median'], unit)}", file=sys.stderr)
        return row

    def add_value(self, *, case: str, implementation: str, metric: str, unit: str, value: float,
                  **extra: Any) -> dict[str, Any]:
        """Record a single-valued measurement (no repeats)."""
        return self.add(case=case, implementation=implementation, metric=metric, unit=unit,
                        summary=summarize([value]), **extra)

    def skip(self, *, implementation: str, reason: str, case: str | None = None, **extra: Any) -> None:
        """Record that an implementation did not run, with the one-line reason (printed once per reason)."""
        entry = {"implementation": implementation, "case": case, "reason": reason, **extra}
        seen = any(s["implementation"] == implementation and s["reason"] == reason for s in self.skips)
        self.skips.append(entry)
        if self.echo and not seen:
            print(f"  skipped {implementation}: {reason}", file=sys.stderr)

    def to_dict(self) -> dict[str, Any]:
        """Everything recorded, with the provenance of each part (see :meth:`carry_over`)."""
        finished = _dt.datetime.now(_dt.timezone.utc)
        out = {
            "suite": self.suite,
            "command": "python -m benchmarks " + " ".join(self.options.get("argv", [])),
            "options": {k: v for k, v in self.options.items() if k != "argv"},
            "started": self.started.isoformat(timespec="seconds"),
            "duration_s": round((finished - self.started).total_seconds(), 1),
            "load_average": {"start": self.load_start, "end": _load_average()},
            "machine": machine_info(),
            "rows": self.carried["rows"] + self.rows,
            "skips": self.carried["skips"] + self.skips,
        }
        if self.parts or self.carried["parts"]:
            mine = {k: out[k] for k in _PROVENANCE}
            out["parts"] = {**self.carried["parts"], **{part: mine for part in self.parts or []}}
        return out

    def save(self) -> Path | None:
        """Write ``<output>/<suite>.json`` (atomically); return its path."""
        if self.output is None:
            return None
        path = Path(self.output) / f"{self.suite}.json"
        write_json(path, self.to_dict())
        print(f"wrote {path}", file=sys.stderr)
        return path


#: top-level keys that say where and how a run was made
_PROVENANCE = ("command", "started", "duration_s", "load_average", "machine")


def _load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: other work on the machine inflates timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return format_seconds(value)
    return f"{value:.4g} {unit}"


def format_seconds(value: float) -> str:
    """Human scale for a duration: ns, us, ms or s."""
    if value != value:  # NaN
        return "nan"
    for scale, suffix in ((1e-6, "ns"), (1e-3, "us"), (1.0, "ms")):
        if abs(value) < scale:
            return f"{value / scale * 1e3:.3g} {suffix}"
    return f"{value:.3g} s"
