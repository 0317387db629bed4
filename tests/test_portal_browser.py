"""The portal in a real browser: Debian's chromium driven by Playwright, against the portal served by uvicorn
with a real SMTP server. An installer logs in with its emailed code, creates a site, adds an apartment and a
device, renews an office's door with credits, stages a phased upgrade and sees it pause when a device fails;
every page of every role without a console error (a CSP violation is one), without a serious or critical
axe-core violation, every control reachable by keyboard; hostile text never runs.

Screenshots of the dashboard, the checkout and the upgrade list are taken on the way; with
``PORTAL_SCREENSHOTS=docs/screenshots`` they are written there (the README shows them)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
from playwright.async_api import Browser, Page

from cloud_stub.operations import authority, ingest, logins, sites, upgrades
from cloud_stub.operations.authority import OPERATOR
from tests.support.browser import CHROMIUM, SERIOUS, log_in, opened, shot
from tests.support.ledger import LedgerAt, add_firmware, call
from tests.support.portal import TENANTS, PortalServer, portal_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PortalServer]:
    async with portal_server(LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db")) as served:
        yield served


async def test_an_installer_at_work(server: PortalServer, browser: Browser, tmp_path: Path) -> None:
    call(server.book, logins.set_login, None, logins.SetLogin(account="i1", email="i1@example.com", two_factor=True))
    # The distributor registered the indoor monitor's MAC (seed 002 "Prior to the Management").
    call(server.book, sites.add_device, "d1", sites.AddDevice(mac="0c1100000033", distributor="d1", model="IT83"))
    watched = await opened(browser, server)
    page = await log_in(watched, server, "i1")
    assert await page.get_by_role("heading", name="Dashboard").is_visible()
    await shot(page, "dashboard", tmp_path)

    # A community site, an apartment with its indoor monitor, the device in the site's page.
    await page.get_by_role("link", name="+ Add Community Site").click()
    await page.get_by_role("textbox", name="Name (required)").fill("Birch Gardens")
    await page.get_by_label("Time Zone").select_option("Europe/Paris")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("The site was created.").wait_for()
    await page.get_by_text("Add an apartment").click()
    await page.locator("#f-apt-id").fill("c303")
    await page.locator("#f-apt-name").fill("Apt 303")
    await page.get_by_label("Indoor monitor MAC").fill("0c:11:00:00:00:33")
    await page.get_by_label("Indoor monitor name").fill("Monitor 303")
    await page.get_by_role("button", name="Add apartment").click()
    await page.get_by_text("The apartment was added.").wait_for()
    assert await page.get_by_role("cell", name="Apt 303", exact=True).is_visible()
    assert await page.get_by_role("cell", name="0c1100000033", exact=True).is_visible()

    # An office created now pays with credits: its second door renewed to a day, the price, the order, paid.
    await watched.go("/sites/new?type=commercial")
    await page.get_by_role("textbox", name="Name (required)").fill("Head Office")
    await page.get_by_label("Doors").fill("front back")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("The site was created.").wait_for()
    await watched.go("/subscriptions?type=commercial")
    await page.get_by_label("Head Office").check()
    await page.get_by_label("Or renew to").fill(time.strftime("%Y-%m-%d", time.gmtime(time.time() + 90 * 86400)))
    await page.get_by_role("button", name="See the price").click()
    price = await page.get_by_role("heading", name=re.compile(r"Price: \d+ credits")).inner_text()
    amount = int(re.findall(r"\d+", price)[0])
    await page.get_by_role("button", name="Place the order").click()
    await page.get_by_text("pay it within 15 minutes").wait_for()
    await shot(page, "checkout", tmp_path)
    await page.get_by_role("button", name=re.compile("^Pay ")).click()
    await page.get_by_text("Paid. The services were extended.").wait_for()
    assert server.book.read(lambda uow: uow.credits.balance("i1")) == 500 - amount

    # A phased upgrade of two R29s, a wave at a time: the first fails, the rollout pauses.
    call(server.book, lambda uow, who, _: _place_second(uow), "i1", None)
    image = tmp_path / "fw.bin"
    image.write_bytes(b"firmware" * 100)
    add_firmware(server.book, tmp_path / "images", image)
    await watched.go("/upgrades/new")
    await page.get_by_label("Site").select_option(label=TENANTS["t1"]["site_name"])
    await page.get_by_label("Model / Firmware").select_option(label="R29 29.30.10.1")
    await page.get_by_role("button", name="Show the devices").click()
    await page.get_by_label(re.compile("Devices per wave")).fill("1")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("The upgrade was created.").wait_for()
    await shot(page, "upgrades", tmp_path)
    await page.get_by_role("link", name=re.compile("^Open")).first.click()
    await page.get_by_role("button", name="Pause").click()
    await page.get_by_text("The rollout is paused").wait_for()
    assert await page.get_by_role("heading", name="Rollout: Paused (paused by i1)").is_visible()
    await page.get_by_role("button", name="Resume").click()
    await page.get_by_text("The rollout goes on.").wait_for()
    await watched.go("/upgrades")
    ident = server.book.read(lambda uow: uow.upgrades.of_sites(["elm"]))[0].id
    staged = server.book.read(lambda uow: uow.upgrades.get(ident))
    assert staged is not None
    # Resumed, the first wave is excused: it succeeds, the second is released, and its device fails.
    for seq, (device, kind) in enumerate(((staged.devices[0], "executed"), (staged.devices[1], "rolled_back"))):
        event = {"seq": seq + 1, "event_id": f"e{seq}", "type": "firmware", "kind": kind, "data": {"job_id": ident}}
        server.book.run(lambda uow, d=device, e=event: ingest.take_event(uow, d, e))  # type: ignore[misc]
        server.book.run(lambda uow: upgrades.advance_rollouts(uow, OPERATOR))
    await page.get_by_role("link", name=re.compile("^Open")).first.click()
    await page.get_by_role("heading", name=re.compile("Rollout: Paused")).wait_for()
    await page.get_by_role("button", name="Cancel the rollout").click()
    await page.get_by_text("The rollout was cancelled.").wait_for()
    assert watched.errors == []


def _place_second(uow: Any) -> None:
    actor = authority.resolve(uow, "i1")
    sites.add_device(uow, actor, sites.AddDevice(mac="0c1100000099", distributor="d1", model="R29", project="elm"))


PAGES = {
    "installer": ["/", "/sites", "/sites/elm", "/sites/new", "/sites/elm/edit", "/users", "/users/new", "/firmware",
                  "/upgrades", "/upgrades/new", "/macs", "/subscriptions", "/payments", "/payments/automatic",
                  "/credits", "/settings/time-zone", "/settings/billing", "/settings/customer-service",
                  "/settings/account", "/settings/log", "/settings/notification", "/settings/password",
                  "/settings/coupons", "/privacy"],
    "distributor": ["/", "/sites", "/users", "/macs", "/subscriptions", "/payments", "/credits", "/settings/time-zone"],
    "pm": ["/", "/sites", "/sites/elm", "/subscriptions", "/payments", "/settings/notification"],
    "sub": ["/", "/sites", "/sites/elm", "/users"],
    "subdist": ["/", "/sites", "/users", "/subscriptions", "/credits"],
}  # fmt: skip


async def test_every_page_is_accessible_by_keyboard_and_clean(server: PortalServer, browser: Browser) -> None:
    axe = Axe()
    for role, paths in PAGES.items():
        watched = await opened(browser, server)
        await log_in(watched, server, TENANTS["t1"][role])
        for path in paths:
            page = await watched.go(path)
            results = await axe.run(page)
            serious = [v for v in results.response["violations"] if v["impact"] in SERIOUS]
            assert serious == [], (role, path, [(v["id"], v["nodes"][0]["html"]) for v in serious])
            await _every_control_reached_by_tab(page, f"{role} {path}")
            twice = await page.evaluate(
                "() => { const ids = [...document.querySelectorAll('[id]')].map(e => e.id);"
                " return ids.filter((id, i) => ids.indexOf(id) !== i); }"
            )
            assert twice == [], (role, path, twice)  # a label names one field only
        assert watched.errors == [], watched.errors


async def _every_control_reached_by_tab(page: Page, where: str) -> None:
    """Tab from the top through the page: each visible link, button and field takes the focus once."""
    count = await page.evaluate(
        "() => [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, summary')]"
        ".filter(e => e.checkVisibility({visibilityProperty: true})).length"
    )
    await page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.__seen = new Set(); }")
    await page.evaluate("() => document.addEventListener('focusin', e => window.__seen.add(e.target), true)")
    for _ in range(count + 3):
        await page.keyboard.press("Tab")
    missed = await page.evaluate(
        "() => [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, summary')]"
        ".filter(e => e.checkVisibility({visibilityProperty: true}) && !window.__seen.has(e))"
        ".map(e => e.outerHTML.slice(0, 80))"
    )
    # Radio buttons of one group take one tab stop (the arrows move within it), as browsers do.
    missed = [m for m in missed if 'type="radio"' not in m]
    assert missed == [], (where, missed)


async def test_hostile_text_never_runs(server: PortalServer, browser: Browser) -> None:
    watched = await opened(browser, server)
    page = await log_in(watched, server, "i1")
    await watched.go("/sites/new?type=community")
    await page.get_by_role("textbox", name="Name (required)").fill(
        '<script>alert("site")</script><img src=x onerror=alert("img")>'
    )
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("The site was created.").wait_for()
    for path in ("/sites", "/", "/subscriptions", "/upgrades/new"):
        await watched.go(path)
    assert watched.errors == []
    shown = await (await watched.go("/sites")).get_by_role("link", name=re.compile("^<script>")).inner_text()
    assert shown.startswith("<script>")  # shown as the text it is


def test_chromium_is_debians() -> None:
    assert CHROMIUM.startswith("/usr/"), f"Debian's chromium is not installed ({shutil.which('chromium')})"


class Clock:
    """The ledger's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_distributor_a_property_manager_and_an_order_that_expires(browser: Browser, tmp_path: Path) -> None:
    """The distributor buys credits and allocates them to its installer, sets its Pay by Installer, and opens
    the installer's portal (the bar says whose); the property manager of a site whose Pay by PM allows it
    orders a renewal and, the clock moved 15 minutes on, finds the order expired."""
    clock = Clock()
    async with portal_server(LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db"), clock) as server:
        watched = await opened(browser, server)
        page = await log_in(watched, server, "d1")
        await watched.go("/credits")
        await page.locator("form[action='/credits/buy']").get_by_label("Credits").fill("250")
        await page.get_by_role("button", name="Buy").click()
        await page.get_by_text("The credits were added.").wait_for()
        await page.locator("form[action='/credits/allocate']").get_by_label("To").select_option("i1")
        await page.locator("form[action='/credits/allocate']").get_by_label("Credits").fill("40")
        await page.get_by_role("button", name="Allocate").click()
        await page.get_by_text("The credits were allocated.").wait_for()
        assert server.book.read(lambda uow: uow.credits.balance("i1")) == 540
        await watched.go("/users")
        await page.get_by_label("Pay by Installer for Installer i1").select_option("regular")
        await page.get_by_role("button", name="Save").first.click()
        await page.get_by_text("Pay by Installer was saved.").wait_for()
        await page.get_by_role("button", name="Open portal of Installer i1").click()
        await page.get_by_text("acting in the portal of installer").wait_for()
        assert await page.get_by_role("link", name="Elm Court").count() == 0  # the dashboard: counts only
        await watched.go("/sites?type=community")
        assert await page.get_by_role("link", name="Elm Court", exact=True).is_visible()
        await page.get_by_role("button", name="Back to my portal").click()
        await page.get_by_text("back in your own portal").wait_for()
        assert watched.errors == []

        installer = await opened(browser, server)
        own = await log_in(installer, server, "i1")
        await installer.go("/sites/elm/edit")
        await own.get_by_label("Pay by PM").select_option("regular")
        await own.get_by_role("button", name="Submit").click()
        await own.get_by_text("The site was saved.").wait_for()
        server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))

        manager = await opened(browser, server)
        pm = await log_in(manager, server, "pm1")
        await manager.go("/subscriptions?type=community")
        await pm.get_by_label("Elm Court").check()
        await pm.get_by_role("button", name="See the price").click()
        await pm.get_by_role("heading", name=re.compile(r"Price: \$")).wait_for()
        await pm.get_by_role("radio", name="PayPal").check()
        await pm.get_by_role("button", name="Place the order").click()
        await pm.get_by_text("pay it within 15 minutes").wait_for()
        clock.now += 15 * 60 + 1
        await pm.get_by_role("button", name=re.compile("^Go to checkout")).click()
        await pm.get_by_role("button", name="Pay", exact=True).click()
        await pm.get_by_text("within 15 minutes").first.wait_for()
        await manager.go("/payments")
        assert await pm.get_by_role("cell", name="Expired").is_visible()
        expected = [e for e in manager.errors if "/provider/checkout/" in e and "409 (Conflict)" in e]
        assert len(expected) == 1  # the refused payment's page is a 409, which the console reports
        assert [e for e in manager.errors if e not in expected] == []
        assert installer.errors == []


async def test_an_installers_housekeeping(server: PortalServer, browser: Browser) -> None:
    """Users (edit a PM, delete a sub account), Setting (billing information), MAC Library (remove a MAC in
    no site) and Automatic Payments (cancel a renewal), in the browser."""
    from cloud_stub.ledger.holdings import Extension

    call(server.book, sites.add_device, "d1", sites.AddDevice(mac="0c11000000aa", distributor="d1", model="R29"))
    soon = time.time() + 20 * 86_400
    server.book.run(lambda uow: uow.holdings.extend([Extension("elm", "landline", "project", None, soon, None)],
                                                    auto_source="stripe", payer="i1"))  # fmt: skip
    watched = await opened(browser, server)
    page = await log_in(watched, server, "i1")
    await watched.go("/users")
    await page.get_by_role("link", name="Edit PM pm1").click()
    await page.get_by_role("textbox", name="Name (required)").fill("Paula")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("Saved.").wait_for()
    assert await page.get_by_role("cell", name="Paula", exact=True).is_visible()
    await watched.go("/users?tab=sub_installer")
    await page.get_by_role("link", name="Edit Sub si1").click()
    await page.get_by_role("button", name="Delete").click()  # the confirm dialog is accepted
    await page.get_by_text("can no longer log in").wait_for()
    assert await page.get_by_text("Nobody yet.").is_visible()

    await watched.go("/settings/billing")
    for label, value in (("Company/Family", "Luna Ltd"), ("ATTN", "Luna"), ("Address", "1 Elm St"),
                         ("TEL", "+1 555 0100"), ("Email", "bills@example.com")):  # fmt: skip
        await page.get_by_label(label, exact=False).first.fill(value)
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("Saved.").wait_for()

    await watched.go("/macs")
    await page.get_by_role("button", name="Remove 0c11000000aa").click()
    await page.get_by_text("The MAC was removed from the library.").wait_for()
    assert server.book.read(lambda uow: uow.sites.device("0c11000000aa")) is None

    await watched.go("/payments/automatic")
    await page.get_by_label("Cancel Landline of Elm Court").check()
    await page.get_by_role("button", name="Cancel auto-renewal of the ticked services").click()
    await page.get_by_text("Auto-renewal was cancelled.").wait_for()
    assert watched.errors == []


async def test_a_coupon_payment_and_a_forgotten_password(server: PortalServer, browser: Browser) -> None:
    """In the browser: an order paid with a coupon's code; then logged out, Forgot password?, the emailed
    link, a new password, and a login with it."""
    from cloud_stub.operations import coupons
    from tests.support.portal import link_in

    coupon = call(server.book, coupons.issue, None, coupons.IssueCoupon(account="i1", value=100_000))
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    watched = await opened(browser, server)
    page = await log_in(watched, server, "i1")
    await watched.go("/subscriptions?type=community")
    await page.get_by_label("Elm Court").check()
    await page.get_by_role("button", name="See the price").click()
    await page.get_by_role("radio", name="Coupon").check()
    await page.get_by_role("button", name="Place the order").click()
    await page.get_by_label("Coupon code").fill(coupon.code)
    await page.get_by_role("button", name=re.compile("^Pay ")).click()
    await page.get_by_text("Paid. The services were extended.").wait_for()
    await watched.go("/settings/coupons?state=used")
    assert await page.get_by_role("cell", name=coupon.code).is_visible()

    await page.get_by_role("button", name="Log out").click()
    await page.get_by_role("link", name="Forgot password?").click()
    await page.get_by_label("User Name or Email").fill("i1@example.com")
    await page.get_by_role("button", name="Send a link").click()
    await page.get_by_text("If there is such an account").wait_for()
    await page.goto(link_in(await server.mailbox.wait("i1@example.com", "Reset")))
    await page.get_by_label("New password", exact=False).first.fill("a brand new secret")
    await page.get_by_label("The new password again").fill("a brand new secret")
    await page.get_by_role("button", name="Set the password").click()
    await page.get_by_text("The password was set. Log in with it.").wait_for()
    await page.get_by_label("User Name").fill("i1")
    await page.get_by_label("Password").fill("a brand new secret")
    await page.get_by_role("button", name="Login").click()
    await page.wait_for_url(re.compile(r".*/$"))
    assert watched.errors == []


async def test_a_sub_installer_and_a_property_managers_two_factor_login(server: PortalServer, browser: Browser) -> None:
    """In the browser: a sub-installer creates a site its main installer then sees; the installer switches on
    Email Two-Factor Authorization for its property manager, who then logs in with the emailed code and
    changes its email address through the confirmation link; a sub-distributor sees its pages."""
    from tests.support.portal import link_in

    sub = await opened(browser, server)
    page = await log_in(sub, server, "si1")
    await sub.go("/sites/new?type=commercial")
    await page.get_by_role("textbox", name="Name (required)").fill("Annex")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_text("The site was created.").wait_for()

    main = await opened(browser, server)
    own = await log_in(main, server, "i1")
    await main.go("/sites?type=commercial")
    assert await own.get_by_role("link", name="Annex", exact=True).is_visible()
    await main.go("/users/pm1/edit")
    await own.get_by_label("Email Two-Factor Authorization for Login").check()
    await own.get_by_role("button", name="Submit").click()
    await own.get_by_text("Saved.").wait_for()

    manager = await opened(browser, server)
    pm = await log_in(manager, server, "pm1")  # the code is read from the mail the server sent
    await manager.go("/settings/notification")
    await pm.get_by_label("Email", exact=True).fill("pm1-new@example.com")
    await pm.get_by_role("button", name="Submit").click()
    await pm.get_by_text("Saved.").wait_for()
    await pm.goto(link_in(await server.mailbox.wait("pm1-new@example.com", "Confirm")))
    await pm.get_by_role("button", name="Confirm").click()
    await pm.get_by_text("The email address was confirmed.").wait_for()

    subdist = await opened(browser, server)
    await log_in(subdist, server, "sd1")
    for path in ("/sites", "/users", "/credits"):
        await subdist.go(path)
    assert sub.errors == []
    assert main.errors == []
    assert manager.errors == []
    assert subdist.errors == []
