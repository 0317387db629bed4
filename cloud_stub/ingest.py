"""What devices send, kept in the ledger: events deduplicated by ``event_id``, gaps in ``seq``,
alarms and call alerts per project, replies by command id, the last state, firmware statuses."""

from __future__ import annotations

import json
from typing import Any, Final

from cloud_stub.ledger import Ledger

# A device's firmware events -> the status the upgrade page shows (seed 002 lines 445-448, 751).
FIRMWARE_STATUS: Final = {
    "pending": "Pending",
    "downloading": "Processing",
    "verifying": "Processing",
    "installing": "Processing",
    "rebooting": "Processing",
    "committing": "Processing",
    "executed": "Executed",
    "failed": "Failed",
    "rolled_back": "Failed",
    "rejected": "Failed",
    "cancelled": "Cancelled",
}


def take_event(ledger: Ledger, device: str, body: dict[str, Any], now: float) -> bool:
    """Keep one event; False for a duplicate (same ``event_id``)."""
    row = ledger.db.execute("SELECT project FROM devices WHERE mac = ?", (device,)).fetchone()
    project = row[0] if row else None
    with ledger.transaction() as db:
        cursor = db.execute(
            "INSERT OR IGNORE INTO events (event_id, device, seq, type, kind, project, occurred_at, received_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(body["event_id"]),
                device,
                int(body["seq"]),
                str(body["type"]),
                str(body["kind"]),
                project,
                str(body.get("occurred_at", "")),
                now,
                json.dumps(body),
            ),
        )
        fresh = bool(cursor.rowcount)
        if fresh and body["type"] == "firmware" and isinstance(body.get("data"), dict):
            job = body["data"].get("job_id")
            status = FIRMWARE_STATUS.get(str(body["kind"]))
            if job and status:
                db.execute(
                    "INSERT INTO device_upgrades (device, upgrade, status, last_kind, at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (device, upgrade) DO UPDATE SET status = excluded.status,"
                    " last_kind = excluded.last_kind, at = excluded.at",
                    (device, job, status, body["kind"], now),
                )
    return fresh


def gaps(ledger: Ledger, device: str) -> list[tuple[int, int]]:
    """Ranges of ``seq`` never received from ``device`` (first, last), below the highest seen."""
    seqs = [s for (s,) in ledger.db.execute("SELECT seq FROM events WHERE device = ? ORDER BY seq", (device,))]
    found, expected = [], 1
    for seq in seqs:
        if seq > expected:
            found.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return found


def alarms(ledger: Ledger, project: str) -> list[dict[str, Any]]:
    """Alarms and call alerts of a project, newest first."""
    rows = ledger.db.execute(
        "SELECT body FROM events WHERE project = ? AND type IN ('alarm', 'call_alert') ORDER BY received_at DESC",
        (project,),
    )
    return [json.loads(body) for (body,) in rows]


def take_reply(ledger: Ledger, device: str, body: dict[str, Any], now: float) -> None:
    with ledger.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO replies (id, device, body, at) VALUES (?, ?, ?, ?)",
            (str(body["id"]), device, json.dumps(body), now),
        )


def take_state(ledger: Ledger, device: str, body: dict[str, Any], now: float) -> None:
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO device_state (device, body, at) VALUES (?, ?, ?)"
            " ON CONFLICT (device) DO UPDATE SET body = excluded.body, at = excluded.at",
            (device, json.dumps(body), now),
        )


def state(ledger: Ledger, device: str) -> dict[str, Any] | None:
    row = ledger.db.execute("SELECT body FROM device_state WHERE device = ?", (device,)).fetchone()
    return json.loads(row[0]) if row else None
