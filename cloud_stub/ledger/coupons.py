"""Coupons: a value (in cents) given to an account, to pay one order of regular payment (Stripe, PayPal or
coupon: seed 000 lines 115-133) before it expires; used once, by the order it paid. The ``coupons`` table's
SQL is here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

coupons = sa.Table(
    "coupons",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("value", sa.Integer, nullable=False),  # cents
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Column("used", sa.Float),
    sa.Column("order_id", sa.Integer),
    sa.Index("ix_coupons_account", "account"),
)


class Coupon(NamedTuple):
    code: str
    account: str
    value: int
    created: float
    expires: float
    used: float | None
    order_id: int | None


_COUPON = sa.select(*coupons.c)


class Coupons:
    """Coupons in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def add(self, coupon: Coupon) -> bool:
        return bool(self.tx.execute(self.tx.insert_ignore(coupons).values(**coupon._asdict())).rowcount == 1)

    def get(self, code: str) -> Coupon | None:
        row = self.tx.first(_COUPON.where(coupons.c.code == code))
        return None if row is None else Coupon(*row)

    def of(self, account: str) -> Sequence[Coupon]:
        rows = self.tx.all(_COUPON.where(coupons.c.account == account).order_by(coupons.c.created.desc()))
        return [Coupon(*r) for r in rows]

    def use(self, code: str, order: int, now: float) -> bool:
        """Mark a coupon used by ``order``, once (a conditional write: two payments racing with one code, one
        wins)."""
        result = self.tx.execute(
            sa.update(coupons).where(coupons.c.code == code, coupons.c.used.is_(None)).values(used=now, order_id=order)
        )
        return bool(result.rowcount == 1)
