"""Credits: each account's balance and the log of every movement (seed 000 lines 177-199; seed 001
"Credit Logs"). Money moves by conditional writes: a debit is ``UPDATE ... SET balance = balance - n
WHERE balance >= n``, so two concurrent spenders can never take a balance below zero, whatever the back
end; the remaining balance is read back from the same statement. The ``credit_balances`` and
``credit_log`` tables' SQL is here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa

from cloud_stub.errors import Refused
from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

credit_balances = sa.Table(
    "credit_balances",
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("balance", sa.Integer, nullable=False),
    sa.CheckConstraint("balance >= 0", name="ck_credit_balances_not_negative"),
)

credit_log = sa.Table(
    "credit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),  # + received, - spent or allocated
    sa.Column("remaining", sa.Integer, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("order_id", sa.Integer),  # the order a debit paid for
    sa.Index("ix_credit_log_account", "account"),
    sa.Index("ix_credit_log_order_id", "order_id"),
)


class Movement(NamedTuple):
    at: float
    amount: int
    remaining: int
    note: str


class Credits:
    """The credits of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def balance(self, account: str) -> int:
        found = self.tx.scalar(sa.select(credit_balances.c.balance).where(credit_balances.c.account == account))
        return int(found or 0)

    def receive(self, account: str, amount: int, now: float, note: str) -> int:
        """Add ``amount`` (> 0) to ``account``'s balance and log it; the balance after."""
        statement = self.tx.insert(credit_balances).values(account=account, balance=amount)
        statement = statement.on_conflict_do_update(
            index_elements=["account"], set_={"balance": credit_balances.c.balance + amount}
        ).returning(credit_balances.c.balance)
        remaining = int(self.tx.execute(statement).scalar_one())
        self._log(account, amount, remaining, now, note, None)
        return remaining

    def spend(self, account: str, amount: int, now: float, note: str, order: int | None = None) -> int:
        """Take ``amount`` (> 0) from ``account``, never below zero (``not_enough_credits``); the balance after."""
        row = self.tx.first(
            sa.update(credit_balances)
            .where(credit_balances.c.account == account, credit_balances.c.balance >= amount)
            .values(balance=credit_balances.c.balance - amount)
            .returning(credit_balances.c.balance)
        )
        if row is None:
            held = self.balance(account)
            raise Refused("not_enough_credits", f"{account} has {held} credits, {amount} needed", "seed 000 line 197")
        remaining = int(row[0])
        self._log(account, -amount, remaining, now, note, order)
        return remaining

    def _log(self, account: str, amount: int, remaining: int, now: float, note: str, order: int | None) -> None:
        self.tx.execute(
            sa.insert(credit_log).values(
                account=account, at=now, amount=amount, remaining=remaining, note=note, order_id=order
            )
        )

    def log(self, account: str) -> Sequence[Movement]:
        rows = self.tx.all(
            sa.select(credit_log.c.at, credit_log.c.amount, credit_log.c.remaining, credit_log.c.note)
            .where(credit_log.c.account == account)
            .order_by(credit_log.c.id)
        )
        return [Movement(*row) for row in rows]

    def totals(self, account: str) -> tuple[int, int]:
        """(received, given): every credit in (bought or allocated in), every credit out (spent or passed down)."""
        received = sa.func.coalesce(sa.func.sum(sa.case((credit_log.c.amount > 0, credit_log.c.amount), else_=0)), 0)
        given = sa.func.coalesce(sa.func.sum(sa.case((credit_log.c.amount < 0, -credit_log.c.amount), else_=0)), 0)
        row = self.tx.first(sa.select(received, given).where(credit_log.c.account == account))
        assert row is not None
        return int(row[0]), int(row[1])

    def debits_for_orders(self) -> Sequence[tuple[int, int, int]]:
        """(order, how many debits, their sum) for every order paid with credits: what an audit checks."""
        rows = self.tx.all(
            sa.select(credit_log.c.order_id, sa.func.count(), sa.func.sum(-credit_log.c.amount))
            .where(credit_log.c.order_id.is_not(None))
            .group_by(credit_log.c.order_id)
        )
        return [(int(o), int(n), int(s)) for o, n, s in rows]

    def all_balances(self) -> dict[str, int]:
        return {a: int(b) for a, b in self.tx.all(sa.select(credit_balances.c.account, credit_balances.c.balance))}
