"""The outbox's rows and counters: the only SQL of the ``outbox`` and ``counters`` tables.

Every function takes the caller's transaction (or, for the salvage of a corrupt file, a plain
``sqlite3`` connection) and returns what it found or changed; deciding what to do with it is the
outbox's (``__init__.py``) and the policy's (``policy.py``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

from agent.outbox.policy import is_held
from agent.store.database import Store, Transaction
from protocol.timefmt import to_rfc3339_or_none

_INSERT: Final = """INSERT INTO outbox
    (topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_COLUMNS: Final = "id, topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body, sent_at"


class OutRow(NamedTuple):
    """A row ready to publish."""

    id: int
    topic: str  # events | replies
    seq: int | None
    held_since: float | None
    body: str


class Counts(NamedTuple):
    """What the outbox holds when it opens."""

    next_seq: int
    depth: int  # queued, not yet acknowledged
    sent: int  # acknowledged, kept for replay
    evicted: dict[str, int]


def _denied_clause(denied: Iterable[str], *, held: bool) -> tuple[str, list[str]]:
    """SQL selecting rows that are held (``held``) or not, under the gates ``denied`` (policy.is_held's terms)."""
    gates = sorted(denied)
    if not gates:
        return ("0" if held else "1"), []
    marks = ", ".join("?" * len(gates))
    return (f"gate IN ({marks})" if held else f"(gate IS NULL OR gate NOT IN ({marks}))"), gates


async def counts(tx: Transaction) -> Counts:
    """The counters and how many rows are queued and kept."""
    counters = dict(await tx.fetchall("SELECT name, value FROM counters"))
    depth = int((await tx.fetchone("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"))[0])
    sent = int((await tx.fetchone("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL"))[0])
    evicted = {name[8:]: int(v) for name, v in counters.items() if name.startswith("evicted:")}
    return Counts(int(counters.get("next_seq", 1)), depth, sent, evicted)


async def insert_events(tx: Transaction, rows: Sequence[tuple[Any, ...]], next_seq: int) -> None:
    """Insert event rows (in ``_INSERT``'s column order) and move the seq counter on to ``next_seq``."""
    await tx.executemany(_INSERT, rows)
    await tx.execute(
        "INSERT INTO counters (name, value) VALUES ('next_seq', ?) ON CONFLICT (name) DO UPDATE SET value = ?",
        (next_seq, next_seq),
    )


async def insert_reply(tx: Transaction, kind: str, priority: int, created: float, body: str) -> None:
    """Insert a command reply (no seq, no event id, no gate)."""
    await tx.execute(_INSERT, ("replies", None, None, "reply", kind, None, priority, None, None, created, body))


async def candidates(tx: Transaction, count: int) -> list[tuple[int, int, str]]:
    """``(id, priority, type)`` of up to ``count`` queued rows, lowest priority then oldest first."""
    rows = await tx.fetchall(
        "SELECT id, priority, type FROM outbox WHERE sent_at IS NULL ORDER BY priority, id LIMIT ?", (count,)
    )
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


async def lowest(tx: Transaction, count: int, up_to_priority: int) -> list[tuple[int, str]]:
    """``(id, type)`` of up to ``count`` queued rows of the lowest classes not above ``up_to_priority``."""
    rows = await tx.fetchall(
        "SELECT id, type FROM outbox WHERE sent_at IS NULL AND priority <= ? ORDER BY priority, id LIMIT ?",
        (up_to_priority, count),
    )
    return [(int(r[0]), str(r[1])) for r in rows]


async def evict(tx: Transaction, victims: Sequence[tuple[int, str]]) -> dict[str, int]:
    """Delete ``victims`` and count them per type in the counters; the counts."""
    await tx.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id, _ in victims])
    per_type: dict[str, int] = {}
    for _, typ in victims:
        per_type[typ] = per_type.get(typ, 0) + 1
    for typ, n in per_type.items():
        await tx.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
            (f"evicted:{typ}", n, n),
        )
    return per_type


async def mark_sent(tx: Transaction, id_runs: Sequence[tuple[int, int]], now: float) -> int:
    """Mark the queued rows in ``id_runs`` sent; how many were still queued (an evicted one is not)."""
    return await tx.executemany(
        "UPDATE outbox SET sent_at = ? WHERE id BETWEEN ? AND ? AND sent_at IS NULL",
        [(now, first, last) for first, last in id_runs],
    )


async def prune(tx: Transaction, count: int) -> int:
    """Delete the ``count`` oldest sent rows; how many went."""
    return await tx.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NOT NULL ORDER BY id LIMIT ?)",
        (count,),
    )


async def forget_sent(tx: Transaction) -> int:
    """Delete every sent row kept for replay; how many."""
    return await tx.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL")


async def stamp_held(tx: Transaction, gate: str, now: float) -> None:
    """Rows behind ``gate``, just closed, are held from ``now`` (unless already)."""
    await tx.execute(
        "UPDATE outbox SET held_since = ? WHERE gate = ? AND held_since IS NULL AND sent_at IS NULL", (now, gate)
    )


async def sendable(tx: Transaction, after_id: int, denied: Iterable[str], limit: int) -> list[OutRow]:
    """Queued rows after ``after_id`` that are not held, in queue order."""
    clause, gates = _denied_clause(denied, held=False)
    rows = await tx.fetchall(
        "SELECT id, topic, seq, held_since, body FROM outbox "  # noqa: S608 -- placeholders only
        f"WHERE sent_at IS NULL AND id > ? AND {clause} ORDER BY id LIMIT ?",
        (after_id, *gates, limit),
    )
    return [OutRow(*row) for row in rows]


async def count_held(tx: Transaction, denied: Iterable[str]) -> int:
    """How many queued rows are held."""
    clause, gates = _denied_clause(denied, held=True)
    row = await tx.fetchone(f"SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND {clause}", gates)  # noqa: S608
    return int(row[0])


async def replay(tx: Transaction, from_seq: int, to_seq: int, room: int) -> tuple[int, int, int | None]:
    """Queue again up to ``room`` sent events of seq in ``[from_seq, to_seq]``, oldest first:
    (how many, how many of the range are left sent, the lowest seq still kept)."""
    replayed = await tx.execute(
        "UPDATE outbox SET sent_at = NULL WHERE id IN (SELECT id FROM outbox WHERE seq BETWEEN ? AND ? "
        "AND sent_at IS NOT NULL ORDER BY id LIMIT ?)",
        (from_seq, to_seq, room),
    )
    left = await tx.fetchone(
        "SELECT COUNT(*) FROM outbox WHERE seq BETWEEN ? AND ? AND sent_at IS NOT NULL", (from_seq, to_seq)
    )
    lowest_kept = await tx.fetchone("SELECT MIN(seq) FROM outbox WHERE seq IS NOT NULL")
    return replayed, int(left[0]) if left else 0, lowest_kept[0] if lowest_kept else None


async def replies_queued(tx: Transaction) -> bool:
    """Whether a command reply waits to be sent."""
    return await tx.fetchone("SELECT 1 FROM outbox WHERE topic = 'replies' LIMIT 1") is not None


async def queued(store: Store, denied: frozenset[str], *, held_only: bool) -> list[dict[str, Any]]:
    """What the outbox in ``store`` holds, oldest first (``edge-agent events``, beside a running daemon)."""
    async with store.transaction("DEFERRED") as tx:
        rows = await tx.fetchall(
            "SELECT id, topic, seq, type, kind, source, gate, held_since, created, body FROM outbox "
            "WHERE sent_at IS NULL ORDER BY id"
        )
    out = []
    for row_id, topic, seq, typ, kind, source, gate, held_since, created, body in rows:
        held = is_held(gate, denied)
        if held_only and not held:
            continue
        entry: dict[str, Any] = {
            "id": row_id,
            "topic": topic,
            "seq": seq,
            "type": typ,
            "kind": kind,
            "source": source,
            "held": held,
            "held_since": to_rfc3339_or_none(held_since),
            "queued_at": to_rfc3339_or_none(created),
        }
        if topic == "events":
            entry["event_id"] = json.loads(body)["event_id"]
        out.append(entry)
    return out


def salvage(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
    """The rows and the next seq a corrupt database still gives up (agent/store/quarantine.py), best effort."""
    rows: list[tuple[Any, ...]] = []
    next_seq = 1
    with contextlib.suppress(sqlite3.Error):
        rows.extend(tuple(row) for row in db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id"))  # noqa: S608
    with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
        found = db.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
        if found is not None:
            next_seq = int(found[0])
    seqs = [r[2] for r in rows if isinstance(r[2], int)]
    return rows, max([next_seq, *(s + 1 for s in seqs)])


async def restore(tx: Transaction, rows: list[tuple[Any, ...]], next_seq: int) -> None:
    """Put salvaged rows into a fresh database, the counter going on from ``next_seq``."""
    marks = ", ".join("?" * len(_COLUMNS.split(", ")))
    await tx.executemany(f"INSERT INTO outbox ({_COLUMNS}) VALUES ({marks})", rows)  # noqa: S608 -- constants
    await tx.execute("INSERT INTO counters (name, value) VALUES ('next_seq', ?)", (next_seq,))
