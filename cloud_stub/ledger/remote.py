"""Remote operations queued for ``serve`` (DOMAIN.md "Site settings that reach the device": reboot,
resync): each is signed and published once. ``serve`` claims a command (a conditional write on ``sent``)
before it publishes it, so two ``serve`` processes never both send one. The ``commands`` table's SQL is
here and nowhere else."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the command id the device answers with
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("op", sa.Text, nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("by", sa.Text, nullable=False),  # the account that asked
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("sent", sa.Float),  # NULL until serve has published it
)


class Command(NamedTuple):
    id: str
    device: str
    op: str
    args: dict[str, Any]


class Remote:
    """The queued commands of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def queue(self, ident: str, device: str, op: str, by: str, now: float) -> None:
        self.tx.execute(sa.insert(commands).values(id=ident, device=device, op=op, args="{}", by=by, created=now))

    def asker(self, ident: str) -> str | None:
        """The account that asked for a command (None: no such command)."""
        found = self.tx.scalar(sa.select(commands.c.by).where(commands.c.id == ident))
        return None if found is None else str(found)

    def unsent(self, created_after: float) -> list[Command]:
        rows = self.tx.all(
            sa.select(commands.c.id, commands.c.device, commands.c.op, commands.c.args)
            .where(commands.c.sent.is_(None), commands.c.created > created_after)
            .order_by(commands.c.created, commands.c.id)
        )
        return [Command(i, d, op, json.loads(args)) for i, d, op, args in rows]

    def claim(self, ident: str, now: float) -> bool:
        """Mark a command sent; False when another process claimed it first."""
        result = self.tx.execute(
            sa.update(commands).where(commands.c.id == ident, commands.c.sent.is_(None)).values(sent=now)
        )
        return result.rowcount == 1

    def release(self, ident: str) -> None:
        """A claimed command that could not be published goes back in the queue."""
        self.tx.execute(sa.update(commands).where(commands.c.id == ident).values(sent=None))
