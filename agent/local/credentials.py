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
import struct
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from agent.store.database import Transaction
from protocol.timefmt import epoch_of


def value_digest(value: str) -> str:
    """How a credential's value is kept and looked up (never in clear)."""
    return hashlib.sha256(value.encode()).hexdigest()


async def issue(tx: Transaction, door: str, credentials: Iterable[tuple[str, str, str]], now: float) -> None:
    """Hold ``(id, kind, stored body)`` credentials for ``door`` (a credential issued again replaces itself),
    with the reader's packed index entry beside each (:func:`packed`)."""
    await tx.executemany(
        """INSERT INTO credentials (door, id, kind, body, issued_at, lookup, held) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (door, id) DO UPDATE SET kind = excluded.kind, body = excluded.body,
             issued_at = excluded.issued_at, lookup = excluded.lookup, held = excluded.held""",
        [(door, ident, kind, body, now, *packed(door, ident, kind, body)) for ident, kind, body in credentials],
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


# The index keeps, per credential, two small bytes objects in one dict (~150 bytes in all, where a tuple key
# and a Held of strings and floats took ~490, ~890 resident: docs/performance.md). The key is a 120-bit hash
# of (door, kind, value digest): 15 bytes make a 48-byte object, in pymalloc's 16-byte size classes. The
# value is a flags byte, then only what is there: the validity window's ends, the id and the floors.
_KEY_BYTES = 15
_FROM, _UNTIL, _DYNAMIC = 1, 2, 4
_END = struct.Struct("<d")
_SEPARATOR = "\x1f"  # the unit separator: not in an id (protocol.claims.ID_PATTERN)
LOAD_CHUNK = 2_000  # rows read per query at load: what is read at once stays small


def lookup_key(door: str, kind: str, digest: str) -> bytes:
    return hashlib.blake2b(f"{door}\0{kind}\0{digest}".encode(), digest_size=_KEY_BYTES).digest()


def pack(held: Held) -> bytes:
    flags = (
        (_FROM if held.valid_from is not None else 0)
        | (_UNTIL if held.valid_until is not None else 0)
        | (_DYNAMIC if held.dynamic else 0)
    )
    ends = b"".join(_END.pack(end) for end in (held.valid_from, held.valid_until) if end is not None)
    return bytes((flags,)) + ends + _SEPARATOR.join((held.id, *held.floors)).encode()


def unpack(kind: str, blob: bytes) -> Held:
    flags, at = blob[0], 1
    ends: list[float | None] = []
    for flag in (_FROM, _UNTIL):
        if flags & flag:
            ends.append(_END.unpack_from(blob, at)[0])
            at += _END.size
        else:
            ends.append(None)
    ident, *floors = blob[at:].decode().split(_SEPARATOR)
    return Held(ident, kind, ends[0], ends[1], bool(flags & _DYNAMIC), tuple(floors))


def packed(door: str, ident: str, kind: str, body: str) -> tuple[bytes, bytes]:
    """The index entry of a stored credential: (lookup key, packed :class:`Held`)."""
    fields = json.loads(body)
    digest = fields.get("value_sha256") or value_digest(fields.get("value") or ident)
    held = Held(
        ident,
        kind,
        _epoch(fields.get("valid_from")),
        _epoch(fields.get("valid_until")),
        bool(fields.get("dynamic", False)),
        tuple(fields.get("floors", ())),
    )
    return lookup_key(door, kind, digest), pack(held)


class CredentialIndex:
    """(door, kind, value digest) -> :class:`Held`, packed (:func:`pack`)."""

    __slots__ = ("_entries", "repaired")

    def __init__(
        self, entries: dict[bytes, bytes] | None = None, repaired: list[tuple[bytes, bytes, int]] | None = None
    ) -> None:
        self._entries = entries or {}
        self.repaired = repaired or []  # (lookup, held, rowid) packed by load(), for save_repaired()

    @classmethod
    def of(cls, held: Mapping[tuple[str, str, str], Held]) -> CredentialIndex:
        """From (door, kind, value digest) -> :class:`Held` (tests, and what :meth:`load` repairs)."""
        return cls({lookup_key(*key): pack(h) for key, h in held.items()})

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    async def load(cls, tx: Transaction) -> CredentialIndex:
        """Every credential held: the packed entries as stored, read in chunks (what is read stays small); a
        row without one (written by an agent from before them, or changed by one since: a trigger clears
        them) is packed from its body here, and listed in :attr:`repaired` for :func:`save_repaired` (so
        the next start reads it packed: 100,000 unpacked rows cost ~3 s at every start)."""
        entries: dict[bytes, bytes] = {}
        after = 0
        while True:
            rows = await tx.fetchall(
                "SELECT rowid, lookup, held FROM credentials WHERE rowid > ? AND held IS NOT NULL"
                " AND lookup IS NOT NULL ORDER BY rowid LIMIT ?",
                (after, LOAD_CHUNK),
            )
            for _, lookup, held in rows:
                entries[lookup] = held
            if len(rows) < LOAD_CHUNK:
                break
            after = rows[-1][0]
        repaired = []
        for rowid, door, ident, kind, body in await tx.fetchall(
            "SELECT rowid, door, id, kind, body FROM credentials WHERE lookup IS NULL OR held IS NULL"
        ):
            lookup, held = packed(door, ident, kind, body)
            entries[lookup] = held
            repaired.append((lookup, held, rowid))
        return cls(entries, repaired)

    def find(self, door: str, kind: str, value: str) -> Held | None:
        """The credential of ``kind`` for ``door`` whose value is ``value``, if held."""
        blob = self._entries.get(lookup_key(door, kind, value_digest(value)))
        return None if blob is None else unpack(kind, blob)


async def save_repaired(tx: Transaction, index: CredentialIndex) -> int:
    """Store the entries :meth:`CredentialIndex.load` packed from bodies beside their rows; how many."""
    done = await tx.executemany("UPDATE credentials SET lookup = ?, held = ? WHERE rowid = ?", index.repaired)
    index.repaired = []
    return done
