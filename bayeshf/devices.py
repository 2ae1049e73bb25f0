"""Use every CPU core for chains: one JAX CPU device per core.

XLA runs one program on one device on (mostly) one thread when the arrays are
as small as a HistFactory model's, so chains vmapped on a single device use a
single core. With one CPU device per core, :mod:`bayeshf.sampling` splits the
chains over the devices (``shard_map``): each core runs its share of the
chains with no communication, as NextStat and Stan run one chain per thread.

JAX fixes the number of CPU devices when its backend starts, so this must
happen before the first array is made: ``import bayeshf`` calls
:func:`configure` and does nothing if the backend is already running or the
user chose a number (``jax.config.update("jax_num_cpu_devices", n)``,
``XLA_FLAGS=--xla_force_host_platform_device_count=n``). Set
``BAYESHF_CPU_DEVICES=n`` to choose (1 turns the splitting off).

The same call switches JAX's CPU client to synchronous dispatch: a compiled
call then runs on the calling thread instead of being handed to a worker
thread and waited for. A HistFactory evaluation takes microseconds, so the
hand-off was most of a call's cost (sbottom RegionA value + gradient: 54 us
-> 20 us per call; ATLAS ttbar 102 -> 48 us), which is what an optimiser
loop, a scan or the Julia callback pays per evaluation. Chains split over
devices still run in parallel, and sampling and fits take the same time
either way (measured; docs/architecture.md). ``BAYESHF_CPU_ASYNC=1`` keeps
JAX's asynchronous default.
"""

from __future__ import annotations

import os

import jax

#: never create more CPU devices than this, whatever the core count
MAX_DEVICES = 16


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure(count: int | None = None) -> int:
    """Ask JAX for ``count`` CPU devices (default: $BAYESHF_CPU_DEVICES or one per core, at most 16)
    and for synchronous CPU dispatch (unless $BAYESHF_CPU_ASYNC=1).

    Returns the number requested, or 0 when nothing was changed (backend
    already initialised, or the user configured the devices already).
    """
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return 0
    if os.environ.get("BAYESHF_CPU_ASYNC", "").strip() not in ("1", "true", "yes"):
        jax.config.update("jax_cpu_enable_async_dispatch", False)
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


def chain_devices(chains: int) -> list:
    """The CPU devices to split ``chains`` over: as many as divide ``chains`` evenly (1 device = no split)."""
    if jax.default_backend() != "cpu":  # pragma: no cover - an accelerator runs all chains
        return jax.local_devices()[:1]
    devices = jax.local_devices(backend="cpu")
    count = max(d for d in range(1, len(devices) + 1) if chains % d == 0)
    return devices[:count]
