"""After a firmware rollback: the database as it was before the newer firmware's migrations, and what
happened since carried over (docs/firmware.md "A database that survives a rollback").

The newer agent copied the database to ``agent.db.schema-<n>`` before migrating it past what an agent
of schema ``n`` can use (``agent/store/database.py``). An agent of schema ``n`` that finds a database it
may not use (:class:`~agent.errors.StoreTooNew`) and that copy:

1. reads from the newer database, with its own columns, what must not be lost: the outbox (every
   event and reply queued, with its seq and event_id: events raised by the newer firmware are sent,
   held alarms stay held) and the firmware jobs (what the upgrade did, so its end is reported once);
2. moves the newer database aside (``agent.db.newer-<time>``), puts the copy in its place, and writes
   those rows into it: outbox rows the copy lacks are added, the counter goes on past every seq used,
   the firmware jobs replace the copy's.

Everything else is as it was before the upgrade: documents come again (retained) and the sidecar's
high-water marks keep them from going back; credentials and settings issued by the cloud while the
newer firmware ran are re-sent by the cloud's resync. Without a copy the agent stops as before (exit
2): a database it cannot read is never guessed at.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any, NamedTuple

from agent.store.database import DB_NAME, snapshot_path
from agent.store.durable import durable_replace
from agent.store.migrations import SCHEMA_VERSION

_OUTBOX = "id, topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body, sent_at"
_JOBS = "job_id, seq, state, claims, target, transitions, reason, updated"


class Restored(NamedTuple):
    """What a rollback restore did."""

    snapshot: Path
    moved_to: Path
    events: int  # outbox rows carried over that the copy did not have
    jobs: int


def _rows(db: sqlite3.Connection, columns: str, table: str) -> list[tuple[Any, ...]]:
    with contextlib.suppress(sqlite3.Error):
        return [tuple(r) for r in db.execute(f"SELECT {columns} FROM {table}")]  # noqa: S608 -- constants
    return []


def restore_snapshot(data_dir: Path) -> Restored | None:
    """Restore the copy taken before this agent's schema was left behind (blocking); None if there is none."""
    snapshot = snapshot_path(data_dir, SCHEMA_VERSION)
    if not snapshot.exists():
        return None
    path = data_dir / DB_NAME
    newer = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        outbox, jobs = _rows(newer, _OUTBOX, "outbox"), _rows(newer, _JOBS, "firmware_jobs")
        counter = newer.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
    except sqlite3.Error:
        counter = None
    finally:
        newer.close()
    moved_to = data_dir / f"{DB_NAME}.newer-{int(time.time())}"
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(moved_to.with_name(moved_to.name + suffix))
    restoring = path.with_name(path.name + ".restoring")
    restoring.write_bytes(snapshot.read_bytes())
    db = sqlite3.connect(restoring)
    try:
        with db:
            before = db.total_changes
            marks = ", ".join("?" * len(_OUTBOX.split(", ")))
            db.executemany(f"INSERT OR IGNORE INTO outbox ({_OUTBOX}) VALUES ({marks})", outbox)  # noqa: S608
            events = db.total_changes - before
            marks = ", ".join("?" * len(_JOBS.split(", ")))
            db.executemany(f"INSERT OR REPLACE INTO firmware_jobs ({_JOBS}) VALUES ({marks})", jobs)  # noqa: S608
            seqs = [r[2] for r in outbox if isinstance(r[2], int)]
            floor = max([int(counter[0]) if counter else 1, *(s + 1 for s in seqs)])
            db.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'next_seq'", (floor,))
    finally:
        db.close()
    durable_replace(restoring, path)
    return Restored(snapshot, moved_to, events, len(jobs))
