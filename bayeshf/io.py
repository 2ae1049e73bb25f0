"""Atomic file output (readers see the old file or the whole new one, never half) and strict JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: files being written now, and signals the CLI put off until they are complete (bayeshf.cli)
_SAVING = [0]
_DEFERRED: list[BaseException] = []


def saving() -> bool:
    """True while an :func:`atomic_path` block runs (a signal then waits for the file)."""
    return _SAVING[0] > 0


def defer(exception: BaseException) -> None:
    """Raise ``exception`` once the file being written is complete (or at once if none is)."""
    _DEFERRED.append(exception)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    The file ends with the permissions of an ordinary new file (0666 minus the
    user's umask), not mkstemp's 0600.

    >>> with atomic_path("out/result.nc") as tmp:   # doctest: +SKIP
    ...     idata.to_netcdf(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _SAVING[0] += 1
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        _SAVING[0] -= 1
        if tmp_path.exists():  # an error or a signal: no half-written temporary left behind
            tmp_path.unlink()
    if not _SAVING[0] and _DEFERRED:
        raise _DEFERRED.pop(0)


def to_strict(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None and NumPy scalars/arrays as Python numbers/lists.

    Strict JSON (RFC 8259) has no NaN or Infinity; pyhf's readers and ``jq`` reject them.
    """
    if isinstance(obj, dict):
        return {str(k): to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`to_strict`); raises on anything else not serialisable."""
    return json.dumps(to_strict(obj), indent=indent, allow_nan=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON to ``path`` atomically."""
    write_text(path, dumps_json(obj) + "\n")
