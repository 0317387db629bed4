"""What intake remembers of a document type, and what it answers a redelivery: plain values, so that
what only reads them (the sidecar, the device opening its store) imports no claims model."""

from __future__ import annotations

from typing import NamedTuple


class HighWater(NamedTuple):
    """The last accepted document of a type: its ``seq`` and the digest of its signed bytes; ``stored``
    unless only the sidecar remembers it (the database that held it was lost)."""

    seq: int
    digest: bytes
    stored: bool = True


class Duplicate(NamedTuple):
    """A redelivery of the document of ``typ`` already in force (PROTOCOL.md: ignored quietly)."""

    typ: str
    seq: int
