"""The vendor's subscription rules in the ledger, one row each, citing the seed line it comes from
(../shared/seeds/; DOMAIN.md distils them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cloud_stub.ledger import Ledger
from cloud_stub.rules import DAY, Refused

NOW = 1_795_000_000.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "ledger.db")
    book.add_account("d1", "distributor", "Distributor One")
    book.add_account("i1", "installer", "Installer Credit", parent="d1", permission="credit")
    book.add_account("i2", "installer", "Installer None", parent="d1", permission="none")
    book.add_account("i3", "installer", "Installer Regular", parent="d1", permission="regular")
    book.add_account("pm1", "pm", "PM One", parent="i1")
    book.add_project("new-office", "commercial", "i1", date(2025, 7, 1), doors=("door-1", "door-2"), pm="pm1")
    book.add_project("old-office", "commercial", "i1", date(2025, 1, 10), doors=("door-1", "door-2"))
    book.add_project("towers", "community", "i1", date(2024, 3, 1), pm="pm1")
    book.add_project("house", "single_family", "i3", date(2024, 3, 1))
    book.buy_credits("d1", 1000, "stripe", NOW)
    book.allocate("d1", "i1", 500, NOW)
    book.add_device("0c1100000101", "d1", "X933")  # the indoor monitor of towers' apartment 101
    book.add_apartment("towers", "101", "101", device=("0c1100000101", "monitor 101"))
    book.add_app_account("towers", "r-1", "master", "R", apartment="101")
    book.add_app_account("towers", "pm-7", "pm", "PM")
    book.add_app_account("house", "h-1", "master", "H")
    yield book
    book.close()


def pay(book: Ledger, payer: str, items: list[tuple[str, str, str]], source: str, **quote: Any) -> dict[str, Any]:
    return book.pay(book.order(payer, book.quote(payer, items, NOW, **quote), source, NOW), NOW)


def switch_off_after_paying_pm_app(book: Ledger) -> None:
    pay(book, "i1", [("towers", "pm_app", "account:pm-7")], "stripe", months=1)
    book.switch("towers", "pm_app", "project", on=False)


DOOR2 = [("new-office", "door", "door:door-2")]
APP = [("towers", "app", "account:r-1")]


# (why, operation, the rule it must be refused with, or None when allowed)
RULES: list[tuple[str, Callable[[Ledger], Any], str | None]] = [
    # seed 000 lines 115-121: communities pay regularly (Stripe, PayPal, coupon)
    ("community pays by Stripe", lambda b: pay(b, "i1", APP, "stripe", months=1), None),
    ("community pays by coupon", lambda b: pay(b, "i1", APP, "coupon", months=1), None),
    ("community cannot pay with credits", lambda b: pay(b, "i1", APP, "credit", months=1), "wrong_source"),
    # seed 000 lines 125-127: so do single-family houses
    (
        "single family pays by PayPal",
        lambda b: pay(b, "i3", [("house", "app", "account:h-1")], "paypal", months=12),
        None,
    ),
    # seed 000 lines 129-133; seed 001 line 50: commercial projects created on/after 2025-06-01 pay with credits
    ("new commercial pays with credits", lambda b: pay(b, "i1", DOOR2, "credit", renew_to=NOW + 90 * DAY), None),
    (
        "new commercial cannot pay by Stripe",
        lambda b: pay(b, "i1", DOOR2, "stripe", renew_to=NOW + 90 * DAY),
        "wrong_source",
    ),
    # DOMAIN.md "Paying": older commercial projects need no payment
    (
        "old commercial needs no payment",
        lambda b: b.quote("i1", [("old-office", "door", "door:door-2")], NOW, months=1),
        "no_payment_needed",
    ),
    # seed 001 line 220: credit renewal names a "renew to" date
    ("credit renewal needs a renew-to date", lambda b: b.quote("i1", DOOR2, NOW, months=3), "renew_to_needed"),
    # seed 000 line 165: coupons are not supported for auto-renewal
    (
        "coupon cannot pay auto-renewal",
        lambda b: b.pay(b.order("i1", b.quote("i1", APP, NOW, months=1), "coupon", NOW), NOW, auto_renew=True),
        "coupon_auto_renew",
    ),
    # seed 000 line 167: new commercial projects do not support auto-renewal
    (
        "new commercial cannot auto-renew",
        lambda b: b.pay(
            b.order("i1", b.quote("i1", DOOR2, NOW, renew_to=NOW + 60 * DAY), "credit", NOW), NOW, auto_renew=True
        ),
        "commercial_auto_renew",
    ),
    (
        "community may auto-renew by Stripe",
        lambda b: b.pay(b.order("i1", b.quote("i1", APP, NOW, months=1), "stripe", NOW), NOW, auto_renew=True),
        None,
    ),
    # seed 001 line 54: installers need their distributor's permission to pay
    ("installer without permission", lambda b: b.quote("i2", APP, NOW, months=1), "no_permission"),
    # DOMAIN.md Paying / seed 001 "Roles and Permissions": each payer acts only for its own sites
    ("an installer paying for another installer's site", lambda b: b.quote("i3", APP, NOW, months=1), "not_yours"),
    # seed 002 line 247: "Pay by Installer" regular does not allow credits
    (
        "installer with regular permission pays credits",
        lambda b: b.quote("i3", DOOR2, NOW, renew_to=NOW + 30 * DAY),
        "no_credit_permission",
    ),
    # seed 002 line 247: "Pay by PM" is none or regular, never credit
    ("PM granted credit", lambda b: b.grant("i1", "pm1", "credit"), "pay_by_pm_is_a_site_setting"),
    ("PM granted regular by its installer", lambda b: b.grant("i1", "pm1", "regular"), "pay_by_pm_is_a_site_setting"),
    ("PM granted by another installer", lambda b: b.grant("i3", "pm1", "regular"), "not_yours"),
    # DOMAIN.md "Paying": a pending order must be paid within 15 minutes
    (
        "order paid after 15 minutes",
        lambda b: b.pay(b.order("i1", b.quote("i1", APP, NOW, months=1), "stripe", NOW), NOW + 16 * 60),
        "order_expired",
    ),
    (
        "order paid within 15 minutes",
        lambda b: b.pay(b.order("i1", b.quote("i1", APP, NOW, months=1), "stripe", NOW), NOW + 14 * 60),
        None,
    ),
    # seed 000 line 177: credits are bought from the vendor by distributors
    ("an installer buys credits", lambda b: b.buy_credits("i1", 10, "stripe", NOW), "not_distributor"),
    # seed 000 line 193: allocated down the chain
    ("allocate to someone not under you", lambda b: b.allocate("i1", "i3", 10, NOW), "not_yours"),
    ("installer allocates to its PM", lambda b: b.allocate("i1", "pm1", 10, NOW), None),
    # seed 000 line 197: only what is available
    ("allocate more than held", lambda b: b.allocate("d1", "i3", 10_000, NOW), "not_enough_credits"),
    (
        "pay more credits than held",
        lambda b: pay(b, "i1", DOOR2, "credit", renew_to=NOW + 3650 * DAY),
        "not_enough_credits",
    ),
    # seed 003: PM App is forced on and locked while any PM App is active
    (
        "switch PM App off while one is active",
        lambda b: switch_off_after_paying_pm_app(b),
        "pm_app_locked",
    ),
    ("switch PM App off while none is active", lambda b: b.switch("towers", "pm_app", "project", on=False), None),
    # seed 003: resident accounts belong to apartments; DOMAIN.md: family beyond the free number is paid
    (
        "a resident without an apartment",
        lambda b: b.add_app_account("towers", "r-9", "master", "R"),
        "apartment_needed",
    ),
    ("personnel in a community", lambda b: b.add_app_account("towers", "p-1", "personnel", "P"), "bad_role"),
    ("apartments only in communities", lambda b: b.add_apartment("new-office", "101", "101"), "not_community"),
    # seed 002 line 773; DOMAIN.md: one free door per project, every further door is paid
    (
        "pay for the free door",
        lambda b: b.quote("i1", [("new-office", "door", "door:door-1")], NOW, renew_to=NOW + 60 * DAY),
        "free_door",
    ),
    (
        "a door the project does not have",
        lambda b: b.quote("i1", [("new-office", "door", "door:door-9")], NOW, renew_to=NOW + 60 * DAY),
        "unknown_door",
    ),
    (
        "an app sold for a door",
        lambda b: b.quote("i1", [("towers", "app", "door:door-1")], NOW, months=1),
        "bad_subject",
    ),
    # DOMAIN.md project types: each sells its own services
    (
        "a package room for an office",
        lambda b: b.quote("i1", [("new-office", "package_room", "project")], NOW, renew_to=NOW + 60 * DAY),
        "not_sold",
    ),
]


@pytest.mark.parametrize(("operation", "rule"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(ledger: Ledger, operation: Callable[[Ledger], Any], rule: str | None) -> None:
    if rule is None:
        operation(ledger)
        return
    with pytest.raises(Refused) as refused:
        operation(ledger)
    assert refused.value.rule == rule
    assert refused.value.seed  # every refusal names where its rule is written


def test_family_members_beyond_the_free_number_are_additional_apps(ledger: Ledger) -> None:
    """DOMAIN.md: Additional App (family members beyond the project's free number)."""
    ledger.db.execute("UPDATE projects SET free_apps = 1 WHERE id = 'towers'")
    assert ledger.add_app_account("towers", "r-4", "master", "Ann", apartment="101") == "app"
    assert ledger.add_app_account("towers", "r-2", "family", "Bob", apartment="101") == "app"  # the free one
    assert ledger.add_app_account("towers", "r-3", "family", "Cid", apartment="101") == "additional_app"
    assert ledger.add_app_account("new-office", "a-1", "personnel", "Dee") == "personnel_app"


def test_auto_renew_extends_the_upcoming_expiry_by_30_days(ledger: Ledger) -> None:
    """Seed 000 line 159: when the upcoming expiration is reached it moves on by 30 days, once per cycle."""
    quote = ledger.quote("i1", APP, NOW, months=1)
    ledger.pay(ledger.order("i1", quote, "stripe", NOW), NOW, auto_renew=True)
    before = next(s for s in ledger.services("towers") if s["service"] == "app")
    assert ledger.auto_renew(before["expires"] - DAY) == []
    renewed = ledger.auto_renew(before["expires"])
    assert [(p, s, new - before["expires"]) for p, s, _, new in renewed] == [("towers", "app", 30 * DAY)]
    assert ledger.auto_renew(before["expires"] + DAY) == []
    assert next((o["kind"], o["status"], o["source"]) for o in ledger.payments("i1")) == ("auto", "paid", "stripe")


def test_manual_renewal_extends_the_upcoming_expiry_by_the_chosen_length(ledger: Ledger) -> None:
    """Seed 000 line 161: the time the renewal lasts; a renewal starts from the upcoming expiry."""
    pay(ledger, "i1", APP, "stripe", months=1)
    first = next(s for s in ledger.services("towers") if s["service"] == "app")["expires"]
    pay(ledger, "i1", APP, "paypal", months=2)
    second = next(s for s in ledger.services("towers") if s["service"] == "app")["expires"]
    assert (first - NOW, second - first) == (30 * DAY, 60 * DAY)


def test_the_credit_renewal_summary_and_log(ledger: Ledger) -> None:
    """Seed 001 lines 220-224: "renew to", doors, personnel apps, admin apps, premium features;
    DOMAIN.md: credit logs record time, amount and remaining credit."""
    ledger.add_app_account("new-office", "a-1", "personnel", "Dee")
    items = [*DOOR2, ("new-office", "personnel_app", "account:a-1"), ("new-office", "attendance", "project")]
    quote = ledger.quote("i1", items, NOW, renew_to=NOW + 90 * DAY, plan="0-200")
    assert quote["summary"] == {"doors": 1, "personnel_apps": 1, "admin_apps": 0, "premium_features": 1, "apps": 0}
    assert quote["renew_to"] == NOW + 90 * DAY
    ledger.pay(ledger.order("i1", quote, "credit", NOW), NOW)
    log = ledger.credit_log("i1")
    assert [(e["amount"], e["remaining"]) for e in log] == [(500, 500), (-quote["amount"], 500 - quote["amount"])]
    assert all(e["at"] == NOW for e in log)


def test_expiration_notices_go_to_the_right_recipients_once(ledger: Ledger) -> None:
    """DOMAIN.md: 15 days installers; 5 days PMs and installers; 3 and 1 days end users; seed 002 line
    248: with the PM notice off, only installers are told."""
    pay(ledger, "i1", APP, "stripe", months=1)
    expires = next(s for s in ledger.services("towers") if s["service"] == "app")["expires"]
    seen = {}
    for days in (20, 15, 14, 5, 3, 1):
        seen[days] = [(n["stage"], n["role"]) for n in ledger.raise_notices(expires - days * DAY)]
    assert seen == {
        20: [],
        15: [(15, "installer")],
        14: [],
        5: [(5, "pm"), (5, "installer")],
        3: [(3, "end_user")],
        1: [(1, "end_user")],
    }
    ledger.set_pm_notices("towers", on=False)
    pay(ledger, "i1", APP, "stripe", months=1)  # a new expiry: notices again
    expires = next(s for s in ledger.services("towers") if s["service"] == "app")["expires"]
    assert [(n["stage"], n["role"]) for n in ledger.raise_notices(expires - 5 * DAY)] == [(5, "installer")]
    assert ledger.raise_notices(expires - 3 * DAY) == []


def test_a_pending_upgrade_can_be_edited_or_deleted_until_a_device_starts_it(ledger: Ledger, tmp_path: Path) -> None:
    """Seed 002 lines 445-448: edit the update set for devices pending the upgrade, or delete it; the
    devices then get a cancel. DOMAIN.md "Firmware": now or at a specific time, Reset After Upgrade."""
    from cloud_stub import ingest, rollouts

    image = tmp_path / "image.bin"
    image.write_bytes(b"\x00" * 100)
    ledger.add_device("0c110512ab34", "d1", "R29", project="new-office")
    rollouts.add_firmware(ledger, tmp_path / "images", "R29", "29.30.10.1", image, "fixes", NOW)
    rollouts.add_upgrade(ledger, "u-1", "new-office", "R29", "29.30.10.1", NOW, at=NOW + DAY, reset=True)
    job = rollouts.job_for(ledger, "0c110512ab34", "http://images/")
    assert job is not None
    assert (job["at"], job["reset_after_upgrade"], job["url"]) == (
        "2026-11-19T11:06:40Z",
        True,
        "http://images/R29-29.30.10.1.bin",
    )
    rollouts.edit_upgrade(ledger, "u-1", at=None)
    assert rollouts.job_for(ledger, "0c110512ab34", "http://images/")["at"] is None  # type: ignore[index]
    event = {"event_id": "e-1", "seq": 1, "type": "firmware", "kind": "downloading", "data": {"job_id": "u-1"}}
    assert ingest.take_event(ledger, "0c110512ab34", event, NOW)
    assert not ingest.take_event(ledger, "0c110512ab34", event, NOW)  # a duplicate is dropped
    assert rollouts.statuses(ledger, "u-1") == {"0c110512ab34": "Processing"}
    with pytest.raises(Refused) as refused:
        rollouts.delete_upgrade(ledger, "u-1")
    assert refused.value.rule == "already_started"
    rollouts.add_upgrade(ledger, "u-2", "new-office", "R29", "29.30.10.1", NOW + 1, at=NOW + DAY)
    rollouts.delete_upgrade(ledger, "u-2")
    assert rollouts.job_for(ledger, "0c110512ab34", "http://images/") == {
        "aud": "0c110512ab34",
        "job_id": "u-2",
        "cancel": True,
    }
    assert ingest.gaps(ledger, "0c110512ab34") == []


@pytest.mark.parametrize(
    ("actor", "role", "chain", "installer", "pm", "mine"),
    [
        ("i1", "installer", ("d1",), "i1", None, True),
        ("i2", "installer", ("d1",), "i1", None, False),
        ("d1", "distributor", ("d1",), "i1", None, True),  # its own installer's site
        ("d1", "distributor", ("s1", "d1"), "i1", None, True),  # its sub-distributor's installer's
        ("d2", "distributor", ("s1", "d1"), "i1", None, False),
        ("s1", "sub_distributor", ("s1", "d1"), "i1", None, True),
        ("s2", "sub_distributor", ("s1", "d1"), "i1", None, False),
        ("pm1", "pm", ("d1",), "i1", "pm1", True),
        ("pm2", "pm", ("d1",), "i1", "pm1", False),  # a PM only for the sites it is assigned to
        ("pm1", "pm", ("d1",), "i1", None, False),
    ],
)
def test_who_may_act_for_a_site(
    actor: str, role: str, chain: tuple[str, ...], installer: str, pm: str | None, mine: bool
) -> None:
    from cloud_stub.rules import Refused, check_authority

    if mine:
        check_authority(actor, role, chain, installer, pm)
    else:
        with pytest.raises(Refused) as refused:
            check_authority(actor, role, chain, installer, pm)
        assert refused.value.rule == "not_yours"
