"""Grids on a Dask cluster (dask.distributed): one task per batch of points.

The background-only workspace is sent once, as a task the batches depend on (recomputed, not lost, if its worker dies);
a task carries only its points' patches and the settings. Each worker process
keeps JAX's compiled programs between tasks, so the fit program of a model
structure compiles once per worker, not per point or per task. A worker that
dies mid-task loses nothing: the scheduler runs its tasks again on another
worker (distributed's ``allowed-failures``), and results are collected by
batch, so the output is the same as in-process.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

from bayeshf.errors import BayeshfError

__all__ = ["run_batches", "evaluate_batch"]


def evaluate_batch(evaluate: Callable[..., list[dict]], spec: Mapping[str, Any], points: Sequence[Any],
                   settings: Mapping[str, Any]) -> list[dict]:
    """The task a worker runs: ``evaluate`` (bayeshf.grid.evaluate_points, pickled by reference).

    ``settings["_kill_marker"]`` is for tests only.
    """
    marker = settings.get("_kill_marker")
    if marker and not os.path.exists(marker):
        # test hook: the first task to get here kills its worker process (then Dask must rerun it elsewhere)
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
        os._exit(1)
    return evaluate(spec, points, settings)


def _client(scheduler: Any):
    """(client, close-when-done) for an address or an existing ``distributed.Client``."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency of the grid extra
        raise BayeshfError("--scheduler needs dask.distributed: pip install 'dask[distributed]'.") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        return Client(str(scheduler), timeout="20s"), True
    except (OSError, TimeoutError) as error:
        raise BayeshfError(f"cannot reach the Dask scheduler at {scheduler} ({error}).") from None


def _workspace(spec: dict) -> dict:
    """The workspace as a task result the batches depend on (sent to the scheduler once)."""
    return spec


def run_batches(scheduler: Any, evaluate: Callable[..., list[dict]], spec: Mapping[str, Any],
                batches: Sequence[Sequence[Any]], settings: Mapping[str, Any]) -> Iterator[list[dict]]:
    """Answers of each batch as it completes (any order; bayeshf.grid sorts them)."""
    from distributed import as_completed

    client, close = _client(scheduler)
    try:
        # a task, not scattered data: if the worker holding it dies, the scheduler recomputes it instead of
        # cancelling every batch that depends on it ("already forgotten")
        spec_future = client.submit(_workspace, dict(spec), pure=False)
        futures = [client.submit(evaluate_batch, evaluate, spec_future, list(batch), dict(settings), pure=False)
                   for batch in batches]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
    finally:
        if close:
            client.close()
