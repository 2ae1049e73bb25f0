"""Progress bars on standard error (tqdm), silent when stderr is not a terminal unless forced."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, total: int | None = None) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar on stderr."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty())
