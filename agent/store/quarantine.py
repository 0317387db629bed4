"""A corrupt database is moved aside, what can still be read is salvaged, and a fresh one is made.

Only the daemon does this, at start (``edge-agent run``); the other commands report the corruption
and leave the file alone. What is salvaged, best effort: the outbox rows (with their seq and
event_id, so nothing already queued is lost or renumbered), the event counter and the clock anchor.
The signed documents are not salvaged: the retained ones come again from the broker, and a document
that fails to parse back is exactly what a corrupt file cannot be trusted with. The sidecar file
(``agent/store/sidecar.py``) keeps seq and trusted time from going back when nothing can be read, and keeps
the high-water mark of every document type and the rotated roots, so that the fresh database refuses
a superseded document as a rollback and trusts only the roots the fleet rotated to.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, NamedTuple

from agent import outbox
from agent.clock import Anchor, newest_anchor
from agent.core_config import CoreConfig
from agent.store import sidecar
from agent.store.database import DB_NAME, Store, salvage_anchor


class Salvage(NamedTuple):
    """What could be read from a corrupt database, and where it was moved."""

    moved_to: Path
    outbox: list[tuple[Any, ...]]
    next_seq: int
    anchor: Anchor | None


def _read(path: Path) -> tuple[list[tuple[Any, ...]], int, Anchor | None]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return [], 1, None
    try:
        rows, next_seq = outbox.salvage(db)  # each table's owner reads its own rows
        return rows, next_seq, salvage_anchor(db)
    finally:
        db.close()


async def restore(config: CoreConfig, salvage: Salvage) -> None:
    """Put what was salvaged into the fresh database; the counter continues past everything used."""
    floor = sidecar.load(config.data_dir)
    next_seq = max(salvage.next_seq, floor.next_seq)
    anchor = newest_anchor(salvage.anchor, floor.anchor)
    store = await Store.open(config.data_dir, max_bytes=config.store.max_bytes)
    try:
        async with store.transaction() as tx:
            await outbox.restore_in(tx, salvage.outbox, next_seq)
            if anchor is not None:
                await tx.write_anchor(anchor)
    finally:
        await store.close()


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
