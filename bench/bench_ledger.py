"""The ledger's payment path (issue "the ledger"): renew every app account of a community site, quote,
order and pay, for 10, 100 and 1,000 accounts, beside the floor of the writes the payment must make
anyway (one transaction upserting each service's expiry and inserting the order, plain sqlite3 on
another file of the same shape). What ours adds: the rules (authority, permission, per-item checks
against the site's accounts and apartments, prices), the order's transaction number and the notices.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from itertools import count
from pathlib import Path

from bench.common import Result, interleaved
from cloud_stub.ledger import Ledger

SIZES = (10, 100, 1000)
NOW = 1_795_000_000.0


def _site(path: Path, accounts: int) -> Ledger:
    book = Ledger(path)
    book.add_account("d1", "distributor", "D")
    book.add_account("i1", "installer", "I", parent="d1", permission="regular")
    book.add_project("towers", "community", "i1", date(2024, 3, 1))
    book.switch("towers", "with_indoor_monitor", on=False)
    book.add_apartment("towers", "101", "101")
    with book.transaction():
        for n in range(accounts):
            book.add_app_account("towers", f"r-{n}", "master", "R", apartment="101")
    return book


def _floor_db(path: Path, accounts: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE services (project TEXT, service TEXT, subject TEXT, expires REAL,"
               " PRIMARY KEY (project, service, subject))")  # fmt: skip
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, payer TEXT, items TEXT, amount INTEGER, created REAL)")
    return db


def run() -> list[Result]:
    rows = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        for accounts in SIZES:
            book = _site(Path(directory) / f"ledger-{accounts}.db", accounts)
            floor_db = _floor_db(Path(directory) / f"floor-{accounts}.db", accounts)
            items = [("towers", "app", f"account:r-{n}") for n in range(accounts)]
            ticks = count(1)

            def ours(
                book: Ledger = book, items: list[tuple[str, str, str]] = items, ticks: Iterator[int] = ticks
            ) -> None:
                now = NOW + next(ticks)
                quote = book.quote("i1", items, now, months=1)
                book.pay(book.order("i1", quote, "stripe", now), now)

            def floor(db: sqlite3.Connection = floor_db, items: list[tuple[str, str, str]] = items) -> None:
                now = time.time()
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO services VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET expires = excluded.expires",
                    [(*item, now + 30 * 86_400) for item in items],
                )
                db.execute("INSERT INTO orders (payer, items, amount, created) VALUES ('i1', ?, ?, ?)",
                           (repr(items), 100 * len(items), now))  # fmt: skip
                db.execute("COMMIT")

            rows.append(
                interleaved(
                    f"renew a site's {accounts:,} app accounts (quote, order, pay)",
                    "the same upserts and order insert, sqlite3",
                    floor,
                    ours,
                    goal="info",
                    number=1 if accounts >= 1000 else 5,
                    rounds=7,
                )
            )
            book.close()
            floor_db.close()
    return rows
