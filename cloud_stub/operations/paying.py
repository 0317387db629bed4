"""Paying: quotes, orders with transaction numbers, payments (providers simulated: an order is paid when
asked), auto-renewal as recorded orders, payment records, and the notices of renewals and expiries
(DOMAIN.md "Paying"; seed 000, 001, 002).

Money moves exactly once. Paying an order is, in one transaction: the order moved pending → paid by a
conditional write (of two payers racing, one gets it; the other is told ``not_pending``), the credits
debited by a conditional write (never below zero), and each service moved from the expiry it was priced
from to its new one (``quote_stale`` if another payment moved it first: nothing is charged). An
auto-renewal is a conditional write on the service's expiry, so two ``serve`` processes renew a cycle once.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field, model_validator
from typing_extensions import TypedDict

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.holdings import Extension, Holding
from cloud_stub.ledger.notices import Notice
from cloud_stub.ledger.orders import Order
from cloud_stub.ledger.sites import Site
from cloud_stub.operations import authority, coupons, pricing
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.sites import account_services, apartment_switches
from cloud_stub.operations.types import Item, Request, Result, WireId, item_parts, present

Source = Literal["stripe", "paypal", "coupon", "credit"]
Plan = Literal["0-200", "201+"]
SUMMARY_KEYS: Final = {"door": "doors", "personnel_app": "personnel_apps", "admin_app": "admin_apps"}


class Selection(Request):
    """What to pay for: ``items``, or what ``sites`` could pay for (``services`` narrows them; ignored
    with items); for ``months`` (regular payment) or to ``renew_to`` (credit payment: that day's
    23:59:59 in each site's time zone); ``plan`` for attendance."""

    model_config = ConfigDict(json_schema_extra={"allOf": [present("items", "sites"), present("months", "renew_to")]})

    items: Annotated[list[Item], Field(min_length=1, max_length=2000)] | None = None
    sites: Annotated[list[WireId], Field(min_length=1, max_length=1000)] | None = None
    services: Annotated[list[Annotated[str, Field(pattern=r"^[a-z_]{1,64}$")]], Field(max_length=64)] = Field(
        default_factory=list
    )
    months: Annotated[int, Field(ge=1, le=120)] | None = None
    renew_to: date | None = None
    plan: Plan | None = None

    @model_validator(mode="after")
    def _either(self) -> Selection:
        if (self.items is None) == (self.sites is None):
            raise ValueError("give items, or sites (with services to narrow them)")
        if (self.months is None) == (self.renew_to is None):
            raise ValueError("give months (regular payment) or renew_to (credit payment)")
        return self


class QuotedItem(TypedDict):
    """One item of a quote (a dict, not a model: a payment may hold thousands, each built for ~0.2 µs)."""

    project: str
    service: str
    subject: str
    current: float | None  # the expiry it is priced from (None: none yet)
    expires: float  # the new expiry
    plan: str | None
    monthly: int
    periods: int
    amount: int


class Summary(Result):
    doors: int = 0
    personnel_apps: int = 0
    admin_apps: int = 0
    premium_features: int = 0
    apps: int = 0


class Quote(Result):
    method: str
    amount: int
    items: list[QuotedItem]
    summary: Summary
    renew_to: date | None


def select(uow: UnitOfWork, projects: list[str], services: list[str] | None) -> list[tuple[str, str, str]]:
    """Seed 000 lines 147-149: the chosen sites (or all) and service types (or all), as items: what each
    site could pay for, not only what it holds. Its units: every door but the free one, every app account
    (by the service that pays for it), every apartment with Landline or Video Storage on; and the site-wide
    features it holds or (community) has switched on. Premium features never taken are named as items:
    "All" renews a site, it does not buy every feature there is."""
    chosen: list[tuple[str, str, str]] = []
    for project in projects:
        site = uow.sites.require(project)
        sold = {o.service: o for o in rules.CATALOGUE[site.type]}
        units = [("door", f"door:{d}") for d in site.doors[1:] if "door" in sold]
        units += [(service, f"account:{a}") for a, (_, service) in account_services(uow, site).items()]
        if site.type == "community":
            for apartment in apartment_switches(uow, site):
                units += [
                    (s, f"apartment:{apartment.id}") for s in ("landline", "video_storage") if getattr(apartment, s)
                ]
        held = {(h.service, h.subject) for h in uow.holdings.of(site.id) if h.subject == "project"}
        units += sorted(
            (s, subj)
            for s, subj in held
            if sold[s].monthly > 0 and not (site.type == "community" and "apartment" in sold[s].levels)
        )
        chosen += [(project, s, subj) for s, subj in units if services is None or s in services]
    if not chosen:
        raise Refused("nothing_selected", "the chosen sites have none of the chosen services", "seed 000 lines 147-149")
    return list(dict.fromkeys(chosen))


def quote(uow: UnitOfWork, actor: Actor, request: Selection) -> Quote:
    """The price first (seed 000 lines 147-149): what paying for the selection costs, and the new expiry of
    each item. An item named twice is one item."""
    if request.items is not None:
        items = list(dict.fromkeys(item_parts(i) for i in request.items))
    else:
        items = select(uow, list(request.sites or []), list(request.services) or None)
    sites = {p: uow.sites.require(p) for p in dict.fromkeys(p for p, _, _ in items)}
    methods = {rules.payment_method(s.type, s.created) for s in sites.values()}
    if len(methods) != 1:
        raise Refused("mixed_methods", "one order pays with one method", "seed 000 lines 115-133")
    method = methods.pop()
    if method == "none":
        raise Refused(
            "no_payment_needed", "commercial projects created before 2025-06-01 need no payment", "DOMAIN.md Paying"
        )
    authority.payer(uow, actor, sites.values(), method)
    held = uow.holdings.expiries(sites)
    facts = {
        p: pricing.facts(uow, s, frozenset(key[1] for key in held if key[0] == p and key[2] == "project"))
        for p, s in sites.items()
    }
    now, priced, summary = uow.now, [], Summary().model_dump()
    for project, service, subject in items:
        site = sites[project]
        monthly = pricing.monthly(facts[project], service, subject, request.plan)
        current = held.get((project, service, subject))
        start = max(current or now, now)
        if method == "credit":
            if request.renew_to is None:
                raise Refused("renew_to_needed", "credit renewal names a 'renew to' date", "seed 001 line 220")
            new = rules.end_of_day(request.renew_to, site.timezone)
            if new <= start:
                raise Refused("renew_to_past", "'renew to' must be after the current expiry", "seed 001 line 220")
            periods = max(1, math.ceil((new - start) / (30 * rules.DAY)))
        else:
            if request.months is None:
                raise Refused("length_needed", "manual renewal names a length", "seed 000 line 161")
            new = start + rules.months(request.months)
            periods = request.months
        priced.append(QuotedItem(
            project=project, service=service, subject=subject, current=current, expires=new, monthly=monthly,
            plan=request.plan if service == "attendance" else None, periods=periods, amount=monthly * periods,
        ))  # fmt: skip
        key = SUMMARY_KEYS.get(service) or ("apps" if service in ("app", "additional_app", "pm_app") else
                                            "premium_features")  # fmt: skip
        summary[key] += 1
    return Quote.model_construct(  # from the ledger's own values: nothing to validate
        method=method,
        amount=sum(i["amount"] for i in priced),
        items=priced,
        summary=Summary(**summary),
        renew_to=request.renew_to,
    )


class PlaceOrder(Selection):
    source: Source


class Placed(Result):
    txn: str
    status: str
    amount: int
    pay_by: float
    quote: Quote


def _place(uow: UnitOfWork, actor: Actor, selection: Selection, source: str) -> tuple[Quote, Order]:
    offer = quote(uow, actor, selection)
    rules.check_source(offer.method, source)
    entries = [[i["project"], i["service"], i["subject"], i["expires"], i["plan"], i["current"]] for i in offer.items]
    order = uow.orders.place(actor.principal, entries, offer.method, source, offer.amount, uow.now,
                             offer.summary.model_dump())  # fmt: skip
    return offer, order


def place(uow: UnitOfWork, actor: Actor, request: PlaceOrder) -> Placed:
    """A pending order for the selection, with its transaction number; to be paid within 15 minutes."""
    offer, order = _place(uow, actor, request, request.source)
    return Placed(txn=order.txn, status="pending", amount=offer.amount, pay_by=uow.now + rules.ORDER_TTL, quote=offer)


class PayOptions(Request):
    auto_renew: bool = False  # renew every 30 days from the upcoming expiry on


class Pay(PayOptions):
    txn: Annotated[str, Field(pattern=r"^[0-9]{17}$")]
    coupon: Annotated[str, Field(max_length=20)] | None = None  # a coupon order's code (seed 002 Coupon Details)


class Paid(Result):
    order: int
    txn: str
    paid: int
    method: str
    projects: list[str]


def _extensions(order: Order) -> list[Extension]:
    extensions = []
    for entry in order.items:
        project, service, subject, new, plan = entry[:5]
        base = entry[5] if len(entry) > 5 else None
        extensions.append(Extension(project, service, subject, base, new, plan))
    return extensions


def pay(uow: UnitOfWork, actor: Actor, request: Pay) -> Paid:
    """Pay a pending order (providers simulated): within 15 minutes, by the account it was placed for, once."""
    order = uow.orders.by_txn(request.txn)
    if order.payer != actor.principal:
        raise Refused("not_yours", f"order {order.txn} was placed by another account", "seed 002 line 186")
    if order.status == "pending" and rules.order_expired(order.created, uow.now):
        uow.orders.expire(order.id)
        uow.commit()  # the order stays expired though the payment is refused
        raise Refused("order_expired", "a pending order must be paid within 15 minutes", "DOMAIN.md Paying")
    if order.status != "pending":
        raise Refused("not_pending", f"order {order.txn} is {order.status}", "DOMAIN.md Paying")
    if request.coupon is not None:
        if order.source != "coupon":
            raise Refused("wrong_source", f"order {order.txn} is paid by {order.source}, not a coupon",
                          "seed 000 lines 115-133")  # fmt: skip
        coupons.redeem(uow, request.coupon, order)
    return _settle(uow, order, request.auto_renew)


class ProviderPaid(Request):
    """A payment provider's word that an order was paid (its webhook, signature checked by the adapter)."""

    txn: Annotated[str, Field(pattern=r"^[0-9]{17}$")]
    provider: Literal["stripe", "paypal"]
    auto_renew: bool = False


def provider_paid(uow: UnitOfWork, actor: Actor, request: ProviderPaid) -> Paid:
    """Settle an order its payment provider reports paid, as its payer would (the same checks: pending,
    within 15 minutes, once); the provider must be the order's source. Only the platform (the webhook's
    adapter, having checked the provider's signature) asks this."""
    authority.operator_only(actor, "confirming a provider's payment")
    order = uow.orders.by_txn(request.txn)
    if order.source != request.provider:
        raise Refused("wrong_source", f"order {order.txn} is paid by {order.source}, not {request.provider}",
                      "seed 000 lines 115-133")  # fmt: skip
    payer = authority.resolve(uow, order.payer)
    return pay(uow, payer, Pay(txn=request.txn, auto_renew=request.auto_renew))


def _settle(uow: UnitOfWork, order: Order, auto_renew: bool) -> Paid:
    """The payment itself, in the caller's transaction: pending → paid (once), the credits debited, each
    service extended from the expiry it was priced from, the renewal told."""
    extensions = _extensions(order)
    sites = {p: uow.sites.require(p) for p in dict.fromkeys(e.project for e in extensions)}
    if auto_renew:
        for site in sites.values():
            rules.check_auto_renew(site.type, site.created, order.source)
    if not uow.orders.mark_paid(order.id, uow.now):  # another payer got here first
        raise Refused("not_pending", f"order {order.txn} is no longer pending", "DOMAIN.md Paying")
    if order.method == "credit":
        uow.credits.spend(order.payer, order.amount, uow.now, f"order {order.txn}", order=order.id)
    uow.holdings.extend(extensions, auto_source=order.source if auto_renew else None, payer=order.payer)
    for project in {e.project for e in extensions if e.service == "pm_app"}:
        uow.holdings.force_on(project, "pm_app")  # seed 003 line 225: a PM App active forces the option on
    _renewal_notices(uow, order.id, order.txn, extensions, sites)
    uow.audit.add(uow.now, order.payer, "order_paid", order.txn, amount=order.amount, method=order.method,
                  source=order.source, auto_renew=auto_renew, items=len(extensions))  # fmt: skip
    return Paid(order=order.id, txn=order.txn, paid=order.amount, method=order.method, projects=sorted(sites))


class Renew(PlaceOrder):
    auto_renew: bool = False


class Renewed(Paid):
    quote: Quote


def renew(uow: UnitOfWork, actor: Actor, request: Renew) -> Renewed:
    """Quote, order and pay in one step, in one transaction: one payment."""
    offer, order = _place(uow, actor, request, request.source)
    paid = _settle(uow, order, request.auto_renew)
    return Renewed(quote=offer, **paid.model_dump())


class PaymentItem(Result):
    project: str
    service: str
    subject: str


class PaymentRecord(Result):
    txn: str
    kind: str
    status: str
    method: str
    source: str
    amount: int
    created: float
    paid_at: float | None
    items: list[PaymentItem]


def payments(uow: UnitOfWork, actor: Actor) -> list[PaymentRecord]:
    """The payment records of the actor's account (seed 002 line 186), newest first: manual and automatic;
    a pending order past its 15 minutes shows as expired."""
    if actor.is_operator:
        raise Refused("not_yours", "the platform operator pays for nothing", "seed 002 line 186")
    return [_record(o, uow.now) for o in uow.orders.of(actor.principal)]


def payment(uow: UnitOfWork, actor: Actor, txn: str) -> PaymentRecord:
    """One payment record of the actor's account (``not_found`` for another's: nobody learns it exists)."""
    order = uow.orders.by_txn(txn) if not actor.is_operator else None
    if order is None or order.payer != actor.principal:
        raise Refused("not_found", "no such order of yours", "seed 002 Payments")
    return _record(order, uow.now)


def _record(o: Order, now: float) -> PaymentRecord:
    return PaymentRecord(
        txn=o.txn, kind=o.kind, method=o.method, source=o.source, amount=o.amount, created=o.created,
        paid_at=o.paid_at,
        status="expired" if o.status == "pending" and rules.order_expired(o.created, now) else o.status,
        items=[PaymentItem(project=e[0], service=e[1], subject=e[2]) for e in o.items],
    )  # fmt: skip


class CancelAutoRenew(Request):
    items: Annotated[list[Item], Field(min_length=1, max_length=2000)]


class Cancelled(Result):
    cancelled: int


def cancel_auto_renew(uow: UnitOfWork, actor: Actor, request: CancelAutoRenew) -> Cancelled:
    """Stop auto-renewal of the chosen services; how many were auto-renewing."""
    items = list(dict.fromkeys(item_parts(i) for i in request.items))
    for project in dict.fromkeys(p for p, _, _ in items):
        authority.site(uow, actor, project)
    cancelled = uow.holdings.cancel_auto(items)
    authority.audit(uow, actor, "auto_renew_cancelled", actor.principal, items=len(items), cancelled=cancelled)
    return Cancelled(cancelled=cancelled)


# -- what the platform does on its own (serve's passes; the operator from the CLI) --------------------------
class Renewal(Result):
    project: str
    service: str
    subject: str
    expires: float


def auto_renew(uow: UnitOfWork, actor: Actor) -> list[Renewal]:
    """Seed 000 line 159: each auto-renewing service whose upcoming expiry is reached moves on by 30 days,
    once per cycle (a conditional write: another process that renewed it first wins); each renewal is a
    paid order of its payer, from the chosen source, recorded (kind ``auto``) and told."""
    authority.operator_only(actor, "running auto-renewal")
    renewed: list[Renewal] = []
    facts: dict[str, pricing.Facts | None] = {}
    for holding in uow.holdings.due_auto(uow.now):
        assert holding.expires is not None
        new = rules.auto_renewal(holding.expires, uow.now)
        if new is None or holding.auto_payer is None:
            continue
        if holding.project not in facts:
            found = uow.sites.get(holding.project)
            facts[holding.project] = None if found is None else pricing.facts(uow, found)
        site_facts = facts[holding.project]
        if site_facts is None:
            continue
        try:
            monthly = pricing.monthly(site_facts, holding.service, holding.subject, holding.plan)
        except Refused:
            continue  # the account or apartment is gone, or the service switched off: not renewed
        if not uow.holdings.renew_auto(holding, new):
            continue  # renewed by another process since it was read
        entry = [holding.project, holding.service, holding.subject, new, holding.plan, holding.expires]
        order = uow.orders.place(holding.auto_payer, [entry], "regular", holding.auto_source or "stripe", monthly,
                                 uow.now, {}, kind="auto", paid=True)  # fmt: skip
        extension = Extension(holding.project, holding.service, holding.subject, holding.expires, new, holding.plan)
        _renewal_notices(uow, order.id, order.txn, [extension], {holding.project: site_facts.site})
        renewed.append(Renewal(project=holding.project, service=holding.service, subject=holding.subject, expires=new))
    return renewed


def expire_orders(uow: UnitOfWork, actor: Actor) -> int:
    """Pending orders past their 15 minutes are recorded expired; how many."""
    authority.operator_only(actor, "expiring orders")
    return uow.orders.expire_older(uow.now - rules.ORDER_TTL)


# -- notices ------------------------------------------------------------------------------------------------
class NoticeView(Result):
    at: float
    project: str
    stage: int
    role: str
    recipient: str | None
    text: str


def _renewal_notices(
    uow: UnitOfWork, order: int, txn: str, extensions: list[Extension], sites: dict[str, Site]
) -> None:
    """Seed 002 row 10: a renewal is told to the installer, to the PM when "Send Renew Email To PM" is on,
    and (single-family, the installer's email setting on) to the end users."""
    for project in sorted({e.project for e in extensions}):
        site = sites[project]
        count = sum(1 for e in extensions if e.project == project)
        end_user_email = uow.accounts.end_user_email(site.installer)
        for role in rules.renewal_recipients(site.type, site.renew_notices, end_user_email):
            recipient = {"installer": site.installer, "pm": site.pm, "end_user": "end users"}[role]
            if recipient is None:
                continue
            text = f"{count} service(s) of {project} renewed (order {txn})"
            if uow.notices.raise_once(
                f"renewed:{order}:{project}:{role}", Notice(uow.now, project, 0, role, recipient, text)
            ):
                _mail_notice(uow, recipient, f"SmartPlus: {site.name} renewed", text)


def _mail_notice(uow: UnitOfWork, recipient: str | None, subject: str, text: str) -> None:
    """A notice mailed, in its transaction, to an account with a confirmed address whose Notification
    setting is on (docs/portal.md "Mail"). End users' notices stay in the ledger: the platform holds no
    address of theirs (their app shows them)."""
    if recipient is None:
        return
    login = uow.logins.get(recipient)
    if login is None or login.email_confirmed is None or uow.logins.setting(recipient, "notification") is False:
        return
    uow.mail.queue("notice", login.email, subject, text + "\n", uow.now)


def raise_notices(uow: UnitOfWork, actor: Actor) -> list[NoticeView]:
    """Expiration notices at 15, 5, 3 and 1 days to the right recipients, each once (DOMAIN.md)."""
    authority.operator_only(actor, "raising notices")
    raised: list[NoticeView] = []
    sites: dict[str, Site | None] = {}
    emails: dict[str, bool] = {}
    for holding in uow.holdings.expiring(uow.now, max(rules.NOTICE_DAYS) * rules.DAY):
        raised += _expiry_notices(uow, holding, sites, emails)
    return raised


def _expiry_notices(
    uow: UnitOfWork, holding: Holding, sites: dict[str, Site | None], emails: dict[str, bool]
) -> list[NoticeView]:
    assert holding.expires is not None
    if holding.project not in sites:
        sites[holding.project] = uow.sites.get(holding.project)
    site = sites[holding.project]
    if site is None:
        return []
    if site.installer not in emails:
        emails[site.installer] = uow.accounts.end_user_email(site.installer)
    left = holding.expires - uow.now
    stage = min(d for d in rules.NOTICE_DAYS if left <= d * rules.DAY)
    raised = []
    for role in rules.expiry_recipients(stage, site.pm_notices, site.type, emails[site.installer]):
        recipient = {"installer": site.installer, "pm": site.pm, "end_user": holding.subject}[role]
        key = f"{stage}:{site.id}:{holding.service}:{holding.subject}:{holding.expires}:{role}"
        text = f"{holding.service} for {holding.subject} in {site.id} expires in {stage} day(s)"
        if uow.notices.raise_once(key, Notice(uow.now, site.id, stage, role, recipient, text)):
            _mail_notice(uow, recipient, f"SmartPlus: {site.name} expires in {stage} day(s)", text)
            raised.append(NoticeView(at=uow.now, project=site.id, stage=stage, role=role, recipient=recipient,
                                     text=text))  # fmt: skip
    return raised


def notices_of(uow: UnitOfWork, actor: Actor, project: str) -> list[NoticeView]:
    """The notices raised for a site (stage 0: a renewal; 15, 5, 3, 1: days before an expiry)."""
    site = authority.site(uow, actor, project, read=True)
    return [
        NoticeView(at=n.at, project=n.project, stage=n.stage, role=n.role, recipient=n.recipient, text=n.text)
        for n in uow.notices.of(site.id)
    ]
