"""The ledger's rules (issue 16) driven through ``smartplus-cloud``, one test (or table row) per rule, each
citing the seed line it comes from (docs/cloud.md has the same table). The clock is ``--now``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud_stub import rules
from cloud_stub.operations import ingest, issuing, sites
from tests.support.brokers import free_port
from tests.support.ledger import LedgerAt, call, cloud

T0 = "2026-12-01T09:00:00+00:00"
T0_EPOCH = datetime.fromisoformat(T0).timestamp()
MONITOR_1, MONITOR_2, FOREIGN = "0c1100000101", "0c1100000102", "0c1100000201"
DOOR_PHONE = "0c1100000301"


def at(seconds: float) -> str:
    """``--now`` for ``seconds`` after T0."""
    return datetime.fromtimestamp(T0_EPOCH + seconds, UTC).isoformat()


def run(ledger: LedgerAt, *args: str, actor: str | None = None, now: str = T0) -> tuple[int, Any]:
    return cloud(ledger, "--now", now, *args, actor=actor)


def ok(ledger: LedgerAt, *args: str, actor: str | None = None, now: str = T0) -> Any:
    code, out = run(ledger, *args, actor=actor, now=now)
    assert code == 0, (args, out)
    return out["result"]


def refused(ledger: LedgerAt, *args: str, actor: str | None = None, now: str = T0) -> str:
    code, out = run(ledger, *args, actor=actor, now=now)
    assert code in (1, 2), (args, out)
    assert isinstance(out, dict), (args, out)
    assert out["seed"], out
    return str(out["rule"])


@pytest.fixture
def ledger(ledger_at: LedgerAt) -> LedgerAt:
    """Two distributors; d1 with a sub-distributor; installers under each; a sub-installer and a PM of i1;
    an office (new commercial, Shanghai), a community and a single-family house of i1, an office of i2; on
    SQLite, then on PostgreSQL."""
    path = ledger_at
    for args, actor in [
        (("add-account", "d1", "--role", "distributor", "--name", "D1"), None),
        (("add-account", "d2", "--role", "distributor", "--name", "D2"), None),
        (("add-account", "sd1", "--role", "sub_distributor", "--name", "SD1", "--parent", "d1"), None),
        (("add-account", "i1", "--role", "installer", "--name", "I1", "--parent", "d1", "--permission", "credit"),
         None),
        (("add-account", "i2", "--role", "installer", "--name", "I2", "--parent", "sd1", "--permission", "credit"),
         None),
        (("add-account", "i3", "--role", "installer", "--name", "I3", "--parent", "d2", "--permission", "regular"),
         None),
        (("add-account", "si1", "--role", "sub_installer", "--name", "SI1", "--parent", "i1"), None),
        (("add-account", "pm1", "--role", "pm", "--name", "PM1", "--parent", "i1"), None),
        (("add-account", "pm3", "--role", "pm", "--name", "PM3", "--parent", "i3"), None),
        (("buy-credits", "1000"), "d1"),
        (("allocate", "i1", "300"), "d1"),
        (("allocate", "sd1", "200"), "d1"),
        (("allocate", "i2", "100"), "sd1"),
        (("add-project", "office", "--type", "commercial", "--installer", "i1", "--created", "2025-07-01",
          "--door", "door-1", "--door", "door-2", "--door", "door-3", "--timezone", "Asia/Shanghai", "--pm", "pm1"),
         None),
        (("add-project", "towers", "--type", "community", "--installer", "i1", "--created", "2024-03-01",
          "--pm", "pm1"), None),
        (("add-project", "house", "--type", "single_family", "--installer", "i1", "--created", "2024-03-01"), None),
        (("add-project", "office2", "--type", "commercial", "--installer", "i2", "--created", "2025-07-01",
          "--door", "door-1", "--door", "door-2"), None),
        (("add-project", "villa", "--type", "single_family", "--installer", "i3", "--created", "2024-03-01"), None),
        (("add-device", MONITOR_1, "--distributor", "d1", "--model", "X933"), None),
        (("add-device", MONITOR_2, "--distributor", "d1", "--model", "X933"), None),
        (("add-device", FOREIGN, "--distributor", "d2", "--model", "X933"), None),
        (("add-device", DOOR_PHONE, "--distributor", "d1", "--model", "R29", "--project", "office"), "i1"),
        (("add-apartment", "towers", "101", "--device-mac", MONITOR_1, "--device-name", "IM 101"), "i1"),
        (("add-apartment", "towers", "102", "--service", "with_indoor_monitor=off"), "i1"),
        (("add-app-account", "towers", "r-1", "--role", "master", "--apartment", "101"), "i1"),
        (("add-app-account", "towers", "r-2", "--role", "master", "--apartment", "102"), "i1"),
        (("add-app-account", "towers", "pm-7", "--role", "pm"), "i1"),
        (("add-app-account", "office", "a-1", "--role", "personnel"), "i1"),
        (("add-app-account", "house", "h-1", "--role", "master"), "i1"),
    ]:  # fmt: skip
        ok(path, *args, actor=actor)
    return path


DOOR2 = ("--item", "office/door/door:door-2", "--renew-to", "2027-01-31")
APP1 = ("--item", "towers/app/account:r-1", "--months", "1")


# -- 1. authority over sites (seed 001 "Roles and Permissions") ----------------------------------------------
AUTHORITY: list[tuple[str, tuple[str, ...], str | None, str | None]] = [
    ("an installer for its own site", ("quote", *DOOR2), "i1", None),
    ("an installer for another installer's site", ("quote", *DOOR2), "i2", "not_yours"),
    ("a sub-installer for its main account's site", ("quote", *DOOR2), "si1", None),
    ("a distributor for its installer's site", ("quote", *DOOR2), "d1", None),
    ("a distributor for its sub-distributor's installer's site",
     ("quote", "--item", "office2/door/door:door-2", "--renew-to", "2027-01-31"), "d1", None),
    ("a sub-distributor for its installer's site",
     ("quote", "--item", "office2/door/door:door-2", "--renew-to", "2027-01-31"), "sd1", None),
    ("a sub-distributor for its parent's other installers' sites", ("quote", *DOOR2), "sd1", "not_yours"),
    ("another distributor", ("quote", *DOOR2), "d2", "not_yours"),
    ("a PM of another site", ("quote", *APP1), "pm3", "not_yours"),
    ("switching another's service", ("switch", "towers", "landline"), "i3", "not_yours"),
    ("an apartment in another's site", ("add-apartment", "towers", "103", "--service", "with_indoor_monitor=off"),
     "i3", "not_yours"),
    ("an app account in another's site", ("add-app-account", "towers", "r-9", "--role", "pm"), "i3", "not_yours"),
    ("a device into another's site",
     ("add-device", FOREIGN, "--distributor", "d2", "--model", "X933", "--project", "towers"), "i3", "not_yours"),
    ("an upgrade of another's site", ("upgrade", "u-9", "--project", "office", "--model", "R29", "--version", "1"),
     "i3", "not_yours"),
    ("editing another's site", ("site-set", "office", "time_format=24h"), "i3", "not_yours"),
    ("deleting another's site", ("delete-site", "office"), "i3", "not_yours"),
    ("rebooting another's device", ("reboot", DOOR_PHONE, "--wait", "0"), "i3", "not_yours"),
    ("a MAC from another distributor's library",
     ("add-device", FOREIGN, "--distributor", "d2", "--model", "X933", "--project", "towers"), "i1", "not_yours"),
    ("another distributor's MAC as an indoor monitor",
     ("add-apartment", "towers", "103", "--device-mac", FOREIGN, "--device-name", "IM"), "i1", "not_yours"),
    ("a malformed MAC", ("add-device", "0c11-zz", "--distributor", "d1", "--model", "R29"), None, "bad_mac"),
    ("a MAC already in another site",
     ("add-apartment", "towers", "103", "--device-mac", DOOR_PHONE, "--device-name", "IM"), "i1", "device_taken"),
    ("a PM of another installer", ("add-project", "p9", "--type", "community", "--installer", "i1", "--created",
                                   "2025-01-01", "--pm", "pm3"), None, "not_yours"),
    ("assigning a PM of another installer", ("site-set", "towers", "pm=pm3"), "i1", "not_yours"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "actor", "rule"), [r[1:] for r in AUTHORITY], ids=[r[0] for r in AUTHORITY])
def test_who_acts_for_which_site(ledger: LedgerAt, args: tuple[str, ...], actor: str | None, rule: str | None) -> None:
    if rule is None:
        ok(ledger, *args, actor=actor)
    else:
        assert refused(ledger, *args, actor=actor) == rule


def test_sites_lists_what_each_account_acts_for(ledger: LedgerAt) -> None:
    def names(actor: str) -> list[str]:
        return [s["id"] for s in ok(ledger, "sites", actor=actor)]

    assert names("i1") == names("si1") == ["house", "office", "towers"]
    assert names("d1") == ["house", "office", "office2", "towers"]
    assert (names("sd1"), names("pm1"), names("i3")) == (["office2"], ["office", "towers"], ["villa"])


# -- 2. credits down the chain (seed 000 line 193; seed 001 PM Credit Payment; seed 002 row 8) ------------------
def test_credits_reach_pms_who_pay_new_commercial_sites_when_the_site_lets_them(ledger: LedgerAt) -> None:
    assert ok(ledger, "allocate", "pm1", "50", actor="d1")["remaining"] == 50  # a PM of its installer
    assert refused(ledger, "allocate", "pm1", "5", actor="sd1") == "not_yours"  # not under sd1
    assert refused(ledger, "allocate", "pm3", "5", actor="d1") == "not_yours"
    assert ok(ledger, "allocate", "pm1", "10", actor="i1")["remaining"] == 60
    assert refused(ledger, "grant", "pm1", "regular", actor="i1") == "pay_by_pm_is_a_site_setting"
    # "Pay by PM" is the site's: off on the office, the PM may not pay there
    assert refused(ledger, "quote", *DOOR2, actor="pm1") == "no_permission"
    ok(ledger, "site-set", "office", "pay_by_pm=regular", actor="i1")
    paid = ok(ledger, "renew", *DOOR2, "--source", "credit", actor="pm1")
    assert paid["method"] == "credit"
    assert paid["paid"] > 0
    totals = ok(ledger, "credit-log", actor="pm1")
    assert (totals["available"], totals["total"], totals["used"]) == (60 - paid["paid"], 60, paid["paid"])
    assert [e["amount"] for e in totals["log"]] == [50, 10, -paid["paid"]]
    # the setting is per site: towers still says No Permission
    assert refused(ledger, "quote", *APP1, actor="pm1") == "no_permission"
    assert refused(ledger, "site-set", "office", "pay_by_pm=credit", actor="i1") == "bad_permission"


def test_the_distributors_credit_log_adds_up(ledger: LedgerAt) -> None:
    log = ok(ledger, "credit-log", actor="d1")
    assert (log["available"], log["total"], log["used"]) == (500, 1000, 500)
    assert [(e["amount"], e["remaining"]) for e in log["log"]] == [(1000, 1000), (-300, 700), (-200, 500)]


# -- 3. orders (DOMAIN.md Paying; seed 001 line 284; seed 002 line 186; seed 000 lines 157-167) ----------------
def test_an_order_waits_15_minutes_for_its_payment(ledger: LedgerAt) -> None:
    placed = ok(ledger, "order", *APP1, "--source", "stripe", actor="i1")
    assert placed["status"] == "pending"
    assert len(placed["txn"]) == 17
    assert placed["txn"].isdigit()
    assert refused(ledger, "pay", placed["txn"], actor="i1", now=at(16 * 60)) == "order_expired"
    assert refused(ledger, "pay", placed["txn"], actor="i1", now=at(17 * 60)) == "not_pending"
    again = ok(ledger, "order", *APP1, "--source", "paypal", actor="i1")
    assert refused(ledger, "pay", again["txn"], actor="i3") == "not_yours"  # someone else's order
    assert ok(ledger, "pay", again["txn"], actor="i1", now=at(14 * 60))["paid"] == again["amount"]
    assert refused(ledger, "pay", again["txn"], actor="i1", now=at(14 * 60)) == "not_pending"
    records = ok(ledger, "payments", actor="i1")
    assert [(r["txn"], r["status"]) for r in records] == [(again["txn"], "paid"), (placed["txn"], "expired")]
    assert ok(ledger, "payments", actor="d1") == []  # per payer


def test_auto_renewal_is_one_recorded_order_per_cycle_until_cancelled(ledger: LedgerAt) -> None:
    ok(ledger, "renew", *APP1, "--source", "stripe", "--auto-renew", actor="i1")
    expires = next(s for s in ok(ledger, "services", "towers") if s["service"] == "app")["expires"]
    first = expires - T0_EPOCH
    assert first == 30 * rules.DAY
    assert ok(ledger, "auto-renew", now=at(first - 60)) == []  # not before the upcoming expiry
    renewed = ok(ledger, "auto-renew", now=at(first))
    assert [(r["subject"], r["expires"] - expires) for r in renewed] == [("account:r-1", 30 * rules.DAY)]
    assert ok(ledger, "auto-renew", now=at(first + 3600)) == []  # once per cycle
    auto = [r for r in ok(ledger, "payments", actor="i1") if r["kind"] == "auto"]
    assert [(r["status"], r["source"], r["amount"], r["items"]) for r in auto] == [
        ("paid", "stripe", 100, [{"project": "towers", "service": "app", "subject": "account:r-1"}])
    ]
    assert ok(ledger, "cancel-auto-renew", "--item", "towers/app/account:r-1", actor="i1") == {"cancelled": 1}
    assert ok(ledger, "auto-renew", now=at(first + 30 * rules.DAY)) == []
    assert refused(ledger, "cancel-auto-renew", "--item", "towers/app/account:r-1", actor="i3") == "not_yours"


def test_auto_renewal_after_a_long_outage_charges_one_cycle_from_now(ledger: LedgerAt) -> None:
    ok(ledger, "renew", *APP1, "--source", "stripe", "--auto-renew", actor="i1")
    late = 200 * rules.DAY
    renewed = ok(ledger, "auto-renew", now=at(late))
    assert [r["expires"] - (T0_EPOCH + late) for r in renewed] == [30 * rules.DAY]
    assert len([r for r in ok(ledger, "payments", actor="i1") if r["kind"] == "auto"]) == 1


# -- 4. charges that match (seed 000 lines 147-149; seed 001 lines 256-257; seed 002 row 11) --------------------
def test_an_item_named_twice_is_charged_once(ledger: LedgerAt) -> None:
    once = ok(ledger, "quote", *APP1, actor="i1")
    twice = ok(ledger, "quote", *APP1, "--item", "towers/app/account:r-1", actor="i1")
    assert (twice["amount"], len(twice["items"])) == (once["amount"], 1)


@pytest.mark.parametrize(
    ("item", "rule"),
    [
        ("towers/app/account:nobody", "unknown_account"),
        ("towers/pm_app/account:r-1", "wrong_account_service"),
        ("towers/landline/apartment:999", "unknown_apartment"),
        ("office/personnel_app/account:r-1", "unknown_account"),
    ],
)
def test_an_item_for_what_the_site_does_not_have_is_refused(ledger: LedgerAt, item: str, rule: str) -> None:
    length = ("--months", "1") if item.startswith("towers/") else ("--renew-to", "2027-01-31")
    assert refused(ledger, "quote", "--item", item, *length, actor="i1") == rule


def test_all_doors_quotes_every_door_but_the_free_one(ledger: LedgerAt) -> None:
    quoted = ok(ledger, "quote", "--site", "office", "--service", "door", "--renew-to", "2027-01-31", actor="i1")
    assert [(i["project"], i["service"], i["subject"]) for i in quoted["items"]] == [
        ("office", "door", "door:door-2"),
        ("office", "door", "door:door-3"),
    ]
    everything = ok(ledger, "quote", "--site", "office", "--renew-to", "2027-01-31", actor="i1")
    assert {i["subject"] for i in everything["items"]} == {"door:door-2", "door:door-3", "account:a-1"}


def test_renew_to_ends_at_the_last_second_of_the_day_in_the_sites_zone(ledger: LedgerAt) -> None:
    quoted = ok(ledger, "quote", *DOOR2, actor="i1")
    assert quoted["items"][0]["expires"] == datetime.fromisoformat("2027-01-31T23:59:59+08:00").timestamp()


def test_attendance_plans_are_priced_apart_and_bounded(ledger: LedgerAt) -> None:
    item = ("--item", "office/attendance/project", "--renew-to", "2027-01-31")
    assert refused(ledger, "quote", *item, actor="i1") == "plan_needed"
    small = ok(ledger, "quote", *item, "--plan", "0-200", actor="i1")
    large = ok(ledger, "quote", *item, "--plan", "201+", actor="i1")
    assert large["amount"] > small["amount"] > 0
    assert large["items"][0]["plan"] == "201+"
    book = ledger.open()
    try:
        for n in range(rules.SMALL_PLAN_LIMIT):  # 201 personnel with a-1
            call(
                book, sites.add_app_account, "i1", sites.AddAppAccount(project="office", id=f"p-{n}", role="personnel")
            )
    finally:
        book.close()
    assert refused(ledger, "quote", *item, "--plan", "0-200", actor="i1") == "plan_too_small"
    ok(ledger, "quote", *item, "--plan", "201+", actor="i1")


# -- 5. community services (seed 003) ---------------------------------------------------------------------------
def test_only_three_services_are_set_per_apartment(ledger: LedgerAt) -> None:
    assert refused(ledger, "switch", "towers", "package_room", "--apartment", "101", actor="i1") == "not_per_apartment"
    assert refused(ledger, "add-apartment", "towers", "103", "--service", "booking=on", actor="i1") == (
        "not_per_apartment"
    )
    for service in rules.APARTMENT_SERVICES:
        ok(ledger, "switch", "towers", service, "--apartment", "102", actor="i1")


def test_with_indoor_monitor_on_an_apartment_needs_its_monitor_and_changes_the_app_charge(ledger: LedgerAt) -> None:
    assert refused(ledger, "add-apartment", "towers", "103", actor="i1") == "indoor_monitor_needed"
    ok(ledger, "add-apartment", "towers", "103", "--device-mac", MONITOR_2, "--device-name", "IM 103", actor="i1")
    with_monitor = ok(ledger, "quote", *APP1, actor="i1")["amount"]
    without = ok(ledger, "quote", "--item", "towers/app/account:r-2", "--months", "1", actor="i1")["amount"]
    assert (with_monitor, without) == (100, rules.APP_WITHOUT_MONITOR)
    ok(ledger, "switch", "towers", "with_indoor_monitor", "--off", actor="i1")  # community default off
    ok(ledger, "add-apartment", "towers", "104", actor="i1")  # no monitor needed now


def test_pm_app_is_locked_on_while_a_pm_app_account_is_active(ledger: LedgerAt) -> None:
    ok(ledger, "renew", "--item", "towers/pm_app/account:pm-7", "--months", "1", "--source", "stripe", actor="i1")
    assert refused(ledger, "switch", "towers", "pm_app", "--off", actor="i1") == "pm_app_locked"
    assert ok(ledger, "switch", "towers", "pm_app", "--off", actor="i1", now=at(31 * rules.DAY))["changed"] == 1


def test_a_switched_off_service_cannot_be_paid_for_and_bulk_updates_cover_every_apartment(ledger: LedgerAt) -> None:
    landline = ("quote", "--item", "towers/landline/apartment:101", "--months", "1")
    assert refused(ledger, *landline, actor="i1") == "switched_off"
    assert refused(ledger, "quote", "--item", "towers/booking/project", "--months", "1", actor="i1") == "switched_off"
    assert ok(ledger, "switch", "towers", "landline", "--all-apartments", actor="i1")["changed"] == 2
    assert all(a["landline"] for a in ok(ledger, "apartments", "towers"))
    ok(ledger, *landline, actor="i1")
    assert refused(ledger, "switch", "towers", "video_storage", "--all-apartments", actor="i1") == "not_bulk"
    quoted = ok(ledger, "quote", "--site", "towers", "--service", "landline", "--months", "1", actor="i1")
    assert [i["subject"] for i in quoted["items"]] == ["apartment:101", "apartment:102"]


def test_integration_is_set_by_a_pms_never_sold(ledger: LedgerAt) -> None:
    quote = ("quote", "--item", "towers/integration/project", "--months", "1")
    assert refused(ledger, *quote, actor="i1") == "integration_is_automatic"
    assert refused(ledger, "switch", "towers", "integration", actor="i1") == "integration_is_automatic"
    ok(ledger, "integrate", "towers", "--pms", "Yardi", actor="i1")
    assert [s["service"] for s in ok(ledger, "services", "towers") if s["service"] == "integration"] == ["integration"]
    ok(ledger, "integrate", "towers", "--off", actor="i1")
    assert not [s for s in ok(ledger, "services", "towers") if s["service"] == "integration"]


# -- 6. notices and settings (seed 002 rows 9-10, line 195; DOMAIN.md site settings) -----------------------------
def test_expiration_and_renewal_notices_follow_the_site_and_installer_settings(ledger: LedgerAt) -> None:
    ok(ledger, "renew", *APP1, "--source", "stripe", actor="i1")
    renewal = [(n["role"], n["recipient"]) for n in ok(ledger, "notices", "--site", "towers") if n["stage"] == 0]
    assert renewal == [("installer", "i1"), ("pm", "pm1")]
    ok(ledger, "site-set", "towers", "renew_notices=false", "pm_notices=false", actor="i1")
    ok(ledger, "renew", *APP1, "--source", "stripe", actor="i1")
    roles = [n["role"] for n in ok(ledger, "notices", "--site", "towers") if n["stage"] == 0]
    assert roles == ["installer", "pm", "installer"]
    expires = next(s for s in ok(ledger, "services", "towers") if s["service"] == "app")["expires"]
    raised = ok(ledger, "notices", now=at(expires - T0_EPOCH - 5 * rules.DAY))
    assert [(n["stage"], n["role"]) for n in raised if n["project"] == "towers"] == [(5, "installer")]
    # single-family: end users hear of expiry unless the installer's email setting is off
    ok(ledger, "renew", "--item", "house/app/account:h-1", "--months", "1", "--source", "stripe", actor="i1")
    ok(ledger, "email-setting", "off", actor="i1")
    raised = ok(ledger, "notices", now=at(30 * rules.DAY - 3 * rules.DAY))
    assert [n for n in raised if n["project"] == "house"] == []
    ok(ledger, "email-setting", "on", actor="i1")
    raised = ok(ledger, "notices", now=at(30 * rules.DAY - rules.DAY))
    assert [(n["stage"], n["role"]) for n in raised if n["project"] == "house"] == [(1, "end_user")]


def test_site_settings_reach_the_devices_document_and_bad_ones_are_refused(ledger: LedgerAt) -> None:
    ok(ledger, "site-set", "office", "time_format=24h", "landline=true", "visitor_call_door_log=false",
       "name=Head office", "timezone=Europe/Berlin", actor="i1")  # fmt: skip
    book = ledger.open()
    try:
        claims = book.read(lambda uow: issuing.claims_for(uow, DOOR_PHONE))
    finally:
        book.close()
    assert claims["settings"] == {"time_format": "24h", "landline": True, "visitor_call_door_log": False,
                                  "timezone": "Europe/Berlin"}  # fmt: skip
    assert claims["project"]["timezone"] == "Europe/Berlin"
    assert refused(ledger, "site-set", "office", "time_format=25h", actor="i1") == "bad_setting"
    assert refused(ledger, "site-set", "office", "timezone=Mars/Base", actor="i1") == "bad_timezone"
    assert refused(ledger, "site-set", "office", "secret_door=true", actor="i1") == "bad_setting"
    assert run(ledger, "site-set", "office", "nonsense", actor="i1")[0] == 2


def test_deleting_a_site_returns_its_devices_to_the_library(ledger: LedgerAt) -> None:
    gone = ok(ledger, "delete-site", "towers", actor="i1")
    assert (gone["devices"], gone["apartments"], gone["app_accounts"]) == (1, 2, 3)
    assert run(ledger, "services", "towers")[0] == 2  # unknown now
    # the monitor is back in d1's library, free for another site of d1's installers
    ok(ledger, "add-device", MONITOR_1, "--distributor", "d1", "--model", "X933", "--project", "house", actor="i1")


# -- 7. upgrades (seed 002 lines 445-448, 751) ---------------------------------------------------------------
def test_upgrades_listed_by_status_edited_while_pending_and_deleted(ledger: LedgerAt, tmp_path: Path) -> None:
    image = tmp_path / "r29.bin"
    image.write_bytes(os.urandom(512))
    for version in ("29.30.10.1", "29.30.10.2"):
        ok(ledger, "add-firmware", "R29", version, str(image))
    ok(ledger, "upgrade", "u-1", "--project", "office", "--model", "R29", "--version", "29.30.10.1", actor="i1")
    ok(ledger, "upgrade", "u-2", "--project", "office", "--model", "R29", "--version", "29.30.10.1",
       "--at", "2027-01-01T02:00:00+08:00", actor="i1")  # fmt: skip

    def listed(status: str | None = None) -> list[str]:
        return [u["id"] for u in ok(ledger, "upgrades", *(("--status", status) if status else ()), actor="i1")]

    assert (listed(), listed("Pending"), listed("Processing")) == (["u-2", "u-1"], ["u-2", "u-1"], [])
    assert ok(ledger, "upgrades", actor="i3") == []
    edited = ok(ledger, "edit-upgrade", "u-2", "--version", "29.30.10.2", "--right-now", actor="i1")
    assert (edited["version"], edited["at"]) == ("29.30.10.2", None)
    assert refused(ledger, "edit-upgrade", "u-2", "--version", "9.9", actor="i1") == "unknown_firmware"
    book = ledger.open(lambda: T0_EPOCH)
    try:  # the device reports it is downloading u-1, then that it is done
        event = {"event_id": "e-1", "seq": 1, "type": "firmware", "kind": "downloading", "data": {"job_id": "u-1"}}
        book.run(lambda uow: ingest.take_event(uow, DOOR_PHONE, event))
        assert listed("Processing") == ["u-1"]
        assert refused(ledger, "edit-upgrade", "u-1", "--right-now", actor="i1") == "already_started"
        assert refused(ledger, "delete-upgrade", "u-1", actor="i1") == "already_started"
        done = {**event, "event_id": "e-2", "seq": 2, "kind": "executed"}
        book.run(lambda uow: ingest.take_event(uow, DOOR_PHONE, done))
    finally:
        book.close()
    assert listed("Executed") == ["u-1"]
    ok(ledger, "delete-upgrade", "u-2", actor="i1")
    assert listed() == ["u-1"]
    code, out = run(ledger, "delete-upgrade", "u-2", actor="i1")
    assert (code, out["rule"]) == (2, "not_found")


# -- 8. CLI hygiene ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("add-project", "p2", "--type", "community", "--installer", "i1", "--created", "2025-02-30"),
        ("add-project", "p2", "--type", "community", "--installer", "i1", "--created", "2025-02-01",
         "--timezone", "Nowhere/Town"),
        ("services", "no-such-site"),
        ("credit-log", "nobody"),
        ("pay", "12345678901234567"),
        ("upgrade-status", "no-such-upgrade"),
        ("quote", "--item", "office:door", "--months", "1"),
        ("quote", "--item", "office/door/door:door-2", "--renew-to", "2027-02-30"),
        ("upgrade", "u-1", "--project", "office", "--model", "R29", "--version", "1", "--at", "tomorrow"),
        ("--now", "yesterday", "services", "office"),
    ],
)  # fmt: skip
def test_a_bad_argument_exits_2_with_one_line(ledger: LedgerAt, args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloud_stub.cli", *ledger.args(), "--as", "i1", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert "Traceback" not in result.stderr


def test_serve_without_the_embedded_broker_says_what_to_install(ledger: LedgerAt) -> None:
    code = (
        "import sys; sys.modules['amqtt'] = None\n"  # as if the [embedded] extra were not installed
        "from cloud_stub.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *ledger.args(), "serve", "--port", str(free_port()), "--images-port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert "pip install 'smartplus-edge[embedded]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_json_of_every_refusal_names_rule_and_seed(ledger: LedgerAt) -> None:
    code, out = run(ledger, "quote", *DOOR2, actor="i2")
    assert code == 1
    assert out["ok"] is False
    assert out["seed"] == "seed 001 Roles and Permissions"
