"""The ledger's payment path: renew every app account of a community site in one payment, as a payer does
it (place the order, priced; pay it), for 10, 100 and 1,000 accounts, on SQLite and on PostgreSQL, beside
the floor of the writes the payment must make anyway (one transaction upserting each service's expiry and
inserting the order, with the bare driver, sqlite3 or psycopg, on a database of the same shape).

What ours adds: the operations (authority, permission, per-item checks against the site's accounts and
apartments, prices, typed requests and results), the order's transaction number and its status moved by a
conditional write, the conditional extension of each item from the expiry it was priced from, the notices,
and SQLAlchemy Core between them and the driver.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from bench.common import Result, interleaved
from cloud_stub.ledger import Ledger
from cloud_stub.operations import accounts, authority, paying, sites
from cloud_stub.operations.authority import Actor
from tests.support.postgres import Cluster

SIZES = (10, 100, 1000)
NOW = 1_795_000_000.0


def _site(book: Ledger, count: int) -> Actor:
    """A community with one apartment (no indoor monitor) and ``count`` app accounts; its installer."""
    operator = authority.OPERATOR
    book.call(accounts.add_account, operator, accounts.AddAccount(id="d1", role="distributor", name="D"))
    book.call(accounts.add_account, operator, accounts.AddAccount(id="i1", role="installer", name="I", parent="d1",
                                                                  permission="regular"))  # fmt: skip
    installer = book.read(lambda uow: authority.resolve(uow, "i1"))
    book.call(sites.add_site, operator, sites.AddSite(id="towers", type="community", installer="i1",
                                                      created=date(2024, 3, 1)))  # fmt: skip
    book.call(sites.switch, installer, sites.Switch(project="towers", service="with_indoor_monitor", on=False))
    book.call(sites.add_apartment, installer, sites.AddApartment(project="towers", id="101"))

    def add_all(uow: Any) -> None:
        for n in range(count):
            uow.sites.add_app_account("towers", f"r-{n}", "master", "R", "101")

    book.run(add_all)
    return installer


def _renew(book: Ledger, installer: Actor, items: list[str]) -> Callable[[], object]:
    """One payment: quote, order and pay in one transaction (``smartplus-cloud renew``)."""
    asked = paying.Renew(items=items, months=1, source="stripe")
    return lambda: book.call(paying.renew, installer, asked)


def _order_then_pay(book: Ledger, installer: Actor, items: list[str]) -> Callable[[], object]:
    """As a payer does it over the API: the order placed (priced), then paid: two transactions."""
    order = paying.PlaceOrder(items=items, months=1, source="stripe")

    def both() -> object:
        placed = book.call(paying.place, installer, order)
        return book.call(paying.pay, installer, paying.Pay(txn=placed.txn))

    return both


UPSERT = (
    "INSERT INTO services (project, service, subject, expires) VALUES ({0}, {0}, {0}, {0})"
    " ON CONFLICT (project, service, subject) DO UPDATE SET expires = excluded.expires"
)
ORDER = "INSERT INTO orders (payer, items, amount, created) VALUES ({0}, {0}, {0}, {0})"
SHAPE = (
    "CREATE TABLE services (project TEXT, service TEXT, subject TEXT, expires REAL,"
    " PRIMARY KEY (project, service, subject))",
    "CREATE TABLE orders (id {serial} PRIMARY KEY, payer TEXT, items TEXT, amount INTEGER, created REAL)",
)


def _sqlite_floor(path: Path) -> Callable[[list[tuple[str, str, str]]], None]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")  # as the ledger: a commit is on disk when it returns
    for statement in SHAPE:
        db.execute(statement.format(serial="INTEGER"))

    def write(items: list[tuple[str, str, str]]) -> None:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(UPSERT.format("?"), [(*item, now + 30 * 86_400) for item in items])
        db.execute(ORDER.format("?"), ("i1", json.dumps(items), 100 * len(items), now))
        db.execute("COMMIT")

    return write


def _postgres_floor(url: str) -> Callable[[list[tuple[str, str, str]]], None]:
    import psycopg

    db = psycopg.connect(url, autocommit=True)
    for statement in SHAPE:
        db.execute(statement.format(serial="SERIAL").encode())

    def write(items: list[tuple[str, str, str]]) -> None:
        now = time.time()
        with db.transaction(), db.cursor() as cursor:
            cursor.executemany(UPSERT.format("%s").encode(), [(*item, now + 30 * 86_400) for item in items])
            cursor.execute(ORDER.format("%s").encode(), ("i1", json.dumps(items), 100 * len(items), now))

    return write


def _databases(directory: Path, cluster: Cluster | None, count: int) -> Iterator[tuple[str, str, Any]]:
    """(back end, the ledger's location, the floor's writer) for SQLite, then PostgreSQL."""
    yield "SQLite", str(directory / f"ledger-{count}.db"), _sqlite_floor(directory / f"floor-{count}.db")
    if cluster is not None:
        yield "PostgreSQL", cluster.database(), _postgres_floor(cluster.empty())


def run() -> list[Result]:
    rows = []
    cluster = Cluster(durable=True).start()
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
            for count in SIZES:
                for backend, where, floor_write in _databases(Path(directory), cluster, count):
                    clock = iter(range(1, 10**9))
                    book = Ledger.open(where, clock=lambda c=clock: NOW + next(c))  # type: ignore[misc]
                    installer = _site(book, count)
                    items = [f"towers/app/account:r-{n}" for n in range(count)]
                    parts = [("towers", "app", f"account:r-{n}") for n in range(count)]
                    driver = "sqlite3" if backend == "SQLite" else "psycopg"
                    for label, ours, goal in (
                        ("in one payment (renew)", _renew, "<= 3.0" if count == 1000 else "info"),
                        ("as order then pay", _order_then_pay, "info"),
                    ):
                        rows.append(
                            interleaved(
                                f"renew a site's {count:,} app accounts {label}, {backend}",
                                f"the same upserts and order insert, bare {driver}",
                                lambda w=floor_write, p=parts: w(p),  # type: ignore[misc]
                                ours(book, installer, items),
                                goal=goal,
                                number=1 if count >= 1000 else 5,
                                rounds=7,
                            )
                        )
                    book.close()
    finally:
        cluster.stop()
    return rows
