"""The left column of seed 002 per role, the words the pages show for the ledger's codes, and the short
messages a change redirects with (``?done=``: a key, never text from the request, so a link cannot make
the portal say something it did not)."""

from __future__ import annotations

import datetime as dt
from typing import Final, NamedTuple

from cloud_stub.operations.authority import Actor
from cloud_stub.operations.logins import SessionLabel


class Item(NamedTuple):
    label: str
    href: str
    children: tuple[tuple[str, str], ...] = ()


SETTING: Final = (
    ("Coupon Details", "/settings/coupons"),
    ("Credit Logs", "/credits"),
    ("Time Zone", "/settings/time-zone"),
    ("Billing Information", "/settings/billing"),
    ("Customer Service", "/settings/customer-service"),
    ("Service Provider Information", "/settings/service-provider"),
    ("Account Setting", "/settings/account"),
    ("Single-Family Email Setting", "/settings/single-family-email"),
    ("Log Setting", "/settings/log"),
    ("Notification", "/settings/notification"),
)
SUBSCRIPTIONS: Final = (
    ("Subscriptions", "/subscriptions"),
    ("Payments", "/payments"),
    ("Automatic Payments", "/payments/automatic"),
)
_INSTALLER: Final = (
    Item("Dashboard", "/"),
    Item("Sites", "/sites"),
    Item("Users", "/users"),
    Item("Firmware", "/firmware"),
    Item("Upgrade", "/upgrades"),
    Item("MAC Library", "/macs"),
    Item("Subscriptions", "/subscriptions", SUBSCRIPTIONS),
    Item("Setting", "/settings/time-zone", SETTING),
    Item("Privacy Policy", "/privacy"),
)
_DISTRIBUTOR: Final = (
    Item("Dashboard", "/"),
    Item("Sites", "/sites"),
    Item("Users", "/users"),
    Item("Firmware", "/firmware"),
    Item("MAC Library", "/macs"),
    Item("Subscriptions", "/subscriptions", SUBSCRIPTIONS[:2]),
    Item(
        "Setting",
        "/settings/time-zone",
        (
            ("Coupon Details", "/settings/coupons"),
            ("Credit Logs", "/credits"),
            ("Time Zone", "/settings/time-zone"),
            ("Billing Information", "/settings/billing"),
            ("Notification", "/settings/notification"),
        ),
    ),
    Item("Privacy Policy", "/privacy"),
)
_PM: Final = (
    Item("Dashboard", "/"),
    Item("Sites", "/sites"),
    Item("Subscriptions", "/subscriptions", SUBSCRIPTIONS[:2]),
    Item(
        "Setting",
        "/settings/time-zone",
        (("Time Zone", "/settings/time-zone"), ("Notification", "/settings/notification")),
    ),
    Item("Privacy Policy", "/privacy"),
)
MENUS: Final = {
    "installer": _INSTALLER,
    "sub_installer": _INSTALLER,
    "distributor": _DISTRIBUTOR,
    "sub_distributor": _DISTRIBUTOR,
    "pm": _PM,
}
PORTALS: Final = {
    "installer": "Installer Portal",
    "sub_installer": "Installer Portal",
    "distributor": "Distributor Portal",
    "sub_distributor": "Distributor Portal",
    "pm": "Property Manager Portal",
}


def menu(actor: Actor, _label: SessionLabel) -> tuple[Item, ...]:
    return MENUS.get(actor.role, ())


DONE: Final = {
    "site_added": "The site was created.",
    "site_saved": "The site was saved.",
    "site_deleted": "The site was deleted.",
    "apartment_added": "The apartment was added.",
    "device_added": "The device was added.",
    "app_added": "The app account was added.",
    "switched": "The service switch was saved.",
    "pm_added": "The property manager was created: a link to set a password was emailed.",
    "pm_saved": "Saved.",
    "user_removed": "The user was deleted: it can no longer log in.",
    "sub_added": "The sub account was created: a link to set a password was emailed.",
    "reset_sent": "A link to reset the password was emailed.",
    "grant_saved": "Pay by Installer was saved.",
    "order_placed": "The order is pending: pay it within 15 minutes.",
    "paid": "Paid. The services were extended.",
    "auto_cancelled": "Auto-renewal was cancelled.",
    "credits_bought": "The credits were added.",
    "allocated": "The credits were allocated.",
    "upgrade_added": "The upgrade was created.",
    "upgrade_saved": "The upgrade was saved.",
    "upgrade_deleted": "The upgrade was deleted.",
    "rollout_resumed": "The rollout goes on.",
    "rollout_paused": "The rollout is paused: no wave more until it is resumed.",
    "rollout_cancelled": "The rollout was cancelled.",
    "mac_removed": "The MAC was removed from the library.",
    "setting_saved": "Saved.",
    "coupon_given": "The coupon was given.",
    "password_changed": "The password was changed. Other sessions were logged out.",
    "switched_into": "You are acting in this installer's portal.",
    "switched_back": "You are back in your own portal.",
    "email_sent": "A confirmation link was emailed. Follow it to go on.",
    "reset_asked": "If there is such an account, a link to reset its password was emailed.",
    "password_set": "The password was set. Log in with it.",
    "email_confirmed": "The email address was confirmed.",
}

LABELS: Final = {
    "community": "Community",
    "commercial": "Office",
    "single_family": "Single-Family House",
    "distributor": "Distributor",
    "sub_distributor": "Sub-distributor",
    "installer": "Installer",
    "sub_installer": "Sub-installer",
    "pm": "Property manager",
    "none": "No Permission",
    "regular": "Stripe/PayPal/Coupon",
    "credit": "Credits",
}


def label(code: object) -> str:
    text = str(code)
    return LABELS.get(text, text.replace("_", " ").capitalize())


def day(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d")
    return str(value)


def when(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def money(amount: object, method: str = "regular") -> str:
    if not isinstance(amount, int):
        return str(amount)
    return f"{amount} credits" if method == "credit" else f"${amount / 100:,.2f}"
