"""Subscriptions, Payments and Credit Logs (seed 000 lines 147-189, seed 001 "Subscription", "Credit Logs",
seed 002 "Subscriptions"): choose the sites (or all) and services (or All), see the price, order (pending
for 15 minutes), pay with credits or through the payment provider; the payment records; credits bought,
allocated down the chain and logged.

Card and PayPal payments go through :mod:`cloud_stub.portal.provider` (a simulated checkout, the place a
real provider plugs in); credits and coupons are settled here at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Final

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import credits, logins, overview, paying
from cloud_stub.operations.authority import Actor
from cloud_stub.portal import listing
from cloud_stub.portal.guard import as_bool
from cloud_stub.portal.provider import SimulatedProvider
from cloud_stub.portal.site_pages import TYPES
from cloud_stub.portal.web import Portal, action, checked, page, refusal_text

SOURCES: Final = (("credit", "Credits"), ("stripe", "Card (Stripe)"), ("paypal", "PayPal"), ("coupon", "Coupon"))
MONTHS: Final = tuple((str(n), f"{n} month{'s' if n > 1 else ''}") for n in (1, 3, 6, 12, 24))


def _list(form: Mapping[str, str], name: str) -> list[str]:
    return [v for v in form.get(f"{name}[]", "").split("\n") if v]


def _selection(form: Mapping[str, str], rows: list[overview.SiteRow] | None = None) -> paying.Selection:
    """The form's choice as the operation's selection: the sites ticked (or "All" of the type), the
    services ticked (or All), months or a day to renew to."""
    sites = _list(form, "sites")
    if form.get("all_sites") == "on" and rows is not None:
        sites = [r.id for r in rows if r.type == form.get("type")]
    services = [] if form.get("all_services") == "on" else _list(form, "services")
    renew_to = form.get("renew_to", "").strip()
    return paying.Selection(
        sites=sites or None, items=None, services=services,
        months=None if renew_to else int(months) if (months := form.get("months", "1")).isdigit() else 1,
        renew_to=date.fromisoformat(renew_to) if renew_to else None,
    )  # fmt: skip


def _chooser(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    """Seed 000 lines 147-149: (a distributor: the installer, then) the project type, the sites or all, the
    services or All, how long; the price."""
    rows = overview.site_rows(uow, actor)
    installers = (
        sorted({r.installer for r in rows}) if actor.principal_role in ("distributor", "sub_distributor") else []
    )
    installer = request.query_params.get("installer", "")
    if installers:
        installer = installer if installer in installers else installers[0]
        rows = [r for r in rows if r.installer == installer]
    kind = request.query_params.get("type", "")
    types = [(code, text) for code, text in TYPES if any(r.type == code for r in rows)]
    kind = kind if kind in dict(types) else (types[0][0] if types else "community")
    services = [o.service for o in rules.CATALOGUE[kind] if o.monthly > 0]
    asked = {k: "\n".join(request.query_params.getlist(k)) for k in request.query_params}
    quote, problem = None, ""
    if "price" in asked:  # the price first (seed 000 lines 147-149): a GET, nothing changes
        try:
            quote = paying.quote(uow, actor, _selection(asked, rows))
        except (Refused, ValidationError, ValueError) as exc:
            problem = refusal_text(exc)
    billing = logins.settings(uow, actor, "billing") if quote is not None else None
    return {"installers": installers, "installer": installer, "billing": billing,
            "types": types, "kind": kind, "sites": [r for r in rows if r.type == kind], "services": services,
            "sources": SOURCES, "months": MONTHS, "quote": quote, "problem": problem, "asked": asked}  # fmt: skip


subscriptions = page("subscriptions.html", "Subscriptions")(_chooser)


@action("subscriptions.html", "Subscriptions", then=lambda _r, placed: f"/orders/{placed.txn}", done="order_placed",
        again=_chooser)  # fmt: skip
def place_order(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> paying.Placed:
    rows = overview.site_rows(uow, actor)
    selection = _selection(form, rows)
    return paying.place(uow, actor, paying.PlaceOrder(**selection.model_dump(), source=form.get("source", "")))


def _txn(request: Request) -> str:
    return str(request.path_params["txn"])[:20]


def _order_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    record = paying.payment(uow, actor, _txn(request))
    return {"order": record, "pay_by": record.created + rules.ORDER_TTL, "now": uow.now}


order_page = page("order.html", "Order")(_order_context)


PROVIDERS: Final = ("stripe", "paypal")  # paid on the provider's checkout (cloud_stub/portal/provider.py)


@action("order.html", "Order", then=lambda _r, _p: "/payments", done="paid", again=_order_context)
def pay_order(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> paying.Paid:
    """Credits and coupons are taken here; a card or PayPal goes through its provider's checkout."""
    record = _order_context(uow, actor, request)["order"]
    if record.source in PROVIDERS:
        raise Refused("use_checkout", f"an order paid by {record.source} is paid on its checkout", "docs/portal.md")
    code = form.get("coupon", "").strip() or None
    if record.source == "coupon" and code is None:
        raise ValueError("Coupon code: give the code of one of your coupons (Setting > Coupon Details)")
    return paying.pay(uow, actor, paying.Pay(txn=_txn(request), auto_renew=as_bool(form, "auto_renew"), coupon=code))


async def to_checkout(request: Request) -> Response:
    """The order's provider checkout, for a card or PayPal order."""
    portal: Portal = request.app.state.portal
    got = await checked(request)
    if isinstance(got, Response):
        return got
    _, form = got
    base = str(request.base_url).rstrip("/")
    checkout = SimulatedProvider(portal.secret()).checkout_url(base, _txn(request), as_bool(form, "auto_renew"))
    return RedirectResponse(checkout, 303)


# -- Payments -------------------------------------------------------------------------------------------------
def _payments_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    automatic = request.url.path.endswith("/automatic")
    records = [p for p in paying.payments(uow, actor) if (p.kind == "auto") == automatic]
    status = request.query_params.get("status", "")
    if status in ("pending", "paid", "expired"):
        records = [p for p in records if p.status == status]
    rows, pages = listing.paged(records, request)
    renewing = overview.auto_renewing(uow, actor) if automatic else []
    return {"rows": rows, "pages": pages, "automatic": automatic, "status": status, "renewing": renewing,
            "query": listing.query_maker(request)}  # fmt: skip


payments = page("payments.html", "Payments")(_payments_context)
automatic_payments = page("payments.html", "Automatic Payments")(_payments_context)


@action("payments.html", "Automatic Payments", then=lambda _r, _c: "/payments/automatic", done="auto_cancelled",
        again=_payments_context)  # fmt: skip
def cancel_auto(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> paying.Cancelled:
    return paying.cancel_auto_renew(uow, actor, paying.CancelAutoRenew(items=_list(form, "items")))


# -- Credit Logs ----------------------------------------------------------------------------------------------------
def _credits_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    log = credits.credit_log(uow, actor, credits.CreditLogQuery())
    lines, pages = listing.paged(list(reversed(log.log)), request)
    below = [(p.id, p.name) for p in overview.people(uow, actor)] if actor.principal_role != "pm" else []
    return {"log": log, "lines": lines, "pages": pages, "query": listing.query_maker(request),
            "below": below, "buyer": actor.role == "distributor"}  # fmt: skip


credit_logs = page("credits.html", "Credit Logs")(_credits_context)


@action("credits.html", "Credit Logs", then=lambda _r, _b: "/credits", done="credits_bought", again=_credits_context)
def buy_credits(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> credits.Balance:
    return credits.buy(
        uow, actor, credits.BuyCredits(amount=form.get("amount", ""), source=form.get("source", "stripe"))
    )


@action("credits.html", "Credit Logs", then=lambda _r, _a: "/credits", done="allocated", again=_credits_context)
def allocate(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> credits.Allocated:
    return credits.allocate(
        uow, actor, credits.Allocate(account=form.get("account", ""), amount=form.get("amount", ""))
    )
