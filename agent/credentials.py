"""The credentials this device holds, indexed for the access reader.

Issued and revoked by the cloud's commands (``agent/commands.py`` writes the ``credentials`` table);
the daemon loads them into a :class:`CredentialIndex` at start and after each change. A presented
credential is found by (door, kind, SHA-256 of the value read) in one dict lookup, so 10,000
credentials cost nothing at the door (bench/bench_access.py). Values are never kept in clear.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import NamedTuple

from agent.commands import value_digest
from agent.store import Transaction
from protocol.timefmt import epoch_of


class Held(NamedTuple):
    """A credential held for one door."""

    id: str
    kind: str
    valid_from: float | None
    valid_until: float | None
    dynamic: bool
    floors: tuple[str, ...]


def _epoch(text: object) -> float | None:
    return epoch_of(datetime.fromisoformat(text)) if isinstance(text, str) else None


class CredentialIndex:
    """(door, kind, value digest) -> :class:`Held`."""

    def __init__(self, entries: dict[tuple[str, str, str], Held] | None = None) -> None:
        self._entries = entries or {}

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    async def load(cls, tx: Transaction) -> CredentialIndex:
        entries: dict[tuple[str, str, str], Held] = {}
        for door, ident, kind, body in await tx.fetchall("SELECT door, id, kind, body FROM credentials"):
            fields = json.loads(body)
            digest = fields.get("value_sha256") or value_digest(fields.get("value") or ident)
            entries[(door, kind, digest)] = Held(
                ident,
                kind,
                _epoch(fields.get("valid_from")),
                _epoch(fields.get("valid_until")),
                bool(fields.get("dynamic", False)),
                tuple(fields.get("floors", ())),
            )
        return cls(entries)

    def find(self, door: str, kind: str, value: str) -> Held | None:
        """The credential of ``kind`` for ``door`` whose value is ``value``, if held."""
        return self._entries.get((door, kind, value_digest(value)))
