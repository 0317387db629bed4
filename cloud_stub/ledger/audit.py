"""The audit trail: one line for each login (and each refused one), each change of money and each change of
authority (a password, a role, a permission, a distributor acting for an installer), written in the
transaction of the change, so that there is no change without its line and no line without its change.
The ``audit`` table's SQL is here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),  # the account that acted ("-" for nobody known)
    sa.Column("acting_for", sa.Text),  # the account it acted for, when another one
    sa.Column("action", sa.Text, nullable=False),  # login, login_refused, password_changed, order_paid, ...
    sa.Column("subject", sa.Text, nullable=False),  # what it acted on
    sa.Column("detail", sa.Text, nullable=False),  # JSON: never a secret
    sa.Index("ix_audit_actor", "actor"),
)


class Line(NamedTuple):
    at: float
    actor: str
    acting_for: str | None
    action: str
    subject: str
    detail: dict[str, Any]


class Audit:
    """Audit lines in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def add(
        self, at: float, actor: str, action: str, subject: str, acting_for: str | None = None, **detail: Any
    ) -> None:
        self.tx.execute(
            self.tx.insert(audit).values(
                at=at, actor=actor, acting_for=acting_for, action=action, subject=subject,
                detail=json.dumps(detail, sort_keys=True, default=str),
            )
        )  # fmt: skip

    def lines(self, actor: str | None = None, limit: int = 200) -> Sequence[Line]:
        statement = sa.select(
            audit.c.at, audit.c.actor, audit.c.acting_for, audit.c.action, audit.c.subject, audit.c.detail
        ).order_by(audit.c.id.desc()).limit(limit)  # fmt: skip
        if actor is not None:
            statement = statement.where(sa.or_(audit.c.actor == actor, audit.c.acting_for == actor))
        return [Line(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in self.tx.all(statement)]
