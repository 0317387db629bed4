"""The portal's browser tests' common parts: Debian's chromium launched by Playwright, a page whose console
errors, uncaught exceptions and unexpected dialogs are kept, and a login through the pages (the code read from
the test's SMTP server, the Privacy Policy agreed)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from tests.support.portal import PASSWORD, PortalServer, code_in

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), "chromium")
SERIOUS = ("serious", "critical")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page whose console errors, uncaught exceptions and dialogs (an ``alert`` run by injected script)
    are kept."""

    def __init__(self, page: Page, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Any) -> None:
        if dialog.type != "confirm":
            self.errors.append(f"a {dialog.type} dialog: {dialog.message}")
        await dialog.accept()

    async def go(self, path: str) -> Page:
        await self.page.goto(self.base + path)
        return self.page


async def opened(browser: Browser, server: PortalServer) -> Watched:
    """A new browser context (its own cookies) with one watched page."""
    context = await browser.new_context()
    return Watched(await context.new_page(), server.url)


async def log_in(watched: Watched, server: PortalServer, account: str, password: str = PASSWORD) -> Page:
    page = await watched.go("/login")
    await page.get_by_label("User Name").fill(account)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Login").click()
    if "/login/code" in page.url:
        mail = await server.mailbox.wait(f"{account}@example.com", "verification code")
        await page.get_by_label("The code emailed to you").fill(code_in(mail))
        await page.get_by_role("button", name="Verify").click()
    if "/login/privacy" in page.url:
        await page.get_by_role("button", name="Agree", exact=True).click()
    await page.wait_for_url(re.compile(r".*/$"))
    return page


def shot(page: Page, name: str, tmp_path: Path) -> Any:
    """A full-page screenshot, written to ``$PORTAL_SCREENSHOTS`` when it is set (the README's)."""
    target = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return page.screenshot(path=str(target / f"{name}.png"), full_page=True)
