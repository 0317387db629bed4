"""Idempotent requests: an API write carrying an ``Idempotency-Key`` is recorded with its answer, in the
same transaction as its effect, so that the same key from the same account returns the first answer and
does nothing more (as payment APIs do). A key is claimed by inserting its row: a concurrent request with
the same key waits for that transaction (PostgreSQL's unique index, SQLite's write lock) and then finds
the answer. The ``idempotency`` table's SQL is here and nowhere else."""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),  # SHA-256 of method, path and body
    sa.Column("status", sa.Integer),  # NULL while the first request is being answered
    sa.Column("body", sa.Text),
    sa.Column("created", sa.Float, nullable=False),
    sa.Index("ix_idempotency_created", "created"),
)


class Answer(NamedTuple):
    fingerprint: str
    status: int | None
    body: str | None


class Requests:
    """Idempotency keys in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def claim(self, account: str, key: str, fingerprint: str, now: float) -> Answer | None:
        """Claim ``key`` for a new request (None), or the answer recorded for it."""
        result = self.tx.execute(
            self.tx.insert_ignore(idempotency).values(account=account, key=key, fingerprint=fingerprint, created=now)
        )
        if result.rowcount == 1:
            return None
        row = self.tx.first(
            sa.select(idempotency.c.fingerprint, idempotency.c.status, idempotency.c.body).where(
                idempotency.c.account == account, idempotency.c.key == key
            )
        )
        assert row is not None
        return Answer(*row)

    def answer(self, account: str, key: str, status: int, body: str) -> None:
        self.tx.execute(
            sa.update(idempotency)
            .where(idempotency.c.account == account, idempotency.c.key == key)
            .values(status=status, body=body)
        )

    def forget_older(self, before: float) -> int:
        """Keys older than ``before`` may be used again (they are kept a day)."""
        return int(self.tx.execute(sa.delete(idempotency).where(idempotency.c.created < before)).rowcount)
