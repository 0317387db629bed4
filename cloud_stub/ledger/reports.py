"""What devices send, kept in the ledger (PROTOCOL.md "Events", "Replies", "State"): events deduplicated by
``event_id`` (a redelivery is dropped here), replies by command id, each device's last state. The
``events``, ``device_state`` and ``replies`` tables' SQL is here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("project", sa.Text),
    sa.Column("occurred_at", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("events_device_seq", "device", "seq"),
    sa.Index("events_project_type", "project", "type"),
)

device_state = sa.Table(
    "device_state",
    metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

replies = sa.Table(
    "replies",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)


class Reports:
    """Device reports in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def add_event(self, device: str, project: str | None, body: dict[str, Any], now: float) -> bool:
        """Keep one event; False for a duplicate (same ``event_id``)."""
        result = self.tx.execute(
            self.tx.insert_ignore(events).values(
                event_id=str(body["event_id"]), device=device, seq=int(body["seq"]), type=str(body["type"]),
                kind=str(body["kind"]), project=project, occurred_at=str(body.get("occurred_at", "")),
                received_at=now, body=json.dumps(body),
            )
        )  # fmt: skip
        return result.rowcount == 1

    def seqs(self, device: str) -> Sequence[int]:
        return [
            r[0] for r in self.tx.all(sa.select(events.c.seq).where(events.c.device == device).order_by(events.c.seq))
        ]

    def alarms(self, project: str) -> list[dict[str, Any]]:
        """Alarms and call alerts of a site, newest first."""
        rows = self.tx.all(
            sa.select(events.c.body)
            .where(events.c.project == project, events.c.type.in_(("alarm", "call_alert")))
            .order_by(events.c.received_at.desc(), events.c.seq.desc())
        )
        return [json.loads(r[0]) for r in rows]

    def add_reply(self, device: str, body: dict[str, Any], now: float) -> None:
        self.tx.execute(self.tx.insert_ignore(replies).values(id=str(body["id"]), device=device, body=json.dumps(body),
                                                              at=now))  # fmt: skip

    def reply(self, ident: str) -> dict[str, Any] | None:
        found = self.tx.scalar(sa.select(replies.c.body).where(replies.c.id == ident))
        return None if found is None else dict(json.loads(found))

    def set_state(self, device: str, body: dict[str, Any], now: float) -> None:
        self.tx.execute(
            self.tx.excluded_upsert(device_state, ["device"], ["body", "at"]).values(
                device=device, body=json.dumps(body), at=now
            )
        )

    def state(self, device: str) -> dict[str, Any] | None:
        found = self.tx.scalar(sa.select(device_state.c.body).where(device_state.c.device == device))
        return None if found is None else dict(json.loads(found))
