"""Compact ``repr`` and notebook HTML for result containers.

``@display()`` above ``@dataclasses.dataclass`` (a dataclass writes its own
``__repr__``, so this decorator must run after it) gives a one-line repr in
which arrays show their shape, long name lists their length, and floats six
significant digits, and a ``_repr_html_``: a table of the fields plus, when the
result has ``par_names``, a collapsible per-parameter table of every array
with one value per parameter (all rows, nothing cut).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

#: arrays up to this many elements are printed in full in the one-line repr
_SHORT = 5


def _short(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, np.ndarray):
        if value.size <= _SHORT and value.ndim <= 1:
            return "[" + ", ".join(_short(v) for v in value.tolist()) + "]"
        return f"array{value.shape}"
    if isinstance(value, (list, tuple)):
        if len(value) <= _SHORT and all(not isinstance(v, (list, tuple, np.ndarray, dict)) for v in value):
            inner = ", ".join(repr(v) if isinstance(v, str) else _short(v) for v in value)
            return f"[{inner}]" if isinstance(value, list) else f"({inner})"
        return f"<{len(value)} items>"
    if isinstance(value, dict):
        return f"<dict of {len(value)}>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__name__}(...)"
    if value is None or isinstance(value, str):
        return repr(value)
    return f"<{type(value).__name__}>"


def _items(obj: Any, extra: Sequence[str]) -> list[tuple[str, Any]]:
    items = [(name, getattr(obj, name)) for name in extra]
    items += [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr]
    return items


def _per_parameter_table(obj: Any) -> str:
    names = getattr(obj, "par_names", None)
    if names is None or isinstance(names, str):
        return ""
    names = list(names)
    columns = [(f.name, np.asarray(getattr(obj, f.name))) for f in dataclasses.fields(obj)
               if isinstance(getattr(obj, f.name), np.ndarray) and getattr(obj, f.name).shape == (len(names),)]
    if not columns:
        return ""
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(str(n))}</td>"
        + "".join(f"<td>{html.escape(_short(values[i]))}</td>" for _, values in columns) + "</tr>"
        for i, n in enumerate(names)
    )
    return (f"<details><summary>{len(names)} parameters</summary><div style='max-height:24em;overflow:auto'>"
            f"<table><tr><th>parameter</th>{head}</tr>{rows}</table></div></details>")


def display(extra: Sequence[str] = ()) -> Callable[[type[T]], type[T]]:
    """Class decorator: compact ``__repr__`` and ``_repr_html_``; ``extra`` names properties shown first."""

    def decorate(cls: type[T]) -> type[T]:
        def __repr__(self) -> str:
            return f"{type(self).__name__}(" + ", ".join(f"{k}={_short(v)}" for k, v in _items(self, extra)) + ")"

        def _repr_html_(self) -> str:
            rows = "".join(f"<tr><td style='text-align:left'>{html.escape(k)}</td>"
                           f"<td style='text-align:left'>{html.escape(_short(v))}</td></tr>"
                           for k, v in _items(self, extra))
            return (f"<div><strong>{html.escape(type(self).__name__)}</strong><table>{rows}</table>"
                    f"{_per_parameter_table(self)}</div>")

        cls.__repr__ = __repr__  # type: ignore[method-assign]
        cls._repr_html_ = _repr_html_  # type: ignore[attr-defined]
        return cls

    return decorate
