"""Card and PayPal payments through a payment provider: where a real provider plugs in (docs/portal.md
"Payment providers"), and the built-in one that simulates a hosted checkout and its webhook.

A provider is two things: a checkout page the payer is sent to (:meth:`Provider.checkout_url`), and a
webhook it calls when the payment succeeded, which the portal verifies (:meth:`Provider.verify`) before
settling the order (``paying.provider_paid``: pending, within 15 minutes, once). A webhook delivered twice
settles once; its second delivery is answered 200 all the same, as providers expect.

The built-in :class:`SimulatedProvider` hosts its "checkout" inside the portal (``/provider/checkout/TXN``,
marked as a simulation): Pay there signs an event with the webhook secret (HMAC-SHA256, as Stripe's
``Stripe-Signature`` does) and delivers it to ``/webhooks/payments`` over real HTTP, then sends the payer back
to the portal's Payments page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from typing import Any, Final, NamedTuple, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from cloud_stub.errors import Refused
from cloud_stub.operations import paying
from cloud_stub.operations.authority import OPERATOR
from cloud_stub.portal.web import Portal, checked, refusal_text

SIGNATURE_HEADER: Final = "X-Signature"
TOLERANCE: Final = 300.0  # seconds a signed event is good for (replays of old events are refused)
MAX_EVENT: Final = 4096


class Paid(NamedTuple):
    """What a verified webhook says: this order was paid."""

    txn: str
    provider: str
    auto_renew: bool


class Provider(Protocol):
    """A payment provider: a real one implements these two with its own API (docs/portal.md)."""

    def checkout_url(self, base: str, txn: str, auto_renew: bool) -> str:
        """Where the payer pays ``txn``."""
        ...

    def verify(self, body: bytes, signature: str, now: float) -> Paid | None:
        """The payment a webhook reports, if its signature is the provider's and recent; else None."""
        ...


class SimulatedProvider:
    """The built-in provider: a checkout page of the portal's own and a signed webhook."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def checkout_url(self, base: str, txn: str, auto_renew: bool) -> str:
        return f"{base}/provider/checkout/{txn}?auto_renew={'on' if auto_renew else 'off'}"

    def sign(self, body: bytes, now: float) -> str:
        stamp = str(int(now))
        mac = hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return f"t={stamp},v1={mac}"

    def verify(self, body: bytes, signature: str, now: float) -> Paid | None:
        parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
        stamp, given = parts.get("t", ""), parts.get("v1", "")
        if not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE:
            return None
        expected = hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            return None
        try:
            event = json.loads(body)
            return Paid(str(event["txn"]), str(event["provider"]), bool(event.get("auto_renew", False)))
        except (ValueError, KeyError, TypeError):
            return None


def _provider(portal: Portal) -> SimulatedProvider:
    return SimulatedProvider(portal.secret())


# -- the webhook ---------------------------------------------------------------------------------------------
async def webhook(request: Request) -> Response:
    """``POST /webhooks/payments``: a provider reports a payment. 400 unsigned or stale, 200 settled (or
    settled before), 409 refused by the ledger's rules (an expired order: the provider refunds it)."""
    portal: Portal = request.app.state.portal
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_EVENT:
            return JSONResponse({"error": "an event is at most 4 KiB"}, status_code=413)
    paid = _provider(portal).verify(body, request.headers.get(SIGNATURE_HEADER, ""), time.time())
    if paid is None:
        return JSONResponse({"error": "not signed by the provider, or stale"}, status_code=400)
    try:
        asked = paying.ProviderPaid(txn=paid.txn, provider=paid.provider, auto_renew=paid.auto_renew)
        await run_in_threadpool(portal.book.run, lambda uow: paying.provider_paid(uow, OPERATOR, asked))
    except Refused as exc:
        if exc.rule == "not_pending" and await _already_paid(portal, paid.txn):
            return JSONResponse({"txn": paid.txn, "status": "paid"})
        return JSONResponse({"error": refusal_text(exc), "rule": exc.rule}, status_code=409)
    except ValueError as exc:
        return JSONResponse({"error": refusal_text(exc)}, status_code=400)
    portal.poke()
    return JSONResponse({"txn": paid.txn, "status": "paid"})


async def _already_paid(portal: Portal, txn: str) -> bool:
    order = await run_in_threadpool(portal.book.read, lambda uow: uow.orders.by_txn(txn))
    return bool(order.status == "paid")


# -- the simulated checkout ------------------------------------------------------------------------------------
def _txn(request: Request) -> str:
    return str(request.path_params["txn"])[:20]


async def checkout_page(request: Request) -> Response:
    """The simulated provider's hosted page (it would be the provider's own site)."""
    portal: Portal = request.app.state.portal
    who = await portal.who(request)
    if isinstance(who, Response):
        return who
    auto = request.query_params.get("auto_renew") == "on"
    return portal.render(request, "checkout.html", who, title="Simulated checkout", txn=_txn(request), auto=auto)


async def checkout_pay(request: Request) -> Response:
    """Pay on the simulated checkout: the provider's webhook is delivered (over HTTP, to this portal), then
    the payer is sent back."""
    portal: Portal = request.app.state.portal
    got = await checked(request)
    if isinstance(got, Response):
        return got
    who, form = got
    txn = _txn(request)
    try:
        record = await run_in_threadpool(portal.book.read, lambda uow: paying.payment(uow, who.actor, txn))
        source = record.source
    except Refused:
        return portal.render(
            request, "refused.html", who, code=404, title="Checkout", message="No such order of yours."
        )
    event = json.dumps({"txn": txn, "provider": source, "auto_renew": form.get("auto_renew") == "on"}).encode()
    base = str(request.base_url).rstrip("/")
    answer = await run_in_threadpool(_deliver, _provider(portal), f"{base}/webhooks/payments", event)
    if answer.get("status") != "paid":
        return portal.render(request, "refused.html", who, code=409, title="Checkout",
                             message=f"The payment was not taken: {answer.get('error', 'refused')}")  # fmt: skip
    return RedirectResponse("/payments?done=paid", 303)


def _deliver(provider: SimulatedProvider, url: str, event: bytes) -> dict[str, Any]:
    """The provider's side: the signed event POSTed to the webhook, its answer read."""
    sent = urllib.request.Request(url, data=event, method="POST", headers={  # noqa: S310 -- our own http URL
        "Content-Type": "application/json", SIGNATURE_HEADER: provider.sign(event, time.time())})  # fmt: skip
    try:
        with urllib.request.urlopen(sent, timeout=20) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
    return answer
