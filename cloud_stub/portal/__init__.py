"""The web portal (seed 002 is its installer's guide; docs/portal.md): server-rendered pages for
distributors, sub-distributors, installers, sub-installers and property managers, served by the same ASGI
application as the HTTP API (``cloud_stub/asgi.py``).

A third adapter beside the CLI and the API: every page reads through the operations layer and every form
runs one operation; no rule, authority check or SQL lives here.

| module | what |
| --- | --- |
| ``guard`` | security headers, cookies, CSRF tokens, forms read within bounds |
| ``web`` | who asks, pages and actions (one transaction each), rendering |
| ``navigation`` ``listing`` | the left column per role, words for codes; search, sort, pages |
| ``login_pages`` | log in, the emailed code, Privacy Policy, email confirmation, password links, log out |
| ``site_pages`` | Dashboard, Sites, a site's apartments, devices, app accounts and switches |
| ``people_pages`` | Users: property managers, sub accounts, installers and Pay by Installer, switching in |
| ``money_pages`` | Subscriptions, orders, Payments, Automatic Payments, Credit Logs |
| ``provider`` | card and PayPal payments: the provider interface, the simulated checkout and its webhook |
| ``fleet_pages`` | Firmware, Upgrade (phased rollouts), MAC Library |
| ``setting_pages`` | Setting's sub-pages, Change Password |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cloud_stub.errors import LedgerError
from cloud_stub.ledger import Ledger
from cloud_stub.portal import (
    fleet_pages,
    login_pages,
    money_pages,
    people_pages,
    provider,
    setting_pages,
    site_pages,
)
from cloud_stub.portal.guard import SecurityHeaders
from cloud_stub.portal.web import Portal

STATIC = Path(__file__).parent / "static"

ROUTES = [
    Route("/login", login_pages.login_page, methods=["GET"]),
    Route("/login", login_pages.login, methods=["POST"]),
    Route("/login/code", login_pages.code_page, methods=["GET"]),
    Route("/login/code", login_pages.code, methods=["POST"]),
    Route("/login/privacy", login_pages.privacy, methods=["POST"]),
    Route("/login/email", login_pages.email_page, methods=["GET"]),
    Route("/login/email", login_pages.email, methods=["POST"]),
    Route("/privacy", login_pages.privacy_page, methods=["GET"]),
    Route("/login/privacy", login_pages.privacy_page, methods=["GET"]),
    Route("/confirm/{token}", login_pages.confirm_page, methods=["GET"]),
    Route("/confirm/{token}", login_pages.confirm, methods=["POST"]),
    Route("/forgot", login_pages.forgot_page, methods=["GET"]),
    Route("/forgot", login_pages.forgot, methods=["POST"]),
    Route("/reset/{token}", login_pages.reset_page, methods=["GET"]),
    Route("/reset/{token}", login_pages.reset, methods=["POST"]),
    Route("/logout", login_pages.logout, methods=["POST"]),
    Route("/", site_pages.dashboard, methods=["GET"]),
    Route("/sites", site_pages.sites_list, methods=["GET"]),
    Route("/sites/new", site_pages.new_site_page, methods=["GET"]),
    Route("/sites/new", site_pages.new_site, methods=["POST"]),
    Route("/sites/{project}", site_pages.site_page, methods=["GET"]),
    Route("/sites/{project}/edit", site_pages.edit_site_page, methods=["GET"]),
    Route("/sites/{project}/edit", site_pages.edit_site, methods=["POST"]),
    Route("/sites/{project}/delete", site_pages.delete_site, methods=["POST"]),
    Route("/sites/{project}/apartments", site_pages.add_apartment, methods=["POST"]),
    Route("/sites/{project}/devices", site_pages.add_device, methods=["POST"]),
    Route("/sites/{project}/app-accounts", site_pages.add_app_account, methods=["POST"]),
    Route("/sites/{project}/switch", site_pages.switch, methods=["POST"]),
    Route("/users", people_pages.users, methods=["GET"]),
    Route("/users/new", people_pages.new_user_page, methods=["GET"]),
    Route("/users/new", people_pages.new_user, methods=["POST"]),
    Route("/users/{account}/edit", people_pages.edit_user_page, methods=["GET"]),
    Route("/users/{account}/edit", people_pages.edit_user, methods=["POST"]),
    Route("/users/{account}/delete", people_pages.delete_user, methods=["POST"]),
    Route("/users/{account}/reset", people_pages.send_reset, methods=["POST"]),
    Route("/users/{account}/grant", people_pages.grant, methods=["POST"]),
    Route("/users/{account}/switch", people_pages.switch_into, methods=["POST"]),
    Route("/switch/back", people_pages.switch_back, methods=["POST"]),
    Route("/subscriptions", money_pages.subscriptions, methods=["GET"]),
    Route("/subscriptions/order", money_pages.place_order, methods=["POST"]),
    Route("/orders/{txn}", money_pages.order_page, methods=["GET"]),
    Route("/orders/{txn}/pay", money_pages.pay_order, methods=["POST"]),
    Route("/orders/{txn}/checkout", money_pages.to_checkout, methods=["POST"]),
    Route("/provider/checkout/{txn}", provider.checkout_page, methods=["GET"]),
    Route("/provider/checkout/{txn}", provider.checkout_pay, methods=["POST"]),
    Route("/webhooks/payments", provider.webhook, methods=["POST"]),
    Route("/payments", money_pages.payments, methods=["GET"]),
    Route("/payments/automatic", money_pages.automatic_payments, methods=["GET"]),
    Route("/payments/automatic/cancel", money_pages.cancel_auto, methods=["POST"]),
    Route("/credits", money_pages.credit_logs, methods=["GET"]),
    Route("/credits/buy", money_pages.buy_credits, methods=["POST"]),
    Route("/credits/allocate", money_pages.allocate, methods=["POST"]),
    Route("/firmware", fleet_pages.firmware, methods=["GET"]),
    Route("/upgrades", fleet_pages.upgrade_list, methods=["GET"]),
    Route("/upgrades/new", fleet_pages.new_upgrade_page, methods=["GET"]),
    Route("/upgrades/new", fleet_pages.new_upgrade, methods=["POST"]),
    Route("/upgrades/{ident}", fleet_pages.upgrade_page, methods=["GET"]),
    Route("/upgrades/{ident}/edit", fleet_pages.edit_upgrade, methods=["POST"]),
    Route("/upgrades/{ident}/delete", fleet_pages.delete_upgrade, methods=["POST"]),
    Route("/upgrades/{ident}/resume", fleet_pages.resume, methods=["POST"]),
    Route("/upgrades/{ident}/pause", fleet_pages.pause, methods=["POST"]),
    Route("/upgrades/{ident}/cancel", fleet_pages.cancel, methods=["POST"]),
    Route("/macs", fleet_pages.macs, methods=["GET"]),
    Route("/macs/{mac}/remove", fleet_pages.remove_mac, methods=["POST"]),
    Route("/settings/password", setting_pages.password_page, methods=["GET"]),
    Route("/settings/password", setting_pages.change_password, methods=["POST"]),
    Route("/settings/coupons", setting_pages.coupons, methods=["GET"]),
    Route("/settings/coupons", setting_pages.give_coupon, methods=["POST"]),
    Route("/settings/{slug}", setting_pages.setting_page, methods=["GET"]),
    Route("/settings/{slug}", setting_pages.save_setting, methods=["POST"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]


async def _not_found(request: Request, _exc: Exception) -> Response:
    portal: Portal = request.app.state.portal
    return portal.render(request, "refused.html", None, code=404, title="Not found", message="There is no such page.")


async def _unavailable(request: Request, _exc: Exception) -> Response:
    portal: Portal = request.app.state.portal
    response = portal.render(request, "refused.html", None, code=503, title="Unavailable",
                             message="The ledger is unavailable: try again in a moment.")  # fmt: skip
    response.headers["Retry-After"] = "1"
    return response


async def _not_allowed(request: Request, _exc: Exception) -> Response:
    return HTMLResponse("<!DOCTYPE html><title>Not allowed</title><p>This page is not changed that way.</p>",
                        status_code=405)  # fmt: skip


def app(book: Ledger, *, tls: bool = False, poke: Callable[[], None] | None = None) -> SecurityHeaders:
    """The portal over ``book`` as an ASGI application (``tls``: it is served over HTTPS, so its cookies are
    Secure and HSTS is sent; ``poke``: wakes the mailer when a change queued mail)."""
    portal = Starlette(routes=ROUTES, exception_handlers={404: _not_found, 405: _not_allowed,
                                                         LedgerError: _unavailable})  # fmt: skip
    portal.state.portal = Portal(book, tls=tls, poke=poke)
    return SecurityHeaders(portal, tls=tls)
