"""The vendor's subscription rules in the operations layer, one row each, citing the seed line it comes from
(../shared/seeds/; DOMAIN.md distils them); on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import Ledger
from cloud_stub.operations import accounts, authority, credits, ingest, paying, sites, upgrades
from cloud_stub.operations.authority import Actor
from tests.support.ledger import LedgerAt

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
DAY = rules.DAY


def day_after(days: float) -> date:
    """The date ``days`` after NOW (a credit renewal's "renew to")."""
    return (datetime.fromtimestamp(NOW, UTC) + timedelta(days=days)).date()


class Cloud:
    """The operations as the rule rows ask for them, as any account, at a time the test sets."""

    def __init__(self, book: Ledger) -> None:
        self.book, self.now = book, NOW

    def actor(self, account: str | None) -> Actor:
        return authority.OPERATOR if account is None else self.book.read(lambda uow: authority.resolve(uow, account))

    def __call__(self, operation: Callable[..., Any], account: str | None, request: Any = None) -> Any:
        who = self.actor(account)
        return self.book.run(lambda uow: operation(uow, who) if request is None else operation(uow, who, request))

    def quote(self, payer: str, items: list[str], **length: Any) -> paying.Quote:
        return self(paying.quote, payer, paying.Selection(items=items, **length))  # type: ignore[no-any-return]

    def order(self, payer: str, items: list[str], source: str, **length: Any) -> str:
        return self(paying.place, payer, paying.PlaceOrder(items=items, source=source, **length)).txn  # type: ignore[no-any-return]

    def pay(self, payer: str, txn: str, *, auto_renew: bool = False, at: float = NOW) -> paying.Paid:
        self.now = at
        return self(paying.pay, payer, paying.Pay(txn=txn, auto_renew=auto_renew))  # type: ignore[no-any-return]

    def buy(self, payer: str, items: list[str], source: str, *, auto_renew: bool = False, **length: Any) -> Any:
        return self.pay(payer, self.order(payer, items, source, **length), auto_renew=auto_renew)

    def app_account(self, project: str, ident: str, role: str, apartment: str | None = None) -> str:
        asked = sites.AddAppAccount(project=project, id=ident, role=role, apartment=apartment)
        return self(sites.add_app_account, "i1" if project != "house" else "i3", asked)  # type: ignore[no-any-return]

    def services(self, project: str) -> list[sites.HoldingView]:
        return self.book.read(lambda uow: sites.services(uow, authority.OPERATOR, project))


@pytest.fixture
def cloud(ledger_at: LedgerAt) -> Iterator[Cloud]:
    book = ledger_at.open(lambda: cloud_.now)
    cloud_ = Cloud(book)
    operator = None
    for request in (
        accounts.AddAccount(id="d1", role="distributor", name="Distributor One"),
        accounts.AddAccount(id="i1", role="installer", name="Installer Credit", parent="d1", permission="credit"),
        accounts.AddAccount(id="i2", role="installer", name="Installer None", parent="d1", permission="none"),
        accounts.AddAccount(id="i3", role="installer", name="Installer Regular", parent="d1", permission="regular"),
        accounts.AddAccount(id="pm1", role="pm", name="PM One", parent="i1"),
    ):
        cloud_(accounts.add_account, operator, request)
    for site in (
        sites.AddSite(id="new-office", type="commercial", installer="i1", created=date(2025, 7, 1),
                      doors=["door-1", "door-2"], pm="pm1"),
        sites.AddSite(id="old-office", type="commercial", installer="i1", created=date(2025, 1, 10),
                      doors=["door-1", "door-2"]),
        sites.AddSite(id="towers", type="community", installer="i1", created=date(2024, 3, 1), pm="pm1"),
        sites.AddSite(id="house", type="single_family", installer="i3", created=date(2024, 3, 1)),
    ):  # fmt: skip
        cloud_(sites.add_site, operator, site)
    cloud_(credits.buy, "d1", credits.BuyCredits(amount=1000))
    cloud_(credits.allocate, "d1", credits.Allocate(account="i1", amount=500))
    cloud_(sites.add_device, operator, sites.AddDevice(mac="0c1100000101", distributor="d1", model="X933"))
    apartment = sites.AddApartment(
        project="towers", id="101", name="101", device_mac="0c1100000101", device_name="monitor 101"
    )
    cloud_(sites.add_apartment, "i1", apartment)
    cloud_.app_account("towers", "r-1", "master", apartment="101")
    cloud_.app_account("towers", "pm-7", "pm")
    cloud_.app_account("house", "h-1", "master")
    yield cloud_
    book.close()


DOOR2 = ["new-office/door/door:door-2"]
APP = ["towers/app/account:r-1"]


def switch_off_after_paying_pm_app(c: Cloud) -> None:
    c.buy("i1", ["towers/pm_app/account:pm-7"], "stripe", months=1)
    c(sites.switch, "i1", sites.Switch(project="towers", service="pm_app", on=False))


# (why, operation, the rule it must be refused with, or None when allowed)
RULES: list[tuple[str, Callable[[Cloud], Any], str | None]] = [
    # seed 000 lines 115-121: communities pay regularly (Stripe, PayPal, coupon)
    ("community pays by Stripe", lambda c: c.buy("i1", APP, "stripe", months=1), None),
    ("community pays by coupon", lambda c: c.buy("i1", APP, "coupon", months=1), None),
    ("community cannot pay with credits", lambda c: c.buy("i1", APP, "credit", months=1), "wrong_source"),
    # seed 000 lines 125-127: so do single-family houses
    ("single family pays by PayPal", lambda c: c.buy("i3", ["house/app/account:h-1"], "paypal", months=12), None),
    # seed 000 lines 129-133; seed 001 line 50: commercial projects created on/after 2025-06-01 pay with credits
    ("new commercial pays with credits", lambda c: c.buy("i1", DOOR2, "credit", renew_to=day_after(90)), None),
    (
        "new commercial cannot pay by Stripe",
        lambda c: c.buy("i1", DOOR2, "stripe", renew_to=day_after(90)),
        "wrong_source",
    ),
    # DOMAIN.md "Paying": older commercial projects need no payment
    (
        "old commercial needs no payment",
        lambda c: c.quote("i1", ["old-office/door/door:door-2"], months=1),
        "no_payment_needed",
    ),
    # seed 001 line 220: credit renewal names a "renew to" date
    ("credit renewal needs a renew-to date", lambda c: c.quote("i1", DOOR2, months=3), "renew_to_needed"),
    # seed 000 line 165: coupons are not supported for auto-renewal
    (
        "coupon cannot pay auto-renewal",
        lambda c: c.buy("i1", APP, "coupon", months=1, auto_renew=True),
        "coupon_auto_renew",
    ),
    # seed 000 line 167: new commercial projects do not support auto-renewal
    (
        "new commercial cannot auto-renew",
        lambda c: c.buy("i1", DOOR2, "credit", renew_to=day_after(60), auto_renew=True),
        "commercial_auto_renew",
    ),
    ("community may auto-renew by Stripe", lambda c: c.buy("i1", APP, "stripe", months=1, auto_renew=True), None),
    # seed 001 line 54: installers need their distributor's permission to pay
    ("installer without permission", lambda c: c.quote("i2", APP, months=1), "no_permission"),
    # DOMAIN.md Paying / seed 001 "Roles and Permissions": each payer acts only for its own sites
    ("an installer paying for another installer's site", lambda c: c.quote("i3", APP, months=1), "not_yours"),
    # seed 002 line 247: "Pay by Installer" regular does not allow credits
    (
        "installer with regular permission pays credits",
        lambda c: c.quote("i3", DOOR2, renew_to=day_after(30)),
        "no_credit_permission",
    ),
    # seed 002 line 247: "Pay by PM" is none or regular, never credit
    (
        "PM granted credit",
        lambda c: c(accounts.grant, "i1", accounts.Grant(account="pm1", permission="credit")),
        "pay_by_pm_is_a_site_setting",
    ),
    (
        "PM granted regular by its installer",
        lambda c: c(accounts.grant, "i1", accounts.Grant(account="pm1", permission="regular")),
        "pay_by_pm_is_a_site_setting",
    ),
    (
        "PM granted by another installer",
        lambda c: c(accounts.grant, "i3", accounts.Grant(account="pm1", permission="regular")),
        "not_yours",
    ),
    # DOMAIN.md "Paying": a pending order must be paid within 15 minutes
    (
        "order paid after 15 minutes",
        lambda c: c.pay("i1", c.order("i1", APP, "stripe", months=1), at=NOW + 16 * 60),
        "order_expired",
    ),
    (
        "order paid within 15 minutes",
        lambda c: c.pay("i1", c.order("i1", APP, "stripe", months=1), at=NOW + 14 * 60),
        None,
    ),
    (
        "an order paid twice",
        lambda c: [c.pay("i1", txn) for txn in [c.order("i1", APP, "stripe", months=1)] * 2],
        "not_pending",
    ),
    (
        "an order paid by another account",
        lambda c: c.pay("i3", c.order("i1", APP, "stripe", months=1)),
        "not_yours",
    ),
    # seed 000 line 177: credits are bought from the vendor by distributors
    ("an installer buys credits", lambda c: c(credits.buy, "i1", credits.BuyCredits(amount=10)), "not_distributor"),
    # seed 000 line 193: allocated down the chain
    (
        "allocate to someone not under you",
        lambda c: c(credits.allocate, "i1", credits.Allocate(account="i3", amount=10)),
        "not_yours",
    ),
    (
        "installer allocates to its PM",
        lambda c: c(credits.allocate, "i1", credits.Allocate(account="pm1", amount=10)),
        None,
    ),
    # seed 000 line 197: only what is available
    (
        "allocate more than held",
        lambda c: c(credits.allocate, "d1", credits.Allocate(account="i3", amount=10_000)),
        "not_enough_credits",
    ),
    (
        "pay more credits than held",
        lambda c: c.buy("i1", DOOR2, "credit", renew_to=day_after(3650)),
        "not_enough_credits",
    ),
    # seed 003: PM App is forced on and locked while any PM App is active
    ("switch PM App off while one is active", switch_off_after_paying_pm_app, "pm_app_locked"),
    (
        "switch PM App off while none is active",
        lambda c: c(sites.switch, "i1", sites.Switch(project="towers", service="pm_app", on=False)),
        None,
    ),
    # seed 003: resident accounts belong to apartments; DOMAIN.md: each project type has its account roles
    ("a resident without an apartment", lambda c: c.app_account("towers", "r-9", "master"), "apartment_needed"),
    ("personnel in a community", lambda c: c.app_account("towers", "p-1", "personnel"), "bad_role"),
    (
        "apartments only in communities",
        lambda c: c(sites.add_apartment, "i1", sites.AddApartment(project="new-office", id="101")),
        "not_community",
    ),
    # seed 002 line 773; DOMAIN.md: one free door per project, every further door is paid
    (
        "pay for the free door",
        lambda c: c.quote("i1", ["new-office/door/door:door-1"], renew_to=day_after(60)),
        "free_door",
    ),
    (
        "a door the project does not have",
        lambda c: c.quote("i1", ["new-office/door/door:door-9"], renew_to=day_after(60)),
        "unknown_door",
    ),
    ("an app sold for a door", lambda c: c.quote("i1", ["towers/app/door:door-1"], months=1), "bad_subject"),
    # DOMAIN.md project types: each sells its own services
    (
        "a package room for an office",
        lambda c: c.quote("i1", ["new-office/package_room/project"], renew_to=day_after(60)),
        "not_sold",
    ),
    # seed 001: a single-family house's end users are the installer's: it has no property manager
    (
        "a PM for a single-family house",
        lambda c: c(sites.edit_site, "i3", sites.EditSite(project="house", changes={"pm": "pm1"})),
        "no_pm_here",
    ),
    # DOMAIN.md who is who: the platform operator runs the platform; it pays for nothing, acts for no site
    ("the operator pays", lambda c: c(paying.quote, None, paying.Selection(items=APP, months=1)), "no_permission"),
    (
        "an installer adds an account",
        lambda c: c(accounts.add_account, "i1", accounts.AddAccount(id="x", role="pm", name="X", parent="i1")),
        "operator_only",
    ),
]


@pytest.mark.parametrize(("operation", "rule"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(cloud: Cloud, operation: Callable[[Cloud], Any], rule: str | None) -> None:
    """Each rule allows what it allows and refuses the rest with its code and the seed it is written in."""
    if rule is None:
        operation(cloud)
        return
    with pytest.raises(Refused) as refused:
        operation(cloud)
    assert refused.value.rule == rule
    assert refused.value.seed  # every refusal names where its rule is written


def test_a_refused_payment_changes_nothing(cloud: Cloud) -> None:
    """A refusal rolls its transaction back: credits, the order's status and the services stay as they were."""
    txn = cloud.order("i1", DOOR2, "credit", renew_to=day_after(60))
    cloud.buy("i1", DOOR2, "credit", renew_to=day_after(60))  # the quote behind txn is now stale
    before = cloud.book.read(lambda uow: (uow.credits.balance("i1"), uow.orders.by_txn(txn).status))
    with pytest.raises(Refused) as refused:
        cloud.pay("i1", txn)
    assert refused.value.rule == "quote_stale"
    assert cloud.book.read(lambda uow: (uow.credits.balance("i1"), uow.orders.by_txn(txn).status)) == before


def test_family_members_beyond_the_free_number_are_additional_apps(cloud: Cloud) -> None:
    """DOMAIN.md: Additional App (family members beyond the project's free number)."""
    cloud(sites.add_site, None, sites.AddSite(id="towers2", type="community", installer="i1", created=date(2024, 3, 1),
                                              free_apps=1))  # fmt: skip
    cloud(sites.switch, "i1", sites.Switch(project="towers2", service="with_indoor_monitor", on=False))
    cloud(sites.add_apartment, "i1", sites.AddApartment(project="towers2", id="101"))
    assert cloud.app_account("towers2", "r-4", "master", "101") == "app"
    assert cloud.app_account("towers2", "r-2", "family", "101") == "app"  # the free one
    assert cloud.app_account("towers2", "r-3", "family", "101") == "additional_app"
    assert cloud.app_account("new-office", "a-1", "personnel") == "personnel_app"


def test_auto_renew_extends_the_upcoming_expiry_by_30_days(cloud: Cloud) -> None:
    """Seed 000 line 159: when the upcoming expiration is reached it moves on by 30 days, once per cycle."""
    cloud.buy("i1", APP, "stripe", months=1, auto_renew=True)
    before = next(s for s in cloud.services("towers") if s.service == "app").expires
    assert before is not None

    def renew_at(moment: float) -> list[tuple[str, str, float]]:
        cloud.now = moment
        return [(r.project, r.service, r.expires - before) for r in cloud(paying.auto_renew, None)]

    assert renew_at(before - DAY) == []
    assert renew_at(before) == [("towers", "app", 30 * DAY)]
    assert renew_at(before + DAY) == []
    records = cloud.book.read(lambda uow: paying.payments(uow, cloud.actor("i1")))
    assert (records[0].kind, records[0].status, records[0].source) == ("auto", "paid", "stripe")


def test_manual_renewal_extends_the_upcoming_expiry_by_the_chosen_length(cloud: Cloud) -> None:
    """Seed 000 line 161: the time the renewal lasts; a renewal starts from the upcoming expiry."""
    cloud.buy("i1", APP, "stripe", months=1)
    first = next(s for s in cloud.services("towers") if s.service == "app").expires
    cloud.buy("i1", APP, "paypal", months=2)
    second = next(s for s in cloud.services("towers") if s.service == "app").expires
    assert first is not None
    assert second is not None
    assert (first - NOW, second - first) == (30 * DAY, 60 * DAY)


def test_the_credit_renewal_summary_and_log(cloud: Cloud) -> None:
    """Seed 001 lines 220-224: "renew to", doors, personnel apps, admin apps, premium features;
    DOMAIN.md: credit logs record time, amount and remaining credit."""
    cloud.app_account("new-office", "a-1", "personnel")
    items = [*DOOR2, "new-office/personnel_app/account:a-1", "new-office/attendance/project"]
    quote = cloud.quote("i1", items, renew_to=day_after(90), plan="0-200")
    assert quote.summary == paying.Summary(doors=1, personnel_apps=1, premium_features=1)
    assert quote.renew_to == day_after(90)
    cloud.buy("i1", items, "credit", renew_to=day_after(90), plan="0-200")
    log = cloud(credits.credit_log, "i1", credits.CreditLogQuery()).log
    assert [(e.amount, e.remaining) for e in log] == [(500, 500), (-quote.amount, 500 - quote.amount)]
    assert all(e.at == NOW for e in log)


def test_expiration_notices_go_to_the_right_recipients_once(cloud: Cloud) -> None:
    """DOMAIN.md: 15 days installers; 5 days PMs and installers; 3 and 1 days end users; seed 002 line
    248: with the PM notice off, only installers are told."""
    cloud.buy("i1", APP, "stripe", months=1)
    expires = next(s for s in cloud.services("towers") if s.service == "app").expires
    assert expires is not None

    def raised(days: float) -> list[tuple[int, str]]:
        assert expires is not None
        cloud.now = expires - days * DAY
        return [(n.stage, n.role) for n in cloud(paying.raise_notices, None)]

    assert {days: raised(days) for days in (20, 15, 14, 5, 3, 1)} == {
        20: [],
        15: [(15, "installer")],
        14: [],
        5: [(5, "pm"), (5, "installer")],
        3: [(3, "end_user")],
        1: [(1, "end_user")],
    }
    cloud.now = NOW
    cloud(sites.edit_site, "i1", sites.EditSite(project="towers", changes={"pm_notices": False}))
    cloud.buy("i1", APP, "stripe", months=1)  # a new expiry: notices again
    expires = next(s for s in cloud.services("towers") if s.service == "app").expires
    assert expires is not None
    assert raised(5) == [(5, "installer")]
    assert raised(3) == []


def test_a_pending_upgrade_can_be_edited_or_deleted_until_a_device_starts_it(cloud: Cloud, tmp_path: Path) -> None:
    """Seed 002 lines 445-448: edit the update set for devices pending the upgrade, or delete it; the
    devices then get a cancel. DOMAIN.md "Firmware": now or at a specific time, Reset After Upgrade."""
    image = tmp_path / "image.bin"
    image.write_bytes(b"\x00" * 100)
    mac = "0c110512ab34"
    cloud(sites.add_device, "i1", sites.AddDevice(mac=mac, distributor="d1", model="R29", project="new-office"))
    name, size, digest = upgrades.store_image(tmp_path / "images", "R29", "29.30.10.1", image)
    cloud(upgrades.add_firmware, None, upgrades.AddFirmware(model="R29", version="29.30.10.1", file=name, size=size,
                                                            sha256=digest, log="fixes"))  # fmt: skip
    at = datetime.fromtimestamp(NOW + DAY, UTC)
    cloud(upgrades.stage, "i1", upgrades.StageUpgrade(id="u-1", project="new-office", model="R29",
                                                      version="29.30.10.1", at=at, reset=True))  # fmt: skip

    def job() -> dict[str, Any]:
        return cloud.book.read(lambda uow: upgrades.jobs(uow, "http://images/"))[mac]

    assert (job()["at"], job()["reset_after_upgrade"], job()["url"]) == (
        "2026-11-19T11:06:40Z",
        True,
        "http://images/R29-29.30.10.1.bin",
    )
    cloud(upgrades.edit, "i1", upgrades.EditUpgrade(id="u-1", right_now=True))
    assert job()["at"] is None
    event = {"event_id": "e-1", "seq": 1, "type": "firmware", "kind": "downloading", "data": {"job_id": "u-1"}}
    assert cloud.book.run(lambda uow: ingest.take_event(uow, mac, event))
    assert not cloud.book.run(lambda uow: ingest.take_event(uow, mac, event))  # a duplicate is dropped
    assert cloud(lambda uow, who: upgrades.statuses(uow, who, "u-1"), "i1") == {mac: "Processing"}
    with pytest.raises(Refused) as refused:
        cloud(lambda uow, who: upgrades.delete(uow, who, "u-1"), "i1")
    assert refused.value.rule == "already_started"
    cloud.now = NOW + 1
    cloud(upgrades.stage, "i1", upgrades.StageUpgrade(id="u-2", project="new-office", model="R29",
                                                      version="29.30.10.1", at=at))  # fmt: skip
    cloud(lambda uow, who: upgrades.delete(uow, who, "u-2"), "i1")
    assert job() == {"aud": mac, "job_id": "u-2", "cancel": True}
    assert cloud.book.read(lambda uow: ingest.gaps(uow, mac)) == []


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
        ("operator", "operator", ("d1",), "i1", None, False),  # the operator acts for no site
    ],
)
def test_who_may_act_for_a_site(
    actor: str, role: str, chain: tuple[str, ...], installer: str, pm: str | None, mine: bool
) -> None:
    """The pure decision of seed 001 "Roles and Permissions" (authority.py reads the chain it needs)."""
    assert rules.acts_for(actor, role, chain, installer, pm) is mine
