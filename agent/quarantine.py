"""A corrupt database is moved aside, what can still be read is salvaged, and a fresh one is made.

Only the daemon does this, at start (``edge-agent run``); the other commands report the corruption
and leave the file alone. What is salvaged, best effort: the outbox rows (with their seq and
event_id, so nothing already queued is lost or renumbered), the event counter and the clock anchor.
The signed documents are not salvaged: the retained ones come again from the broker, and a document
that fails to parse back is exactly what a corrupt file cannot be trusted with. The sidecar file
(``agent/sidecar.py``) keeps seq and trusted time from going back when nothing can be read, and keeps
the high-water mark of every document type and the rotated roots, so that the fresh database refuses
a superseded document as a rollback and trusts only the roots the fleet rotated to.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any, NamedTuple

from agent.clock import Anchor
from agent.store import DB_NAME

_OUTBOX_COLUMNS = "id, topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body, sent_at"


class Salvage(NamedTuple):
    """What could be read from a corrupt database, and where it was moved."""

    moved_to: Path
    outbox: list[tuple[Any, ...]]
    next_seq: int
    anchor: Anchor | None


_CLOCK_COLUMNS = (
    "trusted_at, boot_id, at_monotonic, signed_at, generation",  # schema 4 and later
    "trusted_at, boot_id, at_monotonic",
)


def _anchor(db: sqlite3.Connection) -> Anchor | None:
    for columns in _CLOCK_COLUMNS:
        try:
            found = db.execute(f"SELECT {columns} FROM clock").fetchone()  # noqa: S608 -- constants
        except sqlite3.Error:
            continue
        try:
            return None if found is None else Anchor(float(found[0]), found[1], float(found[2]), *found[3:])
        except (TypeError, ValueError):
            return None
    return None


def _read(path: Path) -> tuple[list[tuple[Any, ...]], int, Anchor | None]:
    rows: list[tuple[Any, ...]] = []
    next_seq, anchor = 1, None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows, next_seq, anchor
    try:
        with contextlib.suppress(sqlite3.Error):
            for row in db.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY id"):  # noqa: S608 -- constant
                rows.append(tuple(row))
        with contextlib.suppress(sqlite3.Error, TypeError):
            found = db.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
            if found is not None:
                next_seq = int(found[0])
        anchor = _anchor(db)
    finally:
        db.close()
    seqs = [r[2] for r in rows if isinstance(r[2], int)]
    return rows, max([next_seq, *(s + 1 for s in seqs)]), anchor


def salvage_and_move(data_dir: Path) -> Salvage:
    """Read what can be read from ``data_dir``'s database, then move its files aside (blocking)."""
    path = data_dir / DB_NAME
    rows, next_seq, anchor = _read(path)
    moved_to = data_dir / f"{DB_NAME}.corrupt-{int(time.time())}"
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(moved_to.with_name(moved_to.name + suffix))
    return Salvage(moved_to, rows, next_seq, anchor)
