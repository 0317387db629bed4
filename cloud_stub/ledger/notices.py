"""Notices: renewals (stage 0) and expiries at 15, 5, 3 and 1 days (DOMAIN.md; seed 002 rows 9-10), each
raised once per key (the key names the stage, the service, the expiry and the recipient), however many
passes or ``serve`` processes raise it. The ``notices`` table's SQL is here and nowhere else."""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

notices = sa.Table(
    "notices",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # stage:project:service:subject:expires:role, or renewed:...
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("project", sa.Text, nullable=False),
    sa.Column("stage", sa.Integer, nullable=False),
    sa.Column("recipient_role", sa.Text, nullable=False),
    sa.Column("recipient", sa.Text),
    sa.Column("text", sa.Text, nullable=False),
    sa.Index("ix_notices_project", "project"),
)


class Notice(NamedTuple):
    at: float
    project: str
    stage: int
    role: str
    recipient: str | None
    text: str


class Notices:
    """The notices of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def raise_once(self, key: str, notice: Notice) -> bool:
        """Record ``notice`` under ``key`` unless it was raised before; whether it is new."""
        result = self.tx.execute(
            self.tx.insert_ignore(notices).values(
                key=key, at=notice.at, project=notice.project, stage=notice.stage, recipient_role=notice.role,
                recipient=notice.recipient, text=notice.text,
            )
        )  # fmt: skip
        return result.rowcount == 1

    def of(self, project: str) -> list[Notice]:
        rows = self.tx.all(
            sa.select(notices.c.at, notices.c.project, notices.c.stage, notices.c.recipient_role, notices.c.recipient,
                      notices.c.text)
            .where(notices.c.project == project)
            .order_by(notices.c.at, notices.c.key)
        )  # fmt: skip
        return [Notice(*row) for row in rows]

    def remove(self, project: str) -> int:
        return int(self.tx.execute(sa.delete(notices).where(notices.c.project == project)).rowcount)
