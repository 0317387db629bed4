"""The ledger's money under random interleavings (issue 23): a stateful hypothesis test places, pays, allocates,
renews (by hand and automatically), cancels and lets orders expire in any order, with time moving on, and
after every step checks what must always hold: no order paid twice, credits neither made nor lost
(bought = held + spent), every charge has exactly one paid order, no cycle auto-renewed twice. On SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from cloud_stub.errors import Refused
from cloud_stub.ledger import Ledger
from cloud_stub.operations import accounts, authority, credits, paying, sites
from cloud_stub.operations.authority import Actor
from tests.support.ledger import LedgerAt
from tests.support.postgres import Cluster

T0 = 1_795_000_000.0
DAY = 86_400.0
DOORS = [f"office/door/door:door-{n}" for n in range(2, 6)]
APPS = [f"towers/app/account:r-{n}" for n in range(4)]


def _resolve(account: str, uow: Any) -> Actor:
    return authority.resolve(uow, account)


def expected(refused: Refused, *rules: str) -> None:
    """A refusal that is one of a step's legitimate outcomes; any other is a failure."""
    if refused.rule not in rules:
        raise AssertionError(f"refused {refused.rule}, expected one of {rules}") from refused


def ledger_machine(open_ledger: Callable[[], Ledger]) -> type[RuleBasedStateMachine]:
    class Money(RuleBasedStateMachine):
        orders = Bundle("orders")

        def __init__(self) -> None:
            super().__init__()
            self.now = T0
            self.book = open_ledger()
            self.book.clock = lambda: self.now
            operator = authority.OPERATOR
            for request in (
                accounts.AddAccount(id="d1", role="distributor", name="D"),
                accounts.AddAccount(id="i1", role="installer", name="I1", parent="d1", permission="credit"),
                accounts.AddAccount(id="i2", role="installer", name="I2", parent="d1", permission="regular"),
                accounts.AddAccount(id="pm1", role="pm", name="P", parent="i1"),
            ):
                self.book.call(accounts.add_account, operator, request)
            self.who = {a: self.book.read(partial(_resolve, a)) for a in ("d1", "i1", "i2")}
            self.book.call(sites.add_site, operator, sites.AddSite(id="office", type="commercial", installer="i1",
                           created=date(2025, 7, 1), doors=[f"door-{n}" for n in range(1, 6)]))  # fmt: skip
            self.book.call(sites.add_site, operator, sites.AddSite(id="towers", type="community", installer="i2",
                                                                   created=date(2024, 3, 1)))  # fmt: skip
            self.call(sites.switch, "i2", sites.Switch(project="towers", service="with_indoor_monitor", on=False))
            self.call(sites.add_apartment, "i2", sites.AddApartment(project="towers", id="101"))
            for n in range(4):
                self.call(sites.add_app_account, "i2", sites.AddAppAccount(project="towers", id=f"r-{n}", role="master",
                                                                           apartment="101"))  # fmt: skip

        def call(self, operation: Callable[..., Any], account: str, request: Any = None) -> Any:
            actor: Actor = self.who[account]
            work = (
                (lambda uow: operation(uow, actor)) if request is None else (lambda uow: operation(uow, actor, request))
            )
            return self.book.run(work)

        def teardown(self) -> None:
            self.book.close()

        # -- what people (and serve) do -------------------------------------------------------------------
        @rule(amount=st.integers(1, 300))
        def buy(self, amount: int) -> None:
            self.call(credits.buy, "d1", credits.BuyCredits(amount=amount))

        @rule(giver=st.sampled_from([("d1", "i1"), ("i1", "pm1")]), amount=st.integers(1, 200))
        def allocate(self, giver: tuple[str, str], amount: int) -> None:
            try:
                self.call(credits.allocate, giver[0], credits.Allocate(account=giver[1], amount=amount))
            except Refused as refused:
                expected(refused, "not_enough_credits")

        @rule(target=orders, door=st.sampled_from(DOORS), months=st.integers(1, 24))
        def order_doors(self, door: str, months: int) -> str:
            renew_to = (datetime.fromtimestamp(self.now, UTC) + timedelta(days=31 * months)).date()
            try:
                return str(self.call(paying.place, "i1", paying.PlaceOrder(items=[door], renew_to=renew_to,
                                                                            source="credit")).txn)  # fmt: skip
            except Refused as refused:
                expected(refused, "renew_to_past")
                return "00000000000000000"

        @rule(target=orders, app=st.sampled_from(APPS), months=st.integers(1, 3))
        def order_apps(self, app: str, months: int) -> str:
            return str(
                self.call(paying.place, "i2", paying.PlaceOrder(items=[app], months=months, source="stripe")).txn
            )

        @rule(txn=orders, auto=st.booleans())
        def pay(self, txn: str, auto: bool) -> None:
            payer = "i1" if txn in self._credit_orders() else "i2"
            try:
                self.call(paying.pay, payer, paying.Pay(txn=txn, auto_renew=auto))
            except Refused as refused:
                expected(refused, "not_pending", "order_expired", "not_enough_credits", "quote_stale",
                         "commercial_auto_renew", "not_found")  # fmt: skip

        @rule(app=st.sampled_from(APPS))
        def cancel_auto_renew(self, app: str) -> None:
            self.call(paying.cancel_auto_renew, "i2", paying.CancelAutoRenew(items=[app]))

        @rule(seconds=st.sampled_from([60.0, 16 * 60.0, DAY, 10 * DAY, 31 * DAY]))
        def time_passes(self, seconds: float) -> None:
            self.now += seconds

        @rule()
        def serve_pass(self) -> None:
            self.book.run(lambda uow: paying.auto_renew(uow, authority.OPERATOR))
            self.book.run(lambda uow: paying.expire_orders(uow, authority.OPERATOR))

        def _credit_orders(self) -> set[str]:
            return {o.txn for o in self.book.read(lambda uow: uow.orders.all()) if o.method == "credit"}

        # -- what always holds ----------------------------------------------------------------------------
        @invariant()
        def no_order_paid_twice_and_every_charge_has_one_paid_order(self) -> None:
            every = {o.id: o for o in self.book.read(lambda uow: uow.orders.all())}
            debits = self.book.read(lambda uow: uow.credits.debits_for_orders())
            for order, count, total in debits:
                assert count == 1, (order, count)
                assert every[order].status == "paid"
                assert total == every[order].amount
            charged = {order for order, _, _ in debits}
            paid_with_credits = {o.id for o in every.values() if o.status == "paid" and o.method == "credit"}
            assert charged == paid_with_credits

        @invariant()
        def credits_are_neither_made_nor_lost(self) -> None:
            log = self.book.read(lambda uow: [m for a in ("d1", "i1", "pm1") for m in uow.credits.log(a)])
            bought = sum(m.amount for m in log if m.note.startswith("bought by"))
            spent = sum(t for _, _, t in self.book.read(lambda uow: uow.credits.debits_for_orders()))
            held = sum(self.book.read(lambda uow: uow.credits.all_balances()).values())
            assert bought == held + spent
            assert all(b >= 0 for b in self.book.read(lambda uow: uow.credits.all_balances()).values())

        @invariant()
        def no_cycle_is_renewed_twice(self) -> None:
            bases: dict[tuple[str, str, str], list[float]] = {}
            for order in self.book.read(lambda uow: uow.orders.all()):
                if order.status == "paid":
                    for entry in order.items:
                        bases.setdefault((entry[0], entry[1], entry[2]), []).append(entry[5])
            for key, froms in bases.items():
                known = [b for b in froms if b is not None]
                assert len(known) == len(set(known)), (key, froms)  # each expiry extended from once

    return Money


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_money_holds_under_any_interleaving(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Random interleavings of order, pay, allocate, renew, cancel and expire keep every invariant."""
    made = iter(range(10**6))

    def open_ledger() -> Ledger:
        if backend == "sqlite":
            return LedgerAt.sqlite(tmp_path / f"ledger-{next(made)}.db").open()
        cluster: Cluster = request.getfixturevalue("postgres")
        return LedgerAt(cluster.database(), tmp_path).open()

    run_state_machine_as_test(
        ledger_machine(open_ledger),
        settings=settings(max_examples=20 if backend == "sqlite" else 10, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], database=None),
    )  # fmt: skip
