"""Coupons (seed 000 lines 115-133, seed 002 "Coupon Details"): the platform operator, or a distributor for an
account below it, gives an account a coupon of some value; the account pays one order of regular payment
with it (its source ``coupon``), once, before it expires, if it covers the order. Coupon Details lists an
account's coupons as Normal, Used or Expired."""

from __future__ import annotations

import secrets
from typing import Annotated, Final, Literal

from pydantic import Field

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.coupons import Coupon
from cloud_stub.ledger.orders import Order
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Ident, Request, Result

DAY: Final = 86_400.0
_SEED: Final = "seed 000 lines 115-133; seed 002 Coupon Details"
CODE_PATTERN: Final = r"^SP(-[0-9A-Z]{4}){3}$"
_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by people


class IssueCoupon(Request):
    account: Ident
    value: Annotated[int, Field(ge=1, le=10_000_000, description="cents")]
    days: Annotated[int, Field(ge=1, le=366)] = 90


class CouponView(Result):
    code: str
    account: str
    value: int
    expires: float
    state: Literal["normal", "used", "expired"]
    order_id: int | None


def _view(coupon: Coupon, now: float) -> CouponView:
    state: Literal["normal", "used", "expired"] = (
        "used" if coupon.used is not None else "expired" if coupon.expires <= now else "normal"
    )
    return CouponView(code=coupon.code, account=coupon.account, value=coupon.value, expires=coupon.expires,
                      state=state, order_id=coupon.order_id)  # fmt: skip


def _code() -> str:
    return "SP-" + "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(3))


def issue(uow: UnitOfWork, actor: Actor, request: IssueCoupon) -> CouponView:
    """A new coupon for an account: by the operator, or a distributor for an account below it."""
    if not actor.is_operator:
        if actor.principal_role not in ("distributor", "sub_distributor"):
            raise Refused("not_yours", "coupons are given by the platform or a distributor", _SEED)
        authority.account(uow, actor, request.account)
    uow.accounts.require(request.account)
    coupon = Coupon(_code(), request.account, request.value, uow.now, uow.now + request.days * DAY, None, None)
    while not uow.coupons.add(coupon):  # a code drawn twice: draw again
        coupon = coupon._replace(code=_code())
    authority.audit(uow, actor, "coupon_issued", request.account, value=request.value, days=request.days)
    return _view(coupon, uow.now)


def coupons(uow: UnitOfWork, actor: Actor) -> list[CouponView]:
    """Coupon Details: the coupons of the actor's account (a sub-installer's: its main account's)."""
    if actor.is_operator:
        raise Refused("not_yours", "the platform operator holds no coupons", _SEED)
    return [_view(c, uow.now) for c in uow.coupons.of(actor.principal)]


def redeem(uow: UnitOfWork, code: str, order: Order) -> None:
    """Pay ``order`` (source coupon) with coupon ``code``: its payer's, unused, unexpired, covering it."""
    found = uow.coupons.get(code.strip().upper())
    if found is None or found.account != order.payer:
        raise Refused("bad_coupon", "no such coupon of the payer's", _SEED)
    if found.used is not None:
        raise Refused("coupon_used", f"coupon {found.code} was used already", _SEED)
    if found.expires <= uow.now:
        raise Refused("coupon_expired", f"coupon {found.code} has expired", _SEED)
    if found.value < order.amount:
        raise Refused("coupon_short", f"coupon {found.code} covers {found.value}, the order is {order.amount}", _SEED)
    if not uow.coupons.use(found.code, order.id, uow.now):
        raise Refused("coupon_used", f"coupon {found.code} was used already", _SEED)
