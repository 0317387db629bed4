"""The subscription rules of the vendor's documents, as pure functions (docs/cloud.md).

Every refusal is a :class:`Refused` naming its rule (a short code) and citing the seed it comes from,
so the CLI, the tests and an operator read the same reason. The catalogue (what each project type
sells, and at what simulated price) is data in :data:`CATALOGUE`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_stub.errors import Refused

__all__ = ["Refused"]  # the refusal every rule raises (cloud_stub/errors.py draws the tree)

DAY: Final = 86_400.0
CREDIT_BILLING_FROM: Final = date(2025, 6, 1)  # seed 000 line 129, seed 001 line 50
NO_PAYMENT_FROM: Final = date(2024, 10, 15)  # DOMAIN.md "Paying": older commercial projects need none
AUTO_RENEW_PERIOD: Final = 30 * DAY  # seed 000 line 159
ORDER_TTL: Final = 15 * 60.0  # DOMAIN.md "Paying": a pending order must be paid within 15 minutes
NOTICE_DAYS: Final = (15, 5, 3, 1)  # DOMAIN.md "What expiry means on the device"


class Offer(NamedTuple):
    """A service a project type sells: at which levels it is switched, and its simulated price."""

    service: str
    levels: tuple[str, ...]  # project, door, apartment, account
    monthly: int  # price per unit and month, in cents (regular) or credits (credit)


# DOMAIN.md "Project types and their paid services" (seed 000 lines 20-110, seed 003).
CATALOGUE: Final[dict[str, tuple[Offer, ...]]] = {
    "community": (
        Offer("app", ("account",), 100),
        Offer("additional_app", ("account",), 50),
        Offer("pm_app", ("account",), 200),
        Offer("third_party_lock", ("project",), 500),
        Offer("package_room", ("project",), 300),
        Offer("third_party_camera", ("project",), 300),
        Offer("booking", ("project",), 300),
        Offer("elevator_control", ("project",), 500),
        Offer("smart_parking", ("project",), 300),
        Offer("dynamic_qr", ("project",), 200),
        Offer("video_storage", ("project", "apartment"), 150),
        Offer("landline", ("project", "apartment"), 100),
        Offer("landline_pm", ("account",), 100),
        Offer("with_indoor_monitor", ("project", "apartment"), 0),
        Offer("sensor_call_alert", ("project",), 300),
        Offer("integration", ("project",), 0),
    ),
    "single_family": (
        Offer("app", ("account",), 100),
        Offer("additional_app", ("account",), 50),
        Offer("third_party_lock", ("project",), 500),
        Offer("landline", ("project",), 100),
        Offer("third_party_camera", ("project",), 300),
        Offer("dynamic_qr", ("project",), 200),
        Offer("video_storage", ("project",), 150),
        Offer("sensor_call_alert", ("project",), 300),
    ),
    "commercial": (
        Offer("door", ("door",), 10),
        Offer("personnel_app", ("account",), 2),
        Offer("admin_app", ("account",), 2),
        Offer("attendance", ("project",), 20),
        Offer("elevator_control", ("project",), 10),
        Offer("sensor_call_alert", ("project",), 10),
    ),
}


_OFFERS: Final = {(kind, o.service): o for kind, offers in CATALOGUE.items() for o in offers}


def offer(project_type: str, service: str) -> Offer:
    found = _OFFERS.get((project_type, service))
    if found is None:
        raise Refused("not_sold", f"{project_type} projects do not sell {service}", "DOMAIN.md project types")
    return found


def check_subject(item: Offer, subject: str, doors: list[str]) -> None:
    """A subject at one of the offer's levels; a door of the project, and not its free one."""
    level, _, ident = subject.partition(":")
    if subject == "project":
        level = "project"
    elif not ident:
        level = ""
    if level not in item.levels:
        forms = " or ".join("project" if lv == "project" else f"{lv}:ID" for lv in item.levels)
        raise Refused("bad_subject", f"{item.service} is sold for {forms}, not {subject!r}", "DOMAIN.md project types")
    if level == "door":
        if ident not in doors:
            raise Refused("unknown_door", f"{ident} is not one of the project's doors", "DOMAIN.md project types")
        if doors and ident == doors[0]:
            raise Refused("free_door", f"{ident} is the project's free door", "seed 002 line 773; DOMAIN.md")


def payment_method(project_type: str, created: date) -> str:
    """``regular``, ``credit`` or ``none`` (seed 000 lines 115-133; DOMAIN.md "Paying")."""
    if project_type != "commercial":
        return "regular"
    return "credit" if created >= CREDIT_BILLING_FROM else "none"


SOURCES: Final = {"regular": ("stripe", "paypal", "coupon"), "credit": ("credit",), "none": ()}


def check_source(method: str, source: str) -> None:
    if source not in SOURCES[method]:
        allowed = ", ".join(SOURCES[method]) or "nothing: no payment is required"
        raise Refused("wrong_source", f"{method} payment takes {allowed}, not {source}", "seed 000 lines 115-133")


def check_auto_renew(project_type: str, created: date, source: str) -> None:
    """Seed 000 lines 165-167: coupons cannot pay auto-renewal; new commercial projects cannot auto-renew."""
    if source == "coupon":
        raise Refused("coupon_auto_renew", "coupons are not supported for auto-renewal", "seed 000 line 165")
    if project_type == "commercial" and created >= CREDIT_BILLING_FROM:
        raise Refused(
            "commercial_auto_renew", "new commercial projects do not support auto-renewal", "seed 000 line 167"
        )


PAY_PERMISSIONS: Final = {"installer": ("none", "regular", "credit")}  # "Pay by Installer", seed 002 247
PAY_BY_PM: Final = ("none", "regular")  # a site's setting (seed 001 line 305, seed 002 row 8)


def check_permission(role: str, permission: str, method: str) -> None:
    """Seed 001 lines 52-55 and seed 002 line 247: who may pay, and how. For a PM, ``permission`` is the
    site's "Pay by PM": on a new commercial site (paid only with credits) anything but No Permission lets
    the PM pay with credits allocated to it (seed 001 "For Property Manager: Credit Payment")."""
    if role in ("distributor", "sub_distributor"):
        return
    if role == "pm" and permission != "none":
        return
    if permission == "none":
        raise Refused("no_permission", f"this {role} has no permission to pay", "seed 001 lines 54-55")
    if method == "credit" and permission != "credit":
        raise Refused("no_credit_permission", f"this {role} may not pay with credits", "seed 002 line 247")


def renewed_expiry(current: float | None, now: float, seconds: float) -> float:
    """A renewal extends the upcoming expiry; a lapsed or new service starts now."""
    return max(current or now, now) + seconds


def months(count: int) -> float:
    if not 1 <= count <= 120:
        raise Refused("bad_length", "a renewal lasts 1 to 120 months", "seed 000 line 161")
    return count * 30 * DAY


def order_expired(created: float, now: float) -> bool:
    return now - created > ORDER_TTL


class Notice(NamedTuple):
    stage: int  # days before expiry
    role: str  # installer, pm, end_user


def notice_recipients(stage: int, pm_notices: bool) -> tuple[str, ...]:
    """DOMAIN.md: 15 days installers; 5 days PMs and installers; 3 and 1 days end users; with the PM
    notice switched off (seed 002 line 248) only installers are told."""
    if not pm_notices:
        return ("installer",) if stage in (15, 5) else ()
    return {15: ("installer",), 5: ("pm", "installer"), 3: ("end_user",), 1: ("end_user",)}[stage]


def acts_for(actor: str, role: str, chain: tuple[str, ...], installer: str, pm: str | None) -> bool:
    """Whether ``actor`` (a ``role``; a sub-installer is asked as its main installer) acts for a site made
    by ``installer`` with ``pm`` assigned; ``chain`` is the installer's parent and grandparent (DOMAIN.md
    Paying, seed 001 "Roles and Permissions"): a distributor for its installers' sites and its
    sub-distributors' installers'; a sub-distributor for its installers'; an installer for the sites it
    created; a PM only for the sites it is assigned to."""
    return {
        "installer": actor == installer,
        "pm": pm is not None and actor == pm,
        "distributor": actor in chain,
        "sub_distributor": bool(chain) and actor == chain[0],
    }.get(role, False)


def check_pm_grant() -> None:
    """Seed 001 line 305; seed 002 row 8: "Pay by PM" belongs to the site, not to the PM's account."""
    raise Refused(
        "pay_by_pm_is_a_site_setting",
        "a PM's payment permission is the site's 'Pay by PM' (site-set PROJECT pay_by_pm=regular)",
        "seed 001 line 305; seed 002 row 8",
    )


def check_allocation(giver: str, receiver_role: str, chain: tuple[str | None, ...]) -> None:
    """Seed 000 line 193: credits go to one's own sub-distributors, installers and PMs. ``chain`` is the
    receiver's parent and the parents above it: an installer allocates to its PMs, a distributor (or
    sub-distributor) to the accounts directly under it and to the PMs of its installers."""
    direct = bool(chain) and chain[0] == giver
    through_installer = receiver_role == "pm" and giver in chain[1:]
    if not (direct or through_installer):
        raise Refused("not_yours", f"the receiver is not under {giver}", "seed 000 line 193")


MAC_PATTERN: Final = re.compile(r"[0-9a-f]{12}")


def normal_mac(text: str) -> str:
    """A MAC as the platform keys it: 12 lower-case hex digits (``0C:11:05:12:AB:34`` is taken as
    ``0c110512ab34``); anything else is refused."""
    mac = text.replace(":", "").replace("-", "").lower()
    if not MAC_PATTERN.fullmatch(mac):
        raise Refused("bad_mac", f"{text!r} is not a MAC address (12 hex digits)", "DOMAIN.md who is who")
    return mac


def check_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Refused("bad_timezone", f"{name!r} is not an IANA time zone", "DOMAIN.md site settings") from None


def end_of_day(day: date, zone: str) -> float:
    """Seed 001 lines 256-257 ("09-30-2025 23:59:59"): a "renew to" date ends at 23:59:59 of that day in
    the site's time zone."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=check_zone(zone)).timestamp()


# Seed 003 "Configure Services for Individual Apartments": only these are set per apartment; the bulk
# update ("Bulk Update Services for All Apartments") covers the first two.
APARTMENT_SERVICES: Final = ("with_indoor_monitor", "landline", "video_storage")
BULK_SERVICES: Final = ("with_indoor_monitor", "landline")
APP_WITHOUT_MONITOR: Final = 150  # seed 003: With Indoor Monitor "affects the SmartPlus App service charge"


def check_apartment_service(service: str) -> None:
    if service not in APARTMENT_SERVICES:
        raise Refused(
            "not_per_apartment",
            f"only {', '.join(APARTMENT_SERVICES)} are set per apartment, not {service}",
            "seed 003 Configure Services for Individual Apartments",
        )


def check_switchable(service: str) -> None:
    """Seed 000 line 47; DOMAIN.md: Integration is set by a third-party PMS integration, never by hand or sold."""
    if service == "integration":
        raise Refused(
            "integration_is_automatic",
            "Integration is set when a third-party PMS is integrated (integrate PROJECT --pms NAME)",
            "seed 000 line 47; DOMAIN.md project types",
        )


# The services an app account of each role is paid by (DOMAIN.md project types).
ACCOUNT_SERVICES: Final = {
    "master": ("app",),
    "family": ("app", "additional_app"),
    "pm": ("pm_app", "landline_pm"),
    "personnel": ("personnel_app",),
    "admin": ("admin_app",),
}


def check_account_service(service: str, role: str, account: str) -> None:
    if service not in ACCOUNT_SERVICES[role]:
        raise Refused(
            "wrong_account_service",
            f"{account} is a {role} account, paid by {' or '.join(ACCOUNT_SERVICES[role])}, not {service}",
            "DOMAIN.md project types",
        )


# Seed 002 row 11: "0~200 Personnel" and "201 and above" "charge differently" (credits per month).
ATTENDANCE_PLANS: Final = {"0-200": 20, "201+": 40}
SMALL_PLAN_LIMIT: Final = 200


def attendance_price(plan: str | None, personnel: int) -> int:
    """The monthly price of the attendance plan chosen; a site over 200 personnel cannot be on 0-200."""
    if plan not in ATTENDANCE_PLANS:
        raise Refused("plan_needed", "attendance names a plan: --plan 0-200 or --plan 201+", "seed 002 row 11")
    if plan == "0-200" and personnel > SMALL_PLAN_LIMIT:
        raise Refused(
            "plan_too_small", f"the site has {personnel} personnel: more than 0-200 allows (201+)", "seed 002 row 11"
        )
    return ATTENDANCE_PLANS[plan]


def auto_renewal(expires: float, now: float) -> float | None:
    """Seed 000 line 159: auto-renewal happens when the upcoming expiry is reached and extends it by 30 days,
    once per cycle. ``None`` while it is not due. A cloud that was off for longer than a cycle charges one
    cycle from now, not the missed ones."""
    if expires > now:
        return None
    new = expires + AUTO_RENEW_PERIOD
    return new if new > now else now + AUTO_RENEW_PERIOD


def renewal_recipients(project_type: str, renew_pm: bool, end_user_email: bool) -> tuple[str, ...]:
    """Seed 002 row 10 ("Send Renew Email To PM") and the installer's Single-Family Email Setting (seed 002
    line 195): who hears of a renewal. Installers always."""
    roles = ["installer"]
    if renew_pm and project_type != "single_family":
        roles.append("pm")
    if project_type == "single_family" and end_user_email:
        roles.append("end_user")
    return tuple(roles)


def expiry_recipients(stage: int, pm_notices: bool, project_type: str, end_user_email: bool) -> tuple[str, ...]:
    """:func:`notice_recipients`, with the installer's Single-Family Email Setting: off, the end users of
    its single-family sites hear nothing (seed 002 line 195)."""
    roles = notice_recipients(stage, pm_notices)
    if project_type == "single_family" and not end_user_email:
        roles = tuple(r for r in roles if r != "end_user")
    return roles


def check_site_settings(settings: dict[str, object]) -> dict[str, object]:
    """DOMAIN.md "Site settings that reach the device": the same model the device checks (protocol.settings)."""
    from protocol.settings import site_settings

    try:
        return site_settings(settings)
    except ValueError as exc:
        raise Refused("bad_setting", str(exc), "DOMAIN.md site settings") from None
