"""Setting (seed 002 "Setting", "Installer Account Management"): each sub-page one of the account's
settings, and Change Password. One table says what each page holds; a page shows it and saves it through
``logins.set_setting`` (the Single-Family Email Setting through its own operation, which the devices'
notices read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import accounts, logins, overview
from cloud_stub.operations import coupons as coupon_ops
from cloud_stub.operations.authority import Actor
from cloud_stub.portal import guard
from cloud_stub.portal.site_pages import zones
from cloud_stub.portal.web import Portal, action, checked, page, refusal_text


class Field(NamedTuple):
    name: str
    label: str
    kind: str = "text"  # text, email, tel, switch, zone
    required: bool = False
    hint: str = ""


class Setting(NamedTuple):
    slug: str
    title: str
    name: str
    fields: tuple[Field, ...]
    lead: str = ""


SETTINGS: Final = {
    s.slug: s
    for s in (
        Setting("time-zone", "Time Zone", "time_zone", (Field("value", "Time Zone", "zone"),)),
        Setting("billing", "Billing Information", "billing", (
            Field("company", "Company/Family", required=True), Field("attn", "ATTN", required=True),
            Field("address", "Address", required=True), Field("city", "City"), Field("street", "Street"),
            Field("tel", "TEL", "tel", True), Field("fax", "Fax", "tel"), Field("email", "Email", "email", True),
        ), "Your distributor sends you the bill according to this information."),
        Setting("customer-service", "Customer Service", "customer_service", (
            Field("phone", "Phone", "tel", True, "Residents can contact you through this phone number"),
            Field("email", "Email", "email", True, "Residents can contact you through this email address"),
            Field("feedback", "Receive Feedback", "switch"),
        )),
        Setting("service-provider", "Service Provider Information", "service_provider", (
            Field("company", "Company"), Field("address", "Company Address"), Field("phone", "Mobile Number", "tel"),
            Field("email", "Email", "email"), Field("tax_id", "Tax id"), Field("website", "Company Website"),
        ), "If you are the service provider for the users, this is shown in their privacy policy; otherwise the"
           " service provider shown there is the platform's."),
        Setting("account", "Account Setting", "access_permission", (
            Field("value", "Permission Granted", "switch",
                  hint="Give authorisation to your distributor to access your account. If you turn off the feature, "
                       "your distributor can't help you."),
        )),
        Setting("single-family-email", "Single-Family Email Setting", "single_family_email", (
            Field("value", "Send renewal and expiration email notifications to end users", "switch"),
        )),
        Setting("log", "Log Setting", "log_setting", (
            Field("snapshots", "Visitor Call Snapshots: save visitor call snapshots to the door log", "switch"),
        )),
        Setting("notification", "Notification", "notification", (
            Field("value", "Receive notifications by email", "switch"),
        ), "Renewal and expiry notices go to your confirmed email address."),
    )
}  # fmt: skip
DEFAULTS: Final[dict[str, Any]] = {"access_permission": True, "log_setting": {"snapshots": True}, "notification": True,
                                   "time_zone": "UTC", "single_family_email": True}  # fmt: skip


def _setting(request: Request) -> Setting:
    found = SETTINGS.get(str(request.path_params["slug"]))
    if found is None:
        raise Refused("not_found", "no such setting", "seed 002 Setting")
    return found


def _context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    setting = _setting(request)
    if setting.name == "single_family_email":
        value: Any = uow.accounts.end_user_email(actor.principal)
    else:
        value = logins.settings(uow, actor, setting.name)
    if value is None:
        value = DEFAULTS.get(setting.name, {})
    values = value if isinstance(value, dict) else {"value": value}
    login = uow.logins.get(actor.id)
    return {"setting": setting, "values": values, "zones": zones(), "email": login.email if login else ""}


setting_page = page("setting.html", "Setting")(_context)


@action("setting.html", "Setting", then=lambda r, _v: r.url.path, done="setting_saved", again=_context)
def save_setting(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> object:
    setting = _setting(request)
    values: dict[str, Any] = {}
    for field in setting.fields:
        values[field.name] = (
            guard.as_bool(form, field.name) if field.kind == "switch" else form.get(field.name, "").strip()
        )
        if field.required and not values[field.name]:
            raise ValueError(f"{field.label}: this is needed")
    if setting.name == "single_family_email":
        return accounts.email_setting(uow, actor, accounts.EmailSetting(on=bool(values["value"])))
    if setting.name == "notification":
        current = uow.logins.get(actor.id)
        wanted = form.get("email", "").strip()
        if wanted and current is not None and wanted != current.email:
            base = str(request.base_url).rstrip("/")
            logins.change_email(uow, actor, logins.GiveEmail(email=wanted, base=base))
    value = values["value"] if list(values) == ["value"] else values
    return logins.set_setting(uow, actor, logins.Setting(name=setting.name, value=value))


# -- Change Password -------------------------------------------------------------------------------------------
@page("password.html", "Change Password")
def password_page(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    return {"hint": f"At least {logins.MIN_PASSWORD} characters, and not your user name."}


async def change_password(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    got = await checked(request)
    if isinstance(got, Response):
        return got
    who, form = got
    try:
        if form.get("new", "") != form.get("again", ""):
            raise ValueError("the two new passwords differ")
        asked = logins.ChangePassword(old=form.get("old", ""), new=form.get("new", ""))
        opened = await run_in_threadpool(portal.book.run, lambda uow: logins.change_password(uow, who.session, asked))
    except (Refused, ValueError) as exc:
        return portal.render(request, "password.html", who, code=400, title="Change Password", form={},
                             error=refusal_text(exc), hint="")  # fmt: skip
    response = portal.go("/", "password_changed")
    guard.set_cookie(response, guard.SESSION_COOKIE, opened.token, secure=portal.tls)
    return response


def _coupons_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    state = request.query_params.get("state", "normal")
    state = state if state in ("normal", "used", "expired") else "normal"
    mine = [c for c in coupon_ops.coupons(uow, actor) if c.state == state]
    giver = actor.principal_role in ("distributor", "sub_distributor")
    below = [(p.id, p.name) for p in overview.people(uow, actor)] if giver else []
    return {"coupons": mine, "state": state, "below": below}


coupons = page("coupons.html", "Coupon Details")(_coupons_context)


@action("coupons.html", "Coupon Details", then=lambda _r, _c: "/settings/coupons", done="coupon_given",
        again=_coupons_context)  # fmt: skip
def give_coupon(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> coupon_ops.CouponView:
    dollars = form.get("value", "").strip()
    if not dollars.replace(".", "", 1).isdigit():
        raise ValueError("Value: an amount in dollars, such as 25 or 25.50")
    cents = round(float(dollars) * 100)
    days = form.get("days", "90")
    asked = coupon_ops.IssueCoupon(
        account=form.get("account", ""), value=cents, days=int(days) if days.isdigit() else 0
    )
    return coupon_ops.issue(uow, actor, asked)
