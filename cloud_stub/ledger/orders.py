"""Orders and payments (DOMAIN.md "Paying"; seed 001 line 284, seed 002 line 186): each order has a
17-digit transaction number, a payer, its items as priced, a method and source, and a status that moves
**pending → paid** or **pending → expired**, each once: the move is a conditional write
(``UPDATE ... WHERE status = 'pending'``), so of two payers racing for one order exactly one gets the
row, whatever the back end. The ``orders`` table's SQL is here and nowhere else.

Item entries are JSON lists ``[project, service, subject, expires, plan, base]``; ``base`` (the expiry
the item was priced from) is absent in orders placed before it was recorded.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from cloud_stub.errors import Refused
from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("payer", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("items", sa.Text, nullable=False),  # JSON [[project, service, subject, expires, plan, base], ...]
    sa.Column("method", sa.Text, nullable=False),  # regular, credit
    sa.Column("source", sa.Text, nullable=False),  # stripe, paypal, coupon, credit
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # pending, paid, expired
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("txn", sa.Text),  # the transaction number the payer sees
    sa.Column("kind", sa.Text, nullable=False, server_default="manual"),  # manual, auto
    sa.Column("paid_at", sa.Float),
    sa.Index("orders_txn", "txn", unique=True),
    sa.Index("orders_payer", "payer", "id"),
)


class Order(NamedTuple):
    id: int
    txn: str
    payer: str
    items: list[list[Any]]
    method: str
    source: str
    amount: int
    status: str
    created: float
    paid_at: float | None
    kind: str
    summary: dict[str, int]


_ORDER = sa.select(
    orders.c.id, orders.c.txn, orders.c.payer, orders.c["items"], orders.c.method, orders.c.source, orders.c.amount,
    orders.c.status, orders.c.created, orders.c.paid_at, orders.c.kind, orders.c.summary,
)  # fmt: skip


def _order(row: Sequence[Any]) -> Order:
    ident, txn, payer, items, method, source, amount, status, created, paid_at, kind, summary = row
    return Order(int(ident), str(txn), payer, json.loads(items), method, source, int(amount), status, created,
                 paid_at, kind, json.loads(summary))  # fmt: skip


class Orders:
    """The orders of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def _txn(self) -> str:
        """A 17-digit transaction number, as the seeds show them (seed 001 line 284)."""
        while True:
            txn = str(10**16 + secrets.randbelow(9 * 10**16))
            if self.tx.first(sa.select(1).where(orders.c.txn == txn)) is None:
                return txn

    def place(
        self,
        payer: str,
        items: Sequence[Sequence[Any]],
        method: str,
        source: str,
        amount: int,
        now: float,
        summary: dict[str, int],
        *,
        kind: str = "manual",
        paid: bool = False,
    ) -> Order:
        """A new order (pending, or paid at once: an auto-renewal), as recorded."""
        txn, entries, status = self._txn(), [list(i) for i in items], "paid" if paid else "pending"
        ident = self.tx.execute(
            sa.insert(orders)
            .values(payer=payer, items=json.dumps(entries), method=method, source=source, amount=amount,
                    status=status, created=now, summary=json.dumps(summary), txn=txn, kind=kind,
                    paid_at=now if paid else None)
            .returning(orders.c.id)
        ).scalar_one()  # fmt: skip
        return Order(int(ident), txn, payer, entries, method, source, amount, status, now, now if paid else None, kind,
                     summary)  # fmt: skip

    def by_txn(self, txn: str) -> Order:
        row = self.tx.first(_ORDER.where(orders.c.txn == txn))
        if row is None:
            raise Refused("not_found", f"no order {txn}", "ledger")
        return _order(row)

    def by_id(self, ident: int) -> Order:
        row = self.tx.first(_ORDER.where(orders.c.id == ident))
        if row is None:
            raise Refused("not_found", f"no order {ident}", "ledger")
        return _order(row)

    def mark_paid(self, ident: int, now: float) -> bool:
        """pending → paid; False when the order was not pending (paid or expired by someone else)."""
        result = self.tx.execute(
            sa.update(orders)
            .where(orders.c.id == ident, orders.c.status == "pending")
            .values(status="paid", paid_at=now)
        )
        return result.rowcount == 1

    def expire(self, ident: int) -> bool:
        """pending → expired."""
        result = self.tx.execute(
            sa.update(orders).where(orders.c.id == ident, orders.c.status == "pending").values(status="expired")
        )
        return result.rowcount == 1

    def expire_older(self, created_before: float) -> int:
        """Every pending order placed before ``created_before`` → expired; how many."""
        return int(
            self.tx.execute(
                sa.update(orders)
                .where(orders.c.status == "pending", orders.c.created < created_before)
                .values(status="expired")
            ).rowcount
        )

    def of(self, payer: str) -> list[Order]:
        """``payer``'s orders, newest first."""
        return [_order(r) for r in self.tx.all(_ORDER.where(orders.c.payer == payer).order_by(orders.c.id.desc()))]

    def all(self) -> list[Order]:
        return [_order(r) for r in self.tx.all(_ORDER.order_by(orders.c.id))]
