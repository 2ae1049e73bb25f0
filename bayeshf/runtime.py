"""The process-wide JAX settings bayeshf uses, in one place.

``import bayeshf`` changes one thing: float64 (``jax_enable_x64``), which
parity with pyhf needs. Everything else is opt-in through :func:`configure`,
which the ``bayeshf`` command line calls first thing and library users call
once, right after ``import bayeshf`` and before their first JAX operation::

    import bayeshf
    bayeshf.runtime.configure()          # what the CLI does

It sets, where the user has not chosen otherwise:

- one JAX CPU device per core (``jax_num_cpu_devices``; ``BAYESHF_CPU_DEVICES=n``
  to choose, 1 to opt out): :mod:`bayeshf.sampling` splits the chains over the
  devices, so each core runs its share (JAX fixes the device count when its
  backend starts, so this only works before the first operation);
- synchronous CPU dispatch (``jax_cpu_enable_async_dispatch=False``;
  ``BAYESHF_CPU_ASYNC=1`` keeps JAX's default): a compiled call runs on the
  calling thread instead of being handed to a worker thread, which for a
  HistFactory evaluation of microseconds was most of the cost of a call
  (docs/architecture.md, "Runtime", has the measurement);
- JAX's persistent compilation cache (:func:`enable_compilation_cache`), so a
  second run of the same command skips compilation;
- one BLAS thread for NumPy's and SciPy's linear algebra (``BAYESHF_BLAS_THREADS=n``
  to choose, 0 to leave it; an ``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS`` the user set
  is kept): BLAS threads that busy-wait beside JAX's own thread pool fight it for the cores
  (docs/architecture.md, "Runtime", has the measurement).

``bayeshf.sample(..., compilation_cache=True)`` (the default) also turns the
cache on by itself; ``compilation_cache=False`` leaves it as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

# JAX is imported where it is used: the command line parses its arguments (and answers --help, --version
# and mistakes) before JAX's import, about a second

#: never create more CPU devices than this, whatever the core count
MAX_DEVICES = 16
#: the persistent compilation cache is cut back to this size (oldest entries first) when it is turned on
CACHE_MAX_BYTES = 1 << 30

_FALSE = ("0", "off", "no", "false")
#: subdirectory of the compilation cache holding stamps of validated workspaces (bayeshf.workspace.validate)
VALIDATED_SUBDIRECTORY = "bayeshf-validated"
#: subdirectory of the compilation cache holding whole compiled programs (bayeshf.stored)
PROGRAMS_SUBDIRECTORY = "bayeshf-programs"
_validation_cache: Path | None = None


class Settings(NamedTuple):
    """What :func:`configure` did: devices requested (0: left as it was), dispatch, cache directory or None,
    BLAS threads set (0: left as it was)."""

    cpu_devices: int
    synchronous_dispatch: bool | None
    compilation_cache: Path | None
    blas_threads: int = 0


def enable_float64() -> None:
    """float64 arrays by default (``import bayeshf`` calls this: pyhf parity needs it).

    If JAX is not imported yet, the setting is made right after its import (whoever imports it), so
    that ``import bayeshf`` alone does not cost JAX's import.
    """
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_enable_x64", True)
    elif not any(isinstance(finder, _Float64AtJaxImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Float64AtJaxImport())


class _Float64AtJaxImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``jax`` so that float64 is on once ``jax`` has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "jax":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("jax")
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                module.config.update("jax_enable_x64", True)

            spec.loader.exec_module = exec_module  # this spec's own loader: no other module is affected
        return spec


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def backend_started() -> bool:
    """Has JAX created its backends (after which devices and dispatch are fixed)?

    The one private JAX call of bayeshf (no public equivalent); tests/test_runtime.py checks it.
    """
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def configure(*, cpu_devices: int | None = None, synchronous_dispatch: bool | None = None,
              compilation_cache: bool | str | Path = True, blas_threads: int | None = None,
              stored_programs: bool = False) -> Settings:
    """Set JAX up as the ``bayeshf`` command line runs it (see the module docstring).

    cpu_devices: CPU devices to create (default ``$BAYESHF_CPU_DEVICES`` or one per core, at most
    MAX_DEVICES); left alone if the user set ``jax_num_cpu_devices`` or
    ``--xla_force_host_platform_device_count``. synchronous_dispatch: default True unless
    ``$BAYESHF_CPU_ASYNC=1``. Both are skipped once JAX's backend has started (nothing is changed
    then, and nothing fails). compilation_cache: True (the default location, see
    :func:`cache_directory`), a directory, or False. blas_threads: threads of the BLAS libraries
    (:func:`limit_blas_threads`; default ``$BAYESHF_BLAS_THREADS`` or 1, 0 leaves them alone).
    stored_programs: keep whole compiled programs in the cache directory's PROGRAMS_SUBDIRECTORY
    (:mod:`bayeshf.stored`; the command line does), so that a second run skips tracing them too.
    """
    blas = limit_blas_threads(blas_threads)
    import jax

    devices, synchronous = 0, None
    if not backend_started():
        synchronous = not _env_flag("BAYESHF_CPU_ASYNC") if synchronous_dispatch is None else bool(synchronous_dispatch)
        jax.config.update("jax_cpu_enable_async_dispatch", not synchronous)
        devices = _configure_devices(cpu_devices)
    cache = None
    if compilation_cache is not False:
        cache = enable_compilation_cache(None if compilation_cache is True else compilation_cache)
    if stored_programs and cache is not None:
        from bayeshf import stored

        if stored.enable(cache / PROGRAMS_SUBDIRECTORY) is not None:
            prune_cache(cache / PROGRAMS_SUBDIRECTORY, stored.STORE_MAX_BYTES)
    return Settings(devices, synchronous, cache, blas)


#: environment variables BLAS libraries read when they load (OpenBLAS, MKL)
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(threads: int | None = None) -> int:
    """Run NumPy's and SciPy's BLAS on ``threads`` threads (default ``$BAYESHF_BLAS_THREADS`` or 1).

    Libraries loaded already are limited through threadpoolctl, those loaded later through the
    environment variables they read. Returns the count set; 0 when left alone (``threads`` 0, or a
    BLAS variable the user set).
    """
    if threads is None:
        setting = os.environ.get("BAYESHF_BLAS_THREADS", "").strip()
        threads = int(setting) if setting.isdigit() else 1
    if threads <= 0 or any(os.environ.get(name, "").strip() for name in BLAS_VARIABLES):
        return 0
    for name in BLAS_VARIABLES:
        os.environ[name] = str(threads)
    if "numpy" in sys.modules or "scipy" in sys.modules:  # loaded already: the variables came too late
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads, user_api="blas")
    return threads


def _configure_devices(count: int | None) -> int:
    import jax

    if jax.config.jax_num_cpu_devices not in (-1, None):
        return 0
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return 0
    if count is None:
        setting = os.environ.get("BAYESHF_CPU_DEVICES", "").strip()
        count = int(setting) if setting.isdigit() else min(available_cores(), MAX_DEVICES)
    count = max(1, int(count))
    if count > 1:
        jax.config.update("jax_num_cpu_devices", count)
    return count


def cache_directory() -> Path | None:
    """Where the compilation cache lives: ``$BAYESHF_JAX_CACHE`` (``off`` for none), else
    ``$XDG_CACHE_HOME/bayeshf/jax``, else ``~/.cache/bayeshf/jax``."""
    setting = os.environ.get("BAYESHF_JAX_CACHE", "").strip()
    if setting.lower() in _FALSE:
        return None
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "bayeshf" / "jax"


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``path`` (default :func:`cache_directory`).

    Every compiled program is stored (no minimum compile time), the directory is cut back to
    CACHE_MAX_BYTES (:func:`prune_cache`), and a cache directory the user gave JAX already is
    kept. A directory that cannot be written is skipped with a warning. Returns the directory in
    use, or None.
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if path is None and current:
        return _keep_validation_stamps(Path(current))
    directory = Path(path).expanduser() if path is not None else cache_directory()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as error:
        warnings.warn(f"the compilation cache directory {directory} cannot be written "
                      f"({error.strerror or error}); running without a persistent cache.", RuntimeWarning,
                      stacklevel=2)
        return None
    prune_cache(directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return _keep_validation_stamps(directory)


def _keep_validation_stamps(directory: Path) -> Path:
    global _validation_cache
    stamps = directory / VALIDATED_SUBDIRECTORY
    try:
        stamps.mkdir(exist_ok=True)
        _validation_cache = stamps
    except OSError:
        _validation_cache = None
    return directory


def validation_cache() -> Path | None:
    """Where workspaces that passed validation are stamped (by content digest), so that a second run
    skips the schema checks; set when :func:`enable_compilation_cache` turns the persistent cache on,
    None otherwise (a library user's validation is never skipped unless they turned it on)."""
    return _validation_cache


def prune_cache(directory: str | Path, max_bytes: int = CACHE_MAX_BYTES) -> int:
    """Delete the oldest files of ``directory`` until it holds at most ``max_bytes``; returns how many went.

    Not JAX's own bound (``jax_compilation_cache_max_size``): its eviction fails on entries written
    without it (no access-time file), i.e. on every cache made before the bound was set.
    """
    entries = []
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    entries.append((stat.st_mtime, stat.st_size, entry.path))
    except OSError:
        return 0
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        removed += 1
    return removed


def chain_devices(chains: int) -> list:
    """The CPU devices to split ``chains`` over: as many as divide ``chains`` evenly (1 device = no split)."""
    import jax

    if jax.default_backend() != "cpu":  # pragma: no cover - an accelerator runs all chains
        return jax.local_devices()[:1]
    devices = jax.local_devices(backend="cpu")
    count = max(d for d in range(1, len(devices) + 1) if chains % d == 0)
    return devices[:count]
