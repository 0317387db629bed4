"""Credits: bought from the vendor by distributors, allocated down the chain, spent on credit orders
(seed 000 lines 177-199; seed 001 "Allocate Credits", "Credit Logs")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Ident, Request, Result

Amount = Annotated[int, Field(ge=1, le=10**9)]


class BuyCredits(Request):
    amount: Amount
    source: Literal["stripe", "paypal", "coupon"] = "stripe"


class Balance(Result):
    remaining: int


def buy(uow: UnitOfWork, actor: Actor, request: BuyCredits) -> Balance:
    """A distributor buys credits from the vendor, paying by Stripe, PayPal or coupon (seed 000 177-189)."""
    if actor.role != "distributor":
        raise Refused("not_distributor", "only distributors buy credits from the vendor", "seed 000 line 177")
    rules.check_source("regular", request.source)
    remaining = uow.credits.receive(actor.id, request.amount, uow.now, f"bought by {request.source}")
    authority.audit(uow, actor, "credits_bought", actor.id, amount=request.amount, source=request.source)
    return Balance(remaining=remaining)


class Allocate(Request):
    account: Ident
    amount: Amount


class Allocated(Result):
    remaining: int  # what the receiver holds now
    left: int  # what the giver holds now


def allocate(uow: UnitOfWork, actor: Actor, request: Allocate) -> Allocated:
    """Credits go down the chain: to one's sub-distributors, installers and PMs (seed 000 line 193); never
    more than held (a conditional debit: two allocations at once cannot overdraw)."""
    receiver = uow.accounts.require(request.account)
    if actor.is_operator:
        raise Refused("not_yours", "the platform operator holds no credits", "seed 000 line 193")
    rules.check_allocation(actor.principal, receiver.role, uow.accounts.chain(receiver.id))
    left = uow.credits.spend(actor.principal, request.amount, uow.now, f"allocated to {receiver.id}")
    remaining = uow.credits.receive(receiver.id, request.amount, uow.now, f"allocated by {actor.principal}")
    authority.audit(uow, actor, "credits_allocated", receiver.id, amount=request.amount, by=actor.principal)
    return Allocated(remaining=remaining, left=left)


class Movement(Result):
    at: float
    amount: int
    remaining: int
    note: str


class CreditLog(Result):
    """Seed 001 "Credit Logs": available (held now), total (ever received: bought or allocated in) and used
    (spent on orders or passed down the chain), and each movement."""

    account: str
    available: int
    total: int
    used: int
    log: list[Movement]


class CreditLogQuery(Request):
    account: Ident | None = None


def credit_log(uow: UnitOfWork, actor: Actor, request: CreditLogQuery) -> CreditLog:
    """An account's credits: its own, one below it, or (the operator) any."""
    if request.account is None and actor.is_operator:
        raise Refused("not_found", "name the account whose credits to show", "seed 001 Credit Logs")
    found = authority.account(uow, actor, request.account or actor.principal)
    received, given = uow.credits.totals(found.id)
    return CreditLog(
        account=found.id, available=uow.credits.balance(found.id), total=received, used=given,
        log=[Movement(at=m.at, amount=m.amount, remaining=m.remaining, note=m.note) for m in uow.credits.log(found.id)],
    )  # fmt: skip
