"""The subscription rules of the vendor's documents, as pure functions (docs/cloud.md).

Every refusal is a :class:`Refused` naming its rule (a short code) and citing the seed it comes from,
so the CLI, the tests and an operator read the same reason. The catalogue (what each project type
sells, and at what simulated price) is data in :data:`CATALOGUE`.
"""

from __future__ import annotations

from datetime import date
from typing import Final, NamedTuple

from protocol.errors import SmartPlusError

DAY: Final = 86_400.0
CREDIT_BILLING_FROM: Final = date(2025, 6, 1)  # seed 000 line 129, seed 001 line 50
NO_PAYMENT_FROM: Final = date(2024, 10, 15)  # DOMAIN.md "Paying": older commercial projects need none
AUTO_RENEW_PERIOD: Final = 30 * DAY  # seed 000 line 159
ORDER_TTL: Final = 15 * 60.0  # DOMAIN.md "Paying": a pending order must be paid within 15 minutes
NOTICE_DAYS: Final = (15, 5, 3, 1)  # DOMAIN.md "What expiry means on the device"


class Refused(SmartPlusError):
    """A request the rules do not allow; ``rule`` is the code, ``seed`` where the rule is written."""

    def __init__(self, rule: str, message: str, seed: str) -> None:
        super().__init__(f"{message} ({rule}; {seed})")
        self.rule = rule
        self.seed = seed


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


def offer(project_type: str, service: str) -> Offer:
    for item in CATALOGUE[project_type]:
        if item.service == service:
            return item
    raise Refused("not_sold", f"{project_type} projects do not sell {service}", "DOMAIN.md project types")


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


PAY_PERMISSIONS: Final = {"installer": ("none", "regular", "credit"), "pm": ("none", "regular")}  # seed 002 247


def check_permission(role: str, permission: str, method: str) -> None:
    """Seed 001 lines 52-55 and seed 002 line 247: who may pay, and how."""
    if role == "distributor":
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


def check_authority(actor: str, role: str, chain: tuple[str | None, ...], installer: str, pm: str | None) -> None:
    """Whether ``actor`` (a ``role``) may act for a site made by ``installer`` with ``pm`` assigned; ``chain`` is
    the installer's parent and grandparent (DOMAIN.md Paying, seed 001 "Roles and Permissions"): a distributor
    for its installers' sites and its sub-distributors' installers'; a sub-distributor for its installers';
    an installer for the sites it created; a sub-installer for its main account's ("the data shown are the
    same"); a PM only for the sites it is assigned to."""
    mine = {
        "installer": actor == installer,  # a sub-installer is asked as its main account (the ledger)
        "pm": pm is not None and actor == pm,
        "distributor": actor in chain,
        "sub_distributor": bool(chain) and actor == chain[0],
    }.get(role, False)
    if not mine:
        raise Refused("not_yours", f"{actor} ({role}) does not act for this site", "seed 001 Roles and Permissions")
