"""Mail waiting to be sent: written in the transaction of what it tells (a code, a link, a notice), sent by
``cloud_stub/mail.py`` after that transaction commits, and kept until the relay took it. A relay that is
down loses nothing: the message waits with its next try. Several senders may share one ledger: a message is
claimed for a minute by a conditional write before it is handed to the relay. The ``mail`` table's SQL is
here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

CLAIM_SECONDS: Final = 60.0

mail = sa.Table(
    "mail",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.Text, nullable=False),  # code, reset, confirm, welcome, notice
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("next_try", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claimed_until", sa.Float),
    sa.Column("sent", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Index("ix_mail_waiting", "sent", "next_try"),
)


class Message(NamedTuple):
    id: int
    kind: str
    recipient: str
    subject: str
    body: str
    attempts: int


class Mail:
    """The mail queue in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def queue(self, kind: str, recipient: str, subject: str, body: str, now: float) -> None:
        self.tx.execute(
            self.tx.insert(mail).values(
                kind=kind, recipient=recipient, subject=subject, body=body, created=now, next_try=now
            )
        )

    def due(self, now: float, limit: int = 20) -> Sequence[Message]:
        rows = self.tx.all(
            sa.select(mail.c.id, mail.c.kind, mail.c.recipient, mail.c.subject, mail.c.body, mail.c.attempts)
            .where(mail.c.sent.is_(None), mail.c.next_try <= now)
            .where(sa.or_(mail.c.claimed_until.is_(None), mail.c.claimed_until < now))
            .order_by(mail.c.id)
            .limit(limit)
        )
        return [Message(*r) for r in rows]

    def claim(self, ident: int, now: float) -> bool:
        """Take a message for one sender, for :data:`CLAIM_SECONDS` (False: another sender has it)."""
        result = self.tx.execute(
            sa.update(mail)
            .where(mail.c.id == ident, mail.c.sent.is_(None))
            .where(sa.or_(mail.c.claimed_until.is_(None), mail.c.claimed_until < now))
            .values(claimed_until=now + CLAIM_SECONDS)
        )
        return bool(result.rowcount == 1)

    def sent(self, ident: int, now: float) -> None:
        self.tx.execute(sa.update(mail).where(mail.c.id == ident).values(sent=now, claimed_until=None))

    def failed(self, ident: int, next_try: float, error: str) -> None:
        self.tx.execute(
            sa.update(mail)
            .where(mail.c.id == ident)
            .values(attempts=mail.c.attempts + 1, next_try=next_try, claimed_until=None, last_error=error[:500])
        )

    def to(self, recipient: str) -> Sequence[Message]:
        """What was queued for ``recipient``, oldest first (the CLI's ``mail`` listing and tests)."""
        rows = self.tx.all(
            sa.select(mail.c.id, mail.c.kind, mail.c.recipient, mail.c.subject, mail.c.body, mail.c.attempts)
            .where(mail.c.recipient == recipient)
            .order_by(mail.c.id)
        )
        return [Message(*r) for r in rows]

    def forget_sent(self, before: float) -> int:
        """Messages sent before ``before`` go (their bodies held codes and links)."""
        return int(self.tx.execute(sa.delete(mail).where(mail.c.sent < before)).rowcount)

    def waiting(self) -> int:
        return int(self.tx.scalar(sa.select(sa.func.count()).select_from(mail).where(mail.c.sent.is_(None))))
