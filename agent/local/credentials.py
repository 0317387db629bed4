"""The credentials this device holds, indexed for the access reader; the only SQL of ``credentials``.

Issued and revoked by the cloud's commands (``agent/intake/commands.py`` calls :func:`issue` and
:func:`revoke` in the command's transaction); the daemon loads them into a :class:`CredentialIndex`
at start and after each change. A presented
credential is found by (door, kind, SHA-256 of the value read) in one dict lookup, so 10,000
credentials cost nothing at the door (bench/bench_access.py). Values are never kept in clear.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from agent.store.database import Transaction
from protocol.timefmt import epoch_of


def value_digest(value: str) -> str:
    """How a credential's value is kept and looked up (never in clear)."""
    return hashlib.sha256(value.encode()).hexdigest()


async def issue(tx: Transaction, door: str, credentials: Iterable[tuple[str, str, str]], now: float) -> None:
    """Hold ``(id, kind, stored body)`` credentials for ``door`` (a credential issued again replaces itself)."""
    await tx.executemany(
        """INSERT INTO credentials (door, id, kind, body, issued_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (door, id) DO UPDATE SET kind = excluded.kind, body = excluded.body,
             issued_at = excluded.issued_at""",
        [(door, ident, kind, body, now) for ident, kind, body in credentials],
    )


async def revoke(tx: Transaction, ids: Iterable[str], door: str | None) -> None:
    """Stop holding ``ids``, on ``door`` or (None) on every door."""
    if door is None:
        await tx.executemany("DELETE FROM credentials WHERE id = ?", [(i,) for i in ids])
    else:
        await tx.executemany("DELETE FROM credentials WHERE door = ? AND id = ?", [(door, i) for i in ids])


async def clear(tx: Transaction) -> int:
    """Hold none (a reset after upgrade); how many there were."""
    return await tx.execute("DELETE FROM credentials")


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
