"""The portal over real HTTP (uvicorn), on SQLite and PostgreSQL, with a real SMTP server: logging in as a
security reviewer expects (lockout, emailed codes and links, Privacy Policy, rotated HttpOnly cookies), CSRF
on every form, security headers, each tenant seeing and changing only its own, hostile text shown escaped,
money moved once, a pending order expiring after 15 minutes, mail that waits for a relay that is down."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.routing import Route

from cloud_stub import portal
from cloud_stub.mail import Mailer, Relay
from cloud_stub.operations import coupons, logins, paying
from cloud_stub.portal.provider import SimulatedProvider
from tests.support.brokers import free_port
from tests.support.ledger import LedgerAt, call
from tests.support.portal import PASSWORD, TENANTS, Mailbox, PortalServer, body, code_in, link_in, portal_server


class Clock:
    """The ledger's clock, moved by the test (a lockout's 15 minutes, an order's)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server(ledger_at: LedgerAt) -> AsyncIterator[PortalServer]:
    clock = Clock()
    async with portal_server(ledger_at, clock) as served:
        served.extra["clock"] = clock
        served.extra["clients"] = []
        try:
            yield served
        finally:
            for client in served.extra["clients"]:
                await client.aclose()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page[:500]
    return found.group(1)


async def _client(server: PortalServer, **cookies: str) -> httpx.AsyncClient:
    """A browser of its own (closed with the server)."""
    client = httpx.AsyncClient(base_url=server.url, follow_redirects=True, timeout=30, cookies=cookies)
    server.extra["clients"].append(client)
    return client


async def log_in(server: PortalServer, account: str, password: str = PASSWORD) -> httpx.AsyncClient:
    """A browser logged in as ``account`` (Privacy Policy agreed)."""
    client = await _client(server)
    page = await client.get("/login")
    answer = await client.post("/login", data={"csrf": _csrf(page.text), "account": account, "password": password})
    if answer.url.path == "/login/privacy":
        answer = await client.post("/login/privacy", data={"csrf": _csrf(answer.text), "answer": "agree"})
    assert answer.url.path == "/", (answer.url, answer.text[:300])
    return client


async def test_a_login_step_by_step_with_lockout_rotation_and_headers(server: PortalServer) -> None:
    client = await _client(server)
    page = await client.get("/sites")  # not logged in: to the login, the page kept in next
    assert page.url.path == "/login"
    assert "next=%2Fsites" in str(page.url)
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    pre = page.headers["set-cookie"]
    assert "HttpOnly" in pre
    assert "SameSite=strict" in pre.replace("Strict", "strict")
    token = _csrf(page.text)
    for attempt in range(1, logins.LOCK_AFTER + 1):
        wrong = await client.post("/login", data={"csrf": token, "account": "i1", "password": f"wrong {attempt}"})
        assert wrong.status_code == 401
        assert "user name or the password is wrong" in wrong.text
    unknown = await client.post("/login", data={"csrf": token, "account": "nobody", "password": "whatever it is"})
    assert unknown.status_code == 401
    assert "user name or the password is wrong" in unknown.text
    locked = await client.post("/login", data={"csrf": token, "account": "i1", "password": PASSWORD})
    assert locked.status_code == 429
    assert "try again in 15 minutes" in locked.text
    server.extra["clock"].now += logins.LOCK_SECONDS + 1
    first = await client.post("/login", data={"csrf": token, "account": "i1", "password": PASSWORD, "next": "/sites"})
    assert first.url.path == "/login/privacy"
    cookie = first.history[0].headers["set-cookie"]
    assert "sp_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # served over plain HTTP here; behind TLS it is (docs/portal.md)
    before = client.cookies["sp_session"]
    assert (await client.get("/sites")).url.path == "/login/privacy"  # no page before the policy is answered
    agreed = await client.post("/login/privacy", data={"csrf": _csrf(first.text), "answer": "agree"})
    assert agreed.url.path == "/"
    after = client.cookies["sp_session"]
    assert after != before  # rotated at the step
    stale = await _client(server, sp_session=before)
    assert (await stale.get("/")).url.path == "/login"  # the old cookie is worth nothing
    lines = server.book.read(lambda uow: uow.audit.lines("i1"))
    actions = [line.action for line in lines]
    assert "login_locked" in actions
    assert "privacy_agreed" in actions
    assert actions.count("login") == 1
    assert all(PASSWORD not in str(line.detail) for line in lines)


async def test_disagreeing_with_the_privacy_policy_keeps_one_out(server: PortalServer) -> None:
    client = await _client(server)
    page = await client.get("/login")
    first = await client.post("/login", data={"csrf": _csrf(page.text), "account": "pm1", "password": PASSWORD})
    refused = await client.post("/login/privacy", data={"csrf": _csrf(first.text), "answer": "disagree"})
    assert refused.status_code == 403
    assert "cannot log into the platform" in refused.text
    assert (await client.get("/")).url.path == "/login"


async def test_email_two_factor_code_and_first_email_confirmation(server: PortalServer) -> None:
    call(server.book, logins.set_login, None, logins.SetLogin(account="i1", email="i1@example.com", two_factor=True))
    server.book.run(lambda uow: uow.logins.update("i1", email_confirmed=None))  # as a login made before email
    client = await _client(server)
    page = await client.get("/login")
    step = await client.post("/login", data={"csrf": _csrf(page.text), "account": "i1", "password": PASSWORD})
    assert step.url.path == "/login/code"
    mail = await server.mailbox.wait("i1@example.com", "verification code")
    code = code_in(mail)
    wrong = await client.post(
        "/login/code", data={"csrf": _csrf(step.text), "code": "000000" if code != "000000" else "1"}
    )
    assert wrong.status_code == 401
    assert "the code is wrong" in wrong.text
    step = await client.post("/login/code", data={"csrf": _csrf(step.text), "code": code})
    assert step.url.path == "/login/privacy"
    step = await client.post("/login/privacy", data={"csrf": _csrf(step.text), "answer": "agree"})
    assert step.url.path == "/login/email"
    step = await client.post("/login/email", data={"csrf": _csrf(step.text), "email": "new-i1@example.com"})
    assert "confirmation link was emailed" in step.text
    assert (await client.get("/sites")).url.path == "/login/email"
    link = link_in(await server.mailbox.wait("new-i1@example.com", "Confirm"))
    elsewhere = await _client(server)  # followed from the phone's mail app: another browser
    form = await elsewhere.get(link)
    assert "Confirm" in form.text
    confirmed = await elsewhere.post(link, data={"csrf": _csrf(form.text)})
    assert confirmed.status_code == 200
    assert (await client.get("/sites")).url.path == "/sites"  # the first browser goes on
    again = await elsewhere.post(link, data={"csrf": _csrf(form.text)})
    assert again.status_code == 409
    assert "used or expired" in again.text


async def test_a_password_reset_link_works_once_and_ends_every_session(server: PortalServer) -> None:
    logged = await log_in(server, "pm1")
    client = await _client(server)
    page = await client.get("/forgot")
    asked = await client.post("/forgot", data={"csrf": _csrf(page.text), "account": "pm1"})
    assert "If there is such an account" in asked.text
    nobody = await client.post("/forgot", data={"csrf": _csrf(page.text), "account": "nobody@example.com"})
    assert nobody.text.count("If there is such an account") == 1  # the same answer: nobody learns who exists
    link = link_in(await server.mailbox.wait("pm1@example.com", "Reset"))
    form = await client.get(link)
    short = await client.post(link, data={"csrf": _csrf(form.text), "password": "short", "again": "short"})
    assert short.status_code == 400
    assert "10 characters" in short.text
    done = await client.post(
        link, data={"csrf": _csrf(form.text), "password": "a new long secret", "again": "a new long secret"}
    )
    assert done.url.path == "/login"
    assert "The password was set" in done.text
    assert (await logged.get("/")).url.path == "/login"  # the other session ended
    used = await client.get(link)
    assert used.status_code == 410
    assert "used or expired" in used.text
    await log_in(server, "pm1", "a new long secret")


async def test_every_form_refuses_a_missing_or_foreign_csrf_token(server: PortalServer) -> None:
    client = await log_in(server, "i1")
    other = await log_in(server, "i2")
    foreign = _csrf((await other.get("/")).text)  # a valid token, of another session
    posts = [
        r
        for r in portal.ROUTES
        if isinstance(r, Route) and "POST" in (r.methods or set()) and r.path != "/webhooks/payments"
    ]  # signed by the provider instead (its own test)
    assert len(posts) > 30
    fills = {"project": "elm", "account": "pm1", "txn": "00000000000000000", "ident": "u-1", "mac": "0c1100000001",
             "token": "x", "slug": "billing"}  # fmt: skip
    for route in posts:
        path = route.path.format(**fills)
        for token in (None, foreign):
            data = {"name": "x"} if token is None else {"name": "x", "csrf": token}
            answer = await client.post(path, data=data, follow_redirects=False)
            if path in ("/login/code", "/login/privacy", "/login/email"):  # not this session's step: sent on
                assert (answer.status_code, answer.headers["location"]) == (303, "/"), path
                continue
            assert answer.status_code == 403, (path, token, answer.status_code, answer.text[:200])
    cross = await client.post("/sites/new", data={"csrf": _csrf((await client.get("/")).text), "name": "x"},
                              headers={"Origin": "https://evil.example"})  # fmt: skip
    assert cross.status_code == 403
    not_form = await client.post("/sites/new", content=b'{"name": "x"}', headers={"Content-Type": "application/json"})
    assert not_form.status_code == 415
    huge = await client.post("/sites/new", content=b"a=" + b"x" * 70_000,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert huge.status_code == 413


def _get_paths(tenant: dict[str, Any]) -> list[str]:
    return [
        "/", "/sites", f"/sites/{tenant['site']}", f"/sites/{tenant['site']}/edit", "/users", "/users/new",
        "/firmware", "/upgrades", "/upgrades/new", f"/upgrades/new?site={tenant['site']}", "/macs",
        "/subscriptions", f"/subscriptions?type=community&sites[]={tenant['site']}&all_services=on&months=1&price=1",
        "/payments", "/payments/automatic", "/credits", "/settings/time-zone", "/settings/billing",
        "/settings/customer-service", "/settings/account", "/settings/password", "/settings/coupons",
        "/settings/notification", "/settings/log", "/settings/single-family-email", "/privacy",
    ]  # fmt: skip


async def test_no_account_sees_or_changes_another_tenants(server: PortalServer) -> None:
    """Every page for each of the five roles of tenant 2 (distributor, sub-distributor, installer, property
    manager, sub-installer), asked with tenant 1's ids: never a name, id, MAC or person of tenant 1 in the
    answer; every change of tenant 1's things refused."""
    mine, theirs = TENANTS["t2"], TENANTS["t1"]
    secrets_of_t1 = [theirs["site_name"], theirs["mac"], "Alice", f"Apt {theirs['apartment']}", "pm1@example.com",
                     "si1@example.com", "Installer i1"]  # fmt: skip
    for role in ("distributor", "subdist", "installer", "pm", "sub"):
        client = await log_in(server, mine[role])
        seen = 0
        for path in _get_paths(mine) + _get_paths(theirs):
            answer = await client.get(path)
            assert answer.status_code in (200, 403, 404), (role, path, answer.status_code)
            for secret in secrets_of_t1:
                assert secret not in answer.text, (role, path, secret)
            seen += answer.status_code == 200
        assert seen > 10, role
        token = _csrf((await client.get("/")).text)
        for path, data in (
            (f"/sites/{theirs['site']}/edit", {"name": "taken", "timezone": "UTC"}),
            (f"/sites/{theirs['site']}/delete", {}),
            (f"/sites/{theirs['site']}/apartments", {"id": "x1"}),
            (f"/sites/{theirs['site']}/switch", {"service": "landline", "scope": "site", "on": "on"}),
            (f"/users/{theirs['pm']}/reset", {}),
            (f"/users/{theirs['installer']}/grant", {"permission": "regular"}),
            (f"/users/{theirs['installer']}/switch", {}),
            (f"/macs/{theirs['mac']}/remove", {}),
            ("/credits/allocate", {"account": theirs["installer"], "amount": "1"}),
        ):
            answer = await client.post(path, data={"csrf": token, **data})
            assert answer.status_code in (403, 404, 409), (role, path, answer.status_code)
            assert answer.url.path == path
    site = server.book.read(lambda uow: uow.sites.require(theirs["site"]))
    assert site.name == theirs["site_name"]
    assert server.book.read(lambda uow: uow.credits.balance(theirs["installer"])) == 500


async def test_hostile_text_is_shown_escaped_or_refused(server: PortalServer) -> None:
    client = await log_in(server, "i1")
    token = _csrf((await client.get("/sites/new")).text)
    hostile = "<script>alert(1)</script> \"quoted\" 'single'"
    made = await client.post("/sites/new", data={"csrf": token, "type": "community", "name": hostile, "timezone": "UTC",
                                                 "time_format": "24h", "date_format": "Y-M-D"})  # fmt: skip
    assert made.status_code == 200
    assert "The site was created" in made.text
    for path in ("/sites?type=community", made.url.path, "/"):
        page = (await client.get(path)).text
        assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (await client.get("/sites?type=community")).text
    bidi = await client.post("/sites/new", data={"csrf": token, "type": "community", "name": "Elm\u202eCourt",
                                                 "timezone": "UTC"})  # fmt: skip
    assert bidi.status_code == 400
    assert "U+202E is not allowed" in bidi.text
    assert "\u202e" not in bidi.text
    person = await client.post("/users/new", data={"csrf": token, "role": "pm", "id": "pm-x", "name": hostile,
                                                   "email": "x@example.com"})  # fmt: skip
    assert person.status_code == 200
    assert "<script>alert(1)</script>" not in person.text


async def test_a_card_payment_goes_through_the_provider_and_moves_money_once(server: PortalServer) -> None:
    """The order, the provider's checkout, its webhook: paid once though the webhook comes five times, four
    of them at once; a webhook unsigned, forged or stale is refused and changes nothing."""
    client = await log_in(server, "i1")
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    quoted = await client.get("/subscriptions", params={"type": "community", "sites[]": "elm", "all_services": "on",
                                                        "months": "1", "price": "1"})  # fmt: skip
    assert "Price:" in quoted.text, quoted.text[:2000]
    placed = await client.post("/subscriptions/order", data={
        "csrf": _csrf(quoted.text), "type": "community", "sites[]": "elm", "all_services": "on", "months": "1",
        "source": "stripe"})  # fmt: skip
    assert placed.url.path.startswith("/orders/")
    assert "pay it within 15 minutes" in placed.text
    txn = placed.url.path.rsplit("/", 1)[1]
    token = _csrf(placed.text)
    direct = await client.post(f"/orders/{txn}/pay", data={"csrf": token, "auto_renew": "off"})
    assert direct.status_code == 409
    assert "paid on its checkout" in direct.text
    provider = SimulatedProvider(server.book.read(lambda uow: bytes.fromhex(uow.logins.secret("csrf", "00"))))
    event = json.dumps({"txn": txn, "provider": "stripe", "auto_renew": False}).encode()
    hooks = await _client(server)
    for signature in ("", "t=1,v1=00", provider.sign(event, time.time() - 3600), provider.sign(b"{}", time.time())):
        refused = await hooks.post("/webhooks/payments", content=event, headers={"X-Signature": signature})
        assert refused.status_code == 400, signature
    assert server.book.read(lambda uow: uow.orders.by_txn(txn)).status == "pending"
    checkout = await client.post(f"/orders/{txn}/checkout", data={"csrf": token, "auto_renew": "off"})
    assert checkout.url.path == f"/provider/checkout/{txn}"
    assert "simulated payment provider" in checkout.text
    paid = await client.post(checkout.url.path, data={"csrf": _csrf(checkout.text), "auto_renew": "off"})
    assert paid.url.path == "/payments"
    assert "Paid. The services were extended." in paid.text
    again = await asyncio.gather(*(hooks.post("/webhooks/payments", content=event,
                                              headers={"X-Signature": provider.sign(event, time.time())})
                                   for _ in range(4)))  # fmt: skip
    assert [a.status_code for a in again] == [200] * 4
    records = [r for r in server.book.read(lambda uow: uow.orders.of("i1")) if r.txn == txn]
    assert [r.status for r in records] == ["paid"]
    lines = [line for line in server.book.read(lambda uow: uow.audit.lines("i1")) if line.action == "order_paid"]
    assert len(lines) == 1


async def test_a_pending_order_expires_after_15_minutes(server: PortalServer) -> None:
    client = await log_in(server, "i1")
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    placed = await client.post("/subscriptions/order", data={
        "csrf": _csrf((await client.get("/")).text), "type": "community", "sites[]": "elm", "all_services": "on",
        "months": "1", "source": "paypal"})  # fmt: skip
    txn = placed.url.path.rsplit("/", 1)[1]
    server.extra["clock"].now += 15 * 60 + 1
    late = await client.post(f"/provider/checkout/{txn}", data={"csrf": _csrf(placed.text), "auto_renew": "off"})
    assert late.status_code == 409
    assert "within 15 minutes" in late.text
    assert "within 15 minutes" in late.text
    assert "Expired" in (await client.get("/payments")).text


async def test_a_distributor_acts_for_an_installer_only_with_its_permission(server: PortalServer) -> None:
    client = await log_in(server, "d1")
    token = _csrf((await client.get("/users")).text)
    inside = await client.post("/users/i1/switch", data={"csrf": token})
    assert "acting in the portal of installer" in inside.text
    assert "Elm Court" in (await client.get("/sites")).text
    zone = await client.get("/settings/time-zone")
    await client.post("/settings/time-zone", data={"csrf": _csrf(zone.text), "value": "Europe/Paris"})
    changed = [line for line in server.book.read(lambda uow: uow.audit.lines("i1")) if line.action == "setting_changed"]
    assert [(line.actor, line.acting_for) for line in changed] == [("d1", "i1")]  # the distributor, for i1
    back = await client.post("/switch/back", data={"csrf": _csrf(inside.text)})
    assert "back in your own portal" in back.text
    installer = await log_in(server, "i1")
    setting = await installer.get("/settings/account")
    await installer.post("/settings/account", data={"csrf": _csrf(setting.text)})  # the switch off
    refused = await client.post("/users/i1/switch", data={"csrf": _csrf(back.text)})
    assert refused.status_code == 403
    assert "has not granted access" in refused.text
    actions = [line.action for line in server.book.read(lambda uow: uow.audit.lines("d1"))]
    assert "acting_for" in actions
    assert "acting_for_ended" in actions


async def test_mail_waits_for_a_relay_that_is_down(ledger_at: LedgerAt) -> None:
    book = ledger_at.open()
    try:
        book.run(lambda uow: uow.mail.queue("notice", "x@example.com", "Hello", "Body", uow.now))
        down = Mailer(book, Relay("127.0.0.1", free_port(), "a@example.com"))  # nobody listens there
        assert await asyncio.to_thread(down.send_due) == 0
        assert book.read(lambda uow: uow.mail.waiting()) == 1
        box = Mailbox().start()
        try:
            book.run(lambda uow: uow.mail.failed(1, uow.now, "made due again for the test"))
            up = Mailer(book, Relay("127.0.0.1", box.port, "a@example.com"))
            assert await asyncio.to_thread(up.send_due) == 1
            assert body(await box.wait("x@example.com", "Hello")).strip() == "Body"
            assert book.read(lambda uow: uow.mail.waiting()) == 0
        finally:
            box.stop()
    finally:
        book.close()


async def test_expiry_notices_are_mailed_to_whom_the_settings_name(server: PortalServer) -> None:
    """Seed 002 row 9: five days before an expiry, the installer and (Send Expiration Email to PM on) the
    property manager are mailed; an account whose Notification is off is not; each notice once."""
    from cloud_stub.ledger.holdings import Extension
    from cloud_stub.operations import paying
    from cloud_stub.operations.authority import OPERATOR

    soon = server.clock() + 4 * 86_400
    server.book.run(lambda uow: uow.holdings.extend([Extension("elm", "landline", "project", None, soon, None)],
                                                    auto_source=None, payer="i1"))  # fmt: skip
    server.book.run(lambda uow: uow.holdings.extend([Extension("oak", "landline", "project", None, soon, None)],
                                                    auto_source=None, payer="i2"))  # fmt: skip
    server.book.run(lambda uow: uow.logins.set_setting("pm2", "notification", False))
    raised = server.book.run(lambda uow: paying.raise_notices(uow, OPERATOR))
    assert {(n.project, n.recipient) for n in raised} == {("elm", "i1"), ("elm", "pm1"), ("oak", "i2"), ("oak", "pm2")}
    server.mailer.poke()
    for who in ("i1", "pm1", "i2"):
        mail = await server.mailbox.wait(f"{who}@example.com", "expires in 5 day(s)")
        assert "landline" in body(mail)
    assert server.book.run(lambda uow: paying.raise_notices(uow, OPERATOR)) == []  # once
    assert server.book.read(lambda uow: uow.mail.waiting()) == 0
    assert [m["To"] for m in server.mailbox.messages].count("pm2@example.com") == 0


async def test_automatic_payments_lists_and_cancels_auto_renewal(server: PortalServer) -> None:
    from cloud_stub.ledger.holdings import Extension

    soon = server.clock() + 20 * 86_400
    server.book.run(lambda uow: uow.holdings.extend([Extension("elm", "landline", "project", None, soon, None)],
                                                    auto_source="stripe", payer="i1"))  # fmt: skip
    client = await log_in(server, "i1")
    page = await client.get("/payments/automatic")
    assert "Services renewing themselves" in page.text
    assert "elm/landline/project" in page.text
    other = await log_in(server, "i2")
    assert "elm/landline/project" not in (await other.get("/payments/automatic")).text
    refused = await other.post("/payments/automatic/cancel", data={"csrf": _csrf((await other.get("/")).text),
                                                                   "items[]": "elm/landline/project"})  # fmt: skip
    assert refused.status_code == 403
    done = await client.post(
        "/payments/automatic/cancel", data={"csrf": _csrf(page.text), "items[]": "elm/landline/project"}
    )
    assert "Auto-renewal was cancelled." in done.text
    assert "No service renews itself." in done.text
    held = server.book.read(lambda uow: uow.holdings.of("elm"))
    assert [h.auto_renew for h in held if h.service == "landline"] == [False]


async def test_an_installer_edits_and_deletes_its_property_manager(server: PortalServer) -> None:
    """Edit Property Manager (name, email, two-factor) and Delete: the PM can no longer log in, its session
    ends, it is no site's PM any more, it is no longer listed; another installer can do neither."""
    pm = await log_in(server, "pm1")
    client = await log_in(server, "i1")
    form = await client.get("/users/pm1/edit")
    assert form.status_code == 200
    assert "PM pm1" in form.text
    other = await log_in(server, "i2")
    assert (await other.get("/users/pm1/edit")).status_code == 403
    token = _csrf(form.text)
    edited = {"csrf": token, "name": "Paula <b>M</b>", "email": "paula@example.com", "two_factor": "on"}
    saved = await client.post("/users/pm1/edit", data=edited)
    assert saved.url.path == "/users"
    assert "Paula &lt;b&gt;M&lt;/b&gt;" in saved.text
    login = server.book.read(lambda uow: uow.logins.get("pm1"))
    assert login is not None
    assert (login.email, login.two_factor) == ("paula@example.com", True)
    refused = await other.post("/users/pm1/delete", data={"csrf": _csrf((await other.get("/")).text)})
    assert refused.status_code == 403
    deleted = await client.post("/users/pm1/delete", data={"csrf": token})
    assert "can no longer log in" in deleted.text
    assert "Paula" not in deleted.text
    assert (await pm.get("/")).url.path == "/login"
    page = await client.get("/login")  # logged in: sent on
    assert page.url.path == "/"
    fresh = await _client(server)
    attempt = await fresh.post("/login", data={"csrf": _csrf((await fresh.get("/login")).text), "account": "pm1",
                                               "password": PASSWORD})  # fmt: skip
    assert attempt.status_code == 401
    assert server.book.read(lambda uow: uow.sites.require("elm")).pm is None
    assert "account_removed" in [line.action for line in server.book.read(lambda uow: uow.audit.lines("i1"))]


class _Forms(HTMLParser):
    """The POST forms of a page: their action and their fields' names, kinds and first values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[tuple[str, str, str]]]] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "form" and found.get("method") == "post":
            self.forms.append((found.get("action", ""), []))
        elif self.forms and tag == "input" and found.get("name"):
            self.forms[-1][1].append((found["name"], found.get("type", "text"), found.get("value", "")))
        elif self.forms and tag == "select":
            self._select = found.get("name")
        elif self.forms and tag == "option" and self._select is not None:
            self.forms[-1][1].append((self._select, "select", found.get("value", "")))
            self._select = None


HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>\u202e"
FORM_PAGES = ("/sites/new", "/sites/elm", "/sites/elm/edit", "/users/new", "/users/pm1/edit", "/settings/billing",
              "/settings/customer-service", "/settings/service-provider", "/credits")  # fmt: skip


async def test_every_text_field_of_every_form_takes_hostile_text_safely(server: PortalServer) -> None:
    """Script, quotes and U+202E typed into every text field of every form: refused, or kept and shown
    escaped on every page; never a server error."""
    client = await log_in(server, "i1")
    tried = 0
    for path in FORM_PAGES:
        parser = _Forms()
        parser.feed((await client.get(path)).text)
        for action, fields in parser.forms:
            if action in ("/logout", "/switch/back"):
                continue
            data: dict[str, str] = {}
            for name, kind, value in fields:
                if kind in ("text", "email", "tel", "search"):
                    data[name] = HOSTILE
                    tried += 1
                elif kind not in ("checkbox", "radio") or name not in data:
                    data.setdefault(name, value)
            answer = await client.post(action, data=data)
            assert answer.status_code < 500, (path, action, answer.status_code)
            assert "<script>alert(1)</script>" not in answer.text, (path, action)
            assert "\u202e" not in answer.text, (path, action)
    assert tried > 20
    for path in ("/", "/sites?type=community", "/sites/elm", "/users", "/settings/billing", "/credits"):
        page = (await client.get(path)).text
        assert "<script>alert(1)</script>" not in page
        assert "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")


async def test_the_log_setting_reaches_every_site_of_the_installer(server: PortalServer) -> None:
    """Setting > Log Setting, Visitor Call Snapshots off: every site of the installer's now tells its devices
    so (visitor_call_snapshot in the settings they are issued); another installer's sites keep theirs."""
    client = await log_in(server, "i1")
    page = await client.get("/settings/log")
    assert 'name="snapshots" value="on" checked' in page.text  # on by default (seed 002)
    saved = await client.post("/settings/log", data={"csrf": _csrf(page.text)})  # the box unticked
    assert "Saved." in saved.text
    assert server.book.read(lambda uow: uow.sites.require("elm")).settings["visitor_call_snapshot"] is False
    assert "visitor_call_snapshot" not in server.book.read(lambda uow: uow.sites.require("oak")).settings


async def test_a_distributor_pays_for_an_installers_site(server: PortalServer) -> None:
    """Seed 000 lines 147-149 for a distributor: the installer first, then its sites; the order is the
    distributor's own; another distributor's installer is not offered and cannot be chosen."""
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    client = await log_in(server, "d1")
    page = await client.get("/subscriptions", params={"installer": "i2"})  # not its installer: its own shown
    assert "Elm Court" in page.text
    assert "Oak House" not in page.text
    assert 'value="i2"' not in page.text
    quoted = await client.get("/subscriptions", params={"installer": "i1", "type": "community", "sites[]": "elm",
                                                        "all_services": "on", "months": "1", "price": "1"})  # fmt: skip
    assert "Price: $" in quoted.text
    placed = await client.post("/subscriptions/order", data={
        "csrf": _csrf(quoted.text), "type": "community", "installer": "i1", "sites[]": "elm", "all_services": "on",
        "months": "1", "source": "stripe"})  # fmt: skip
    assert placed.url.path.startswith("/orders/")
    txn = placed.url.path.rsplit("/", 1)[1]
    assert server.book.read(lambda uow: uow.orders.by_txn(txn)).payer == "d1"
    stolen = await client.post("/subscriptions/order", data={
        "csrf": _csrf(quoted.text), "type": "community", "sites[]": "oak", "all_services": "on", "months": "1",
        "source": "stripe"})  # fmt: skip
    assert stolen.status_code == 403


async def test_a_property_manager_is_assigned_to_the_sites_ticked(server: PortalServer) -> None:
    client = await log_in(server, "i1")
    token = _csrf((await client.get("/users/pm1/edit")).text)
    base = {"csrf": token, "name": "PM pm1", "email": "pm1@example.com", "assigning": "on"}
    await client.post("/users/pm1/edit", data=base)  # nothing ticked: no longer Elm Court's PM
    assert server.book.read(lambda uow: uow.sites.require("elm")).pm is None
    await client.post("/users/pm1/edit", data={**base, "sites[]": "elm"})
    assert server.book.read(lambda uow: uow.sites.require("elm")).pm == "pm1"
    stolen = await client.post("/users/pm1/edit", data={**base, "sites[]": ["elm", "oak"]})
    assert stolen.status_code < 500
    assert server.book.read(lambda uow: uow.sites.require("oak")).pm == "pm2"  # not its site: untouched


async def test_the_checkout_shows_the_billing_information(server: PortalServer) -> None:
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    client = await log_in(server, "i1")
    asked = {"type": "community", "sites[]": "elm", "all_services": "on", "months": "1", "price": "1"}
    assert "No billing information yet" in (await client.get("/subscriptions", params=asked)).text
    page = await client.get("/settings/billing")
    missing = await client.post("/settings/billing", data={"csrf": _csrf(page.text), "company": "Luna Ltd"})
    assert missing.status_code == 400
    assert "ATTN: this is needed" in missing.text
    filled = {"csrf": _csrf(page.text), "company": "Luna Ltd", "attn": "Luna", "address": "1 Elm St", "tel": "+1 555",
              "email": "bills@example.com"}  # fmt: skip
    assert "Saved." in (await client.post("/settings/billing", data=filled)).text
    quoted = (await client.get("/subscriptions", params=asked)).text
    assert "Luna Ltd, attn. Luna" in quoted
    assert "bills@example.com" in quoted


async def test_a_new_email_address_is_used_once_confirmed(server: PortalServer) -> None:
    client = await log_in(server, "pm1")
    page = await client.get("/settings/notification")
    saved = await client.post("/settings/notification", data={"csrf": _csrf(page.text), "value": "on",
                                                              "email": "pm1-new@example.com"})  # fmt: skip
    assert "Saved." in saved.text
    login = server.book.read(lambda uow: uow.logins.get("pm1"))
    assert login is not None
    assert login.email == "pm1@example.com"
    link = link_in(await server.mailbox.wait("pm1-new@example.com", "Confirm"))
    form = await client.get(link)
    await client.post(link, data={"csrf": _csrf(form.text)})
    login = server.book.read(lambda uow: uow.logins.get("pm1"))
    assert login is not None
    assert login.email == "pm1-new@example.com"


async def test_sub_installers_share_their_main_accounts_data(server: PortalServer) -> None:
    """Seed 002: several sub-installer logins of one main account see the same data; a site one makes is the
    main installer's."""
    sub = await log_in(server, "si1")
    page = await sub.get("/sites/new?type=commercial")
    fields = {"csrf": _csrf(page.text), "type": "commercial", "name": "Annex", "timezone": "UTC", "time_format": "24h",
              "date_format": "Y-M-D"}  # fmt: skip
    made = await sub.post("/sites/new", data=fields)
    assert "The site was created." in made.text
    main = await log_in(server, "i1")
    assert "Annex" in (await main.get("/sites?type=commercial")).text
    assert "Elm Court" in (await sub.get("/sites?type=community")).text
    annex = [s for s in server.book.read(lambda uow: uow.sites.listed(installers=["i1"])) if s.name == "Annex"]
    assert [s.installer for s in annex] == ["i1"]


async def test_a_password_spray_from_one_address_is_throttled(server: PortalServer) -> None:
    """Ten refused logins across ten accounts from one address (no account locked: one try each): the
    eleventh login from there waits, even with the right password."""
    client = await _client(server)
    token = _csrf((await client.get("/login")).text)
    for n in range(10):
        wrong = await client.post("/login", data={"csrf": token, "account": f"someone-{n}", "password": "Summer2026!"})
        assert wrong.status_code == 401
    held = await client.post("/login", data={"csrf": token, "account": "i1", "password": PASSWORD})
    assert held.status_code == 429
    assert "Too many attempts from here" in held.text
    login = server.book.read(lambda uow: uow.logins.get("i1"))
    assert login is not None
    assert login.failures == 0


def test_the_throttle_forgets_a_window_that_has_passed() -> None:
    from cloud_stub.portal.guard import Throttle

    throttle = Throttle(limit=3, window=60.0)
    for second in (0.0, 1.0, 2.0):
        assert throttle.wait("10.0.0.1", second) is None
        throttle.count("10.0.0.1", second)
    assert throttle.wait("10.0.0.1", 30.0) == pytest.approx(30.0)
    assert throttle.wait("10.0.0.2", 30.0) is None  # another address
    assert throttle.wait("10.0.0.1", 60.5) is None  # the first failure has left the window


async def test_a_session_ends_after_12_hours_and_is_forgotten(server: PortalServer) -> None:
    from cloud_stub.ledger.logins import portal_sessions

    first = await log_in(server, "pm1")
    server.extra["clock"].now += logins.SESSION_SECONDS + 1
    assert (await first.get("/")).url.path == "/login"
    await log_in(server, "i1")  # any login forgets ended sessions

    def count(uow: Any) -> int:
        return len(uow.tx.all(sa.select(portal_sessions.c.digest).where(portal_sessions.c.account == "pm1")))

    assert server.book.read(count) == 0


async def test_a_coupon_pays_one_order_it_covers_once(server: PortalServer) -> None:
    """A distributor gives its installer a coupon (another's installer refused); the installer's coupon
    order is paid with its code once; a wrong, another's or too small coupon is refused; Coupon Details
    lists it Normal, then Used."""
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    distributor = await log_in(server, "d1")
    page = await distributor.get("/settings/coupons")
    given = await distributor.post("/settings/coupons", data={"csrf": _csrf(page.text), "account": "i1",
                                                              "value": "500", "days": "30"})  # fmt: skip
    assert "The coupon was given." in given.text
    refused = await distributor.post("/settings/coupons", data={"csrf": _csrf(page.text), "account": "i2",
                                                                "value": "500", "days": "30"})  # fmt: skip
    assert refused.status_code == 403
    small = call(server.book, coupons.issue, None, coupons.IssueCoupon(account="i1", value=1))
    theirs = call(server.book, coupons.issue, None, coupons.IssueCoupon(account="i2", value=100_000))
    client = await log_in(server, "i1")
    listed = await client.get("/settings/coupons")
    code = re.findall(r"SP(?:-[0-9A-Z]{4}){3}", listed.text)
    assert small.code in code
    assert len(code) == 2
    good = next(c for c in code if c != small.code)
    placed = await client.post("/subscriptions/order", data={
        "csrf": _csrf(listed.text), "type": "community", "sites[]": "elm", "all_services": "on", "months": "1",
        "source": "coupon"})  # fmt: skip
    txn = placed.url.path.rsplit("/", 1)[1]
    token = _csrf(placed.text)
    for wrong, why in (("", "give the code"), ("SP-AAAA-BBBB-CCCC", "no such coupon"), (theirs.code, "no such coupon"),
                       (small.code, "covers 1")):  # fmt: skip
        answer = await client.post(f"/orders/{txn}/pay", data={"csrf": token, "coupon": wrong, "auto_renew": "off"})
        assert answer.status_code in (400, 409), wrong
        assert why in answer.text, (wrong, why)
    paid = await client.post(f"/orders/{txn}/pay", data={"csrf": token, "coupon": good.lower(), "auto_renew": "off"})
    assert "Paid. The services were extended." in paid.text
    used = await client.get("/settings/coupons?state=used")
    assert good in used.text
    again = call(server.book, paying.place, "i1", paying.PlaceOrder(sites=["elm"], months=1, source="coupon"))
    twice = await client.post(f"/orders/{again.txn}/pay", data={"csrf": token, "coupon": good, "auto_renew": "off"})
    assert twice.status_code == 409
    assert "used already" in twice.text


def test_sent_mail_is_forgotten_after_30_days(ledger_at: LedgerAt) -> None:
    from cloud_stub.mail import KEEP_SENT

    clock = Clock()
    book = ledger_at.open(clock)
    try:
        book.run(lambda uow: uow.mail.queue("code", "x@example.com", "Code", "123456", uow.now))
        book.run(lambda uow: uow.mail.sent(1, uow.now))
        mailer = Mailer(book, Relay("127.0.0.1", free_port(), "a@example.com"))
        mailer.send_due()
        assert len(book.read(lambda uow: uow.mail.to("x@example.com"))) == 1  # kept a while
        clock.now += KEEP_SENT + 1
        mailer.send_due()
        assert book.read(lambda uow: uow.mail.to("x@example.com")) == []
    finally:
        book.close()
