"""Every module of the left column for every role, in Debian's chromium: each link of a role's column opens its
page (and nothing else is in the column), every Setting sub-page a role has saves a change that a reload shows;
then the actions not walked by tests/test_portal_browser.py, one role at a time — an installer's users, site
services, app accounts, a pending upgrade edited and deleted, a site deleted, a changed password; a
distributor's coupon and an order for its installer's site; a sub-distributor's credits passed down and the
portal of its own installer; a property manager's read-only site."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from cloud_stub.operations import accounts
from cloud_stub.portal.navigation import DONE, MENUS
from tests.support.browser import Watched, log_in, opened
from tests.support.ledger import LedgerAt, add_firmware, call
from tests.support.portal import TENANTS, PortalServer, link_in, portal_server

ROLES = {"distributor": "d1", "sub_distributor": "sd1", "installer": "i1", "sub_installer": "si1", "pm": "pm1"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PortalServer]:
    async with portal_server(LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db")) as served:
        yield served


async def _done(page: Page, key: str) -> None:
    """The page says the change ``key`` was made (a refusal instead fails with its text)."""
    await page.get_by_role("status").filter(has_text=DONE[key]).or_(page.get_by_role("alert")).wait_for()
    assert await page.get_by_role("alert").count() == 0, await page.get_by_role("alert").inner_text()


@pytest.mark.parametrize("role", ROLES)
async def test_every_module_in_the_left_column(role: str, server: PortalServer, browser: Browser) -> None:
    watched = await opened(browser, server)
    page = await log_in(watched, server, ROLES[role])
    column = page.get_by_role("navigation", name="Modules")
    links = [
        (await a.inner_text(), await a.get_attribute("href") or "") for a in await column.get_by_role("link").all()
    ]
    expected = [(i.label, i.href) for i in MENUS[role]] + [c for i in MENUS[role] for c in i.children]
    assert sorted(links) == sorted(expected)
    assert ("Users", "/users") not in links if role == "pm" else ("Users", "/users") in links
    for nth, (name, href) in enumerate(links):
        await column.get_by_role("link").nth(nth).click()
        await page.wait_for_url(f"{server.url}{href}")
        assert await column.locator(f'a[href="{href}"][aria-current="page"]').count() >= 1, (role, name)
        assert await page.locator("h1").is_visible()
        assert await page.get_by_role("alert").count() == 0, (role, name, await page.content())
    for name, href in links:
        if href.startswith("/settings/") and href != "/settings/coupons":
            await _change_setting(watched, href, f"{role} {name}")
    assert watched.errors == []


async def _change_setting(watched: Watched, href: str, where: str) -> None:
    """Flip every switch, pick another time zone, fill the required text; Submit; a reload shows it kept."""
    page = await watched.go(href)
    form = page.locator("main form")
    boxes = await form.locator("input[type=checkbox]").all()
    before = [await b.is_checked() for b in boxes]
    for box in boxes:
        await box.click()
    zone = form.locator("select")
    if await zone.count():
        await zone.select_option("Europe/Berlin")
    kinds = {"tel": "+1 555 0100", "email": "desk@example.com", "text": "Luna"}
    for field in await form.locator("input[required]").all():
        await field.fill(kinds[await field.get_attribute("type") or "text"])
    await form.get_by_role("button", name="Submit").click()
    await _done(page, "setting_saved")
    page = await watched.go(href)
    after = [await b.is_checked() for b in await page.locator("main form input[type=checkbox]").all()]
    assert after == [not b for b in before], where
    if await zone.count():
        assert await page.locator("main form select").input_value() == "Europe/Berlin", where
    for field in await page.locator("main form input[required]").all():
        assert await field.input_value() != "", where


async def _new_user(page: Page, kind: str, account: str, name: str) -> None:
    await page.get_by_role("link", name=f"New {kind}").click()
    await page.get_by_role("textbox", name="Account (required)").fill(account)
    await page.get_by_role("textbox", name="Name (required)").fill(name)
    await page.get_by_role("textbox", name="Email (required)").fill(f"{account}@example.com")
    await page.get_by_role("button", name="Submit").click()


async def test_an_installers_people_services_upgrades_and_password(
    server: PortalServer, browser: Browser, tmp_path: Path
) -> None:
    """Users: a new property manager sets its password from the emailed link and manages the site it is
    assigned; its password reset; a sub account. A site: a community service switched on for the site and
    one for an apartment, an app account. Upgrade: a pending upgrade at a time, edited, deleted. A site
    deleted. Change Password."""
    watched = await opened(browser, server)
    page = await log_in(watched, server, "i1")
    await page.get_by_role("navigation", name="Modules").get_by_role("link", name="Users").click()
    await _new_user(page, "Property Manager", "pm9", "Petra")
    await _done(page, "pm_added")
    welcome = await server.mailbox.wait("pm9@example.com", "portal account")
    await page.get_by_role("link", name="Edit Petra").click()
    await page.get_by_label(TENANTS["t1"]["site_name"]).check()
    await page.get_by_role("button", name="Submit").click()
    await _done(page, "pm_saved")
    row = await page.get_by_role("row").filter(has_text="pm9").inner_text()
    assert TENANTS["t1"]["site_name"] in row, row
    await page.get_by_role("button", name="Reset Password of Petra").click()
    await _done(page, "reset_sent")
    await server.mailbox.wait("pm9@example.com", "Reset your SmartPlus password")
    await page.get_by_role("link", name="Sub Account").click()
    await _new_user(page, "Sub Account", "si9", "Sam")
    await _done(page, "sub_added")
    assert await page.get_by_role("cell", name="si9", exact=True).is_visible()

    # The newest link works (the reset voided the welcome's); the new PM sees the site it was assigned.
    assert link_in(welcome) != link_in(await server.mailbox.wait("pm9@example.com", "Reset"))
    manager = await opened(browser, server)
    pm = manager.page
    await pm.goto(link_in(await server.mailbox.wait("pm9@example.com", "Reset")))
    await pm.get_by_label("New password", exact=False).first.fill("petra's own secret")
    await pm.get_by_label("The new password again").fill("petra's own secret")
    await pm.get_by_role("button", name="Set the password").click()
    await _done(pm, "password_set")
    await log_in(manager, server, "pm9", "petra's own secret")
    await manager.go("/sites?type=community")
    assert await pm.get_by_role("link", name=TENANTS["t1"]["site_name"], exact=True).is_visible()

    await watched.go("/sites/elm")
    await page.get_by_role("button", name="Switch on Landline", exact=True).click()
    await _done(page, "switched")
    assert await page.get_by_role("button", name="Switch off Landline", exact=True).is_visible()
    await page.get_by_role("button", name="Switch Video storage for Apt a101 on").click()
    await _done(page, "switched")
    assert await page.get_by_role("button", name="Switch Video storage for Apt a101 off").is_visible()
    await page.get_by_text("Add an app account").click()
    await page.locator("#f-app-id").fill("carol")
    await page.locator("#f-app-name").fill("Carol")
    await page.locator("#f-app-apartment").fill("a101")
    await page.get_by_role("button", name="Add app account").click()
    await _done(page, "app_added")
    assert await page.get_by_role("cell", name="Carol", exact=True).is_visible()

    image = tmp_path / "fw.bin"
    image.write_bytes(b"firmware" * 100)
    add_firmware(server.book, tmp_path / "images", image)
    add_firmware(server.book, tmp_path / "images", image, version="29.30.10.2")
    await watched.go("/upgrades/new")
    await page.get_by_label("Site").select_option(label=TENANTS["t1"]["site_name"])
    await page.get_by_label("Model / Firmware").select_option(label="R29 29.30.10.1")
    await page.get_by_role("button", name="Show the devices").click()
    await page.get_by_label("Upgrade at a Specific Time").check()
    later = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 86_400))
    await page.get_by_label("Time", exact=True).fill(later)
    await page.get_by_role("button", name="Submit").click()
    await _done(page, "upgrade_added")
    await page.get_by_role("link", name=re.compile("^Open")).first.click()
    await page.get_by_label("Version").select_option("29.30.10.2")
    await page.get_by_role("button", name="Save").click()
    await _done(page, "upgrade_saved")
    assert server.book.read(lambda uow: uow.upgrades.of_sites(["elm"]))[0].version == "29.30.10.2"
    assert await page.get_by_role("definition").filter(has_text="29.30.10.2").is_visible()
    await page.get_by_role("button", name="Delete").click()  # the confirm dialog is accepted
    await _done(page, "upgrade_deleted")
    assert server.book.read(lambda uow: uow.upgrades.of_sites(["elm"])) == []

    await watched.go("/sites/new?type=single_family")
    await page.get_by_role("textbox", name="Name (required)").fill("Hill House")
    await page.get_by_role("button", name="Submit").click()
    await _done(page, "site_added")
    await page.get_by_role("link", name="Edit the site").click()
    await page.get_by_role("button", name="Delete").click()
    await _done(page, "site_deleted")
    assert await page.get_by_role("link", name="Hill House").count() == 0

    await page.get_by_role("navigation", name="Account").get_by_role("link", name="Change Password").click()
    await page.get_by_label("Original Password").fill("correct horse battery")
    await page.get_by_label("New Password", exact=True).fill("a staple for the battery")
    await page.get_by_label("The new password again").fill("a staple for the battery")
    await page.get_by_role("button", name="Submit").click()
    await _done(page, "password_changed")
    again = await opened(browser, server)
    await log_in(again, server, "i1", "a staple for the battery")
    assert watched.errors + manager.errors + again.errors == []


async def test_a_distributors_coupon_and_order_and_a_sub_distributors_credits(
    server: PortalServer, browser: Browser
) -> None:
    """The distributor gives its installer a coupon and orders a renewal of the installer's site; a
    sub-distributor, given credits by the distributor, passes some to its own installer and opens that
    installer's portal."""
    call(server.book, accounts.add_account, None,
         accounts.AddAccount(id="i9", role="installer", name="Installer i9", parent="sd1"))  # fmt: skip
    server.book.run(lambda uow: uow.holdings.switch("elm", "landline", True))
    watched = await opened(browser, server)
    page = await log_in(watched, server, "d1")
    await watched.go("/settings/coupons")
    await page.get_by_label("To").select_option("i1")
    await page.get_by_role("textbox", name="Value in dollars (required)").fill("25.50")
    await page.get_by_role("button", name="Give").click()
    await _done(page, "coupon_given")
    held = server.book.read(lambda uow: uow.coupons.of("i1"))
    assert [c.value for c in held] == [2550]

    await watched.go("/subscriptions")
    await page.get_by_label("Installer").select_option("i1")
    await page.get_by_role("button", name="Show its sites").click()
    await page.get_by_label(TENANTS["t1"]["site_name"]).check()
    await page.get_by_role("button", name="See the price").click()
    await page.get_by_role("heading", name=re.compile(r"Price: \$")).wait_for()
    await page.get_by_role("button", name="Place the order").click()
    await _done(page, "order_placed")
    txn = page.url.split("?")[0].rsplit("/", 1)[1]
    assert server.book.read(lambda uow: uow.orders.by_txn(txn)).payer == "d1"

    await watched.go("/credits")
    await page.locator("form[action='/credits/allocate']").get_by_label("To").select_option("sd1")
    await page.locator("form[action='/credits/allocate']").get_by_label("Credits").fill("70")
    await page.get_by_role("button", name="Allocate").click()
    await _done(page, "allocated")

    sub = await opened(browser, server)
    own = await log_in(sub, server, "sd1")
    await sub.go("/credits")
    assert await own.get_by_text("Available Credit: 70").is_visible()
    assert await own.locator("form[action='/credits/buy']").count() == 0  # credits are bought by a distributor
    await own.locator("form[action='/credits/allocate']").get_by_label("To").select_option("i9")
    await own.locator("form[action='/credits/allocate']").get_by_label("Credits").fill("30")
    await own.get_by_role("button", name="Allocate").click()
    await _done(own, "allocated")
    assert await own.get_by_text("Available Credit: 40").is_visible()
    assert server.book.read(lambda uow: uow.credits.balance("i9")) == 30
    await sub.go("/users")
    assert await own.get_by_role("cell", name="i1", exact=True).count() == 0  # its distributor's, not its own
    await own.get_by_role("button", name="Open portal of Installer i9").click()
    await own.get_by_text("acting in the portal of installer").wait_for()
    assert watched.errors + sub.errors == []


async def test_a_property_manager_reads_its_site(server: PortalServer, browser: Browser) -> None:
    watched = await opened(browser, server)
    page = await log_in(watched, server, "pm1")
    await page.get_by_role("navigation", name="Modules").get_by_role("link", name="Sites").click()
    await page.get_by_role("link", name=TENANTS["t1"]["site_name"], exact=True).click()
    assert await page.get_by_role("cell", name="Apt a101", exact=True).is_visible()
    assert await page.get_by_role("link", name="Edit the site").count() == 0
    assert await page.get_by_role("button", name=re.compile("^Switch")).count() == 0
    assert await page.get_by_text("Add an app account").count() == 0
    assert watched.errors == []
