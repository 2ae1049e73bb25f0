"""HEPData patchsets: read (plain or gzip JSON), validate with pyhf's schema, list, verify the digest.

A patchset holds one JSON patch per signal point of a search, with the point's
coordinates (``values``, named by the patchset's ``labels``) and the digest
of the background-only workspace it was made for. Every failure is one
:class:`~bayeshf.errors.BayeshfError` sentence naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from bayeshf.errors import BayeshfError

__all__ = ["Patchset", "PatchPoint", "read_patchset"]


@dataclasses.dataclass(frozen=True)
class PatchPoint:
    """One patch: its name, coordinates and JSON-patch operations."""

    name: str
    values: tuple[float, ...]
    operations: list


@dataclasses.dataclass(frozen=True)
class Patchset:
    """A validated patchset (``label``: the file it came from)."""

    label: str
    labels: tuple[str, ...]
    description: str
    digests: dict[str, str]
    points: tuple[PatchPoint, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.points]

    def select(self, names: Sequence[str] | None) -> list[PatchPoint]:
        """The named points in the order given (all points when ``names`` is empty)."""
        if not names:
            return list(self.points)
        by_name = {p.name: p for p in self.points}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise BayeshfError(f"{self.label}: no patch named {', '.join(repr(n) for n in unknown[:5])} "
                               f"(it has {len(self.points)} patches; `bayeshf patchset list {self.label}` names them).")
        return [by_name[n] for n in names]

    def verify(self, spec: Mapping[str, Any], workspace_label: str) -> None:
        """Check the patchset was made for ``spec`` (its digests against the workspace's)."""
        import pyhf

        for algorithm, digest in self.digests.items():
            try:
                actual = pyhf.utils.digest(spec, algorithm=algorithm)
            except ValueError:
                continue  # an algorithm hashlib does not know cannot be checked
            if actual != digest:
                raise BayeshfError(
                    f"{self.label}: was made for another workspace than {workspace_label} (its {algorithm} digest "
                    f"{digest[:12]}... differs from the workspace's {actual[:12]}...)."
                )

    def to_dict(self) -> dict[str, Any]:
        """What ``bayeshf patchset list --json`` prints."""
        return {"file": self.label, "description": self.description, "labels": list(self.labels),
                "digests": dict(self.digests),
                "patches": [{"name": p.name, "values": list(p.values)} for p in self.points]}


def read_patchset(source: str | Path | Mapping[str, Any]) -> Patchset:
    """Read and validate a patchset (a path to ``.json`` or ``.json.gz``, or an in-memory document)."""
    if isinstance(source, Mapping):
        doc, label = dict(source), "<patchset in memory>"
    else:
        label = str(source)
        path = Path(source)
        if not path.exists():
            raise BayeshfError(f"{label}: no such patchset file.")
        if path.is_dir():
            raise BayeshfError(f"{label}: is a directory, not a patchset JSON file.")
        try:
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            doc = json.loads(raw.decode("utf-8"))
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise BayeshfError(f"{label}: cannot read the patchset file ({error}).") from None
        except UnicodeDecodeError:
            raise BayeshfError(f"{label}: not a JSON text file (not UTF-8).") from None
        except json.JSONDecodeError as error:
            raise BayeshfError(f"{label}: malformed JSON at line {error.lineno}, column {error.colno} ({error.msg}).") from None
    if not isinstance(doc, Mapping) or "patches" not in doc:
        raise BayeshfError(f"{label}: not a HEPData patchset (no \"patches\" list; a single patch goes to --patch).")
    import pyhf

    try:
        parsed = pyhf.PatchSet(doc)
    except Exception as error:  # pyhf raises schema and patchset errors of several types
        message = str(error).splitlines()[0][:200]
        raise BayeshfError(f"{label}: not a valid HEPData patchset ({message}).") from None
    points = tuple(PatchPoint(p.name, tuple(float(v) for v in p.values), list(p.patch)) for p in parsed.patches)
    return Patchset(label=label, labels=tuple(parsed.labels), description=str(parsed.description),
                    digests=dict(parsed.digests), points=points)
