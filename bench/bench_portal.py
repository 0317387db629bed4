"""The portal's pages under a large installer: 1,000 sites and 10,000 devices in the ledger (on SQLite and on
PostgreSQL), 100 upgrades and 100 orders, the portal served as it ships (``smartplus-cloud api``, its own
process), one browser asking each page kind in turn. Each row: the page's p95 over HTTP against the bound
(100 ms, issue 25), and beside it the same operations called directly in this process (the floor: what the
page reads, without HTTP, session, rendering)."""

from __future__ import annotations

import gc
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, Final

from bench.common import Result
from cloud_stub.ledger import Ledger, UnitOfWork
from cloud_stub.ledger.holdings import Extension
from cloud_stub.ledger.sites import Site
from cloud_stub.ledger.upgrades import Upgrade
from cloud_stub.operations import accounts, authority, logins, overview, paying, sites, upgrades
from cloud_stub.operations.authority import Actor
from tests.support.brokers import free_port
from tests.support.postgres import Cluster

CLOUD: Final = str(Path(sys.executable).parent / "smartplus-cloud")
SITES: Final = 1000
DEVICES_EACH: Final = 10
REQUESTS: Final = 60
BOUND: Final = 0.100
PASSWORD: Final = "bench password 1"


def _populate(book: Ledger) -> str:
    """The ledger, and a logged-in session cookie of the installer."""
    operator = authority.OPERATOR
    book.call(accounts.add_account, operator, accounts.AddAccount(id="d1", role="distributor", name="D"))
    book.call(accounts.add_account, operator, accounts.AddAccount(id="i1", role="installer", name="Installer",
                                                                  parent="d1", permission="credit"))  # fmt: skip

    def fill(uow: UnitOfWork) -> None:
        devices = []
        for s in range(SITES):
            ident = f"s{s:04d}"
            kind = ("community", "commercial", "single_family")[s % 3]
            uow.sites.add(Site(ident, kind, "i1", None, date(2025, 7, 1), "UTC", 0, ["door-1", "door-2"], {}, True,
                               "none", True, f"Site {s:04d}", None))  # fmt: skip
            devices += [(f"0c00{s:04x}{d:04x}", "d1", "R29", ident) for d in range(DEVICES_EACH)]
            uow.holdings.extend([Extension(ident, "sensor_call_alert", "project", None, uow.now + (s % 30) * 86400,
                                           None)], auto_source=None, payer=None)  # fmt: skip
        uow.sites.register_many(devices)
        for n in range(100):
            project = f"s{n * 10:04d}"
            macs = [f"0c00{n * 10:04x}{d:04x}" for d in range(DEVICES_EACH)]
            uow.upgrades.add(Upgrade(f"u-{n}", project, "R29", "29.30.10.1", macs, None, False, False, uow.now), None)

    book.run(fill)
    installer = book.read(lambda uow: authority.resolve(uow, "i1"))
    book.run(lambda uow: uow.credits.receive("i1", 100_000, uow.now, "bench"))
    for n in range(100):
        asked = paying.PlaceOrder(items=[f"s{n * 3 + 1:04d}/door/door:door-2"], renew_to=date(2027, 12, 31),
                                  source="credit")  # fmt: skip
        book.call(paying.place, installer, asked)
    book.call(logins.set_login, operator, logins.SetLogin(account="i1", email="i1@example.com", password=PASSWORD))
    book.run(lambda uow: uow.logins.update("i1", privacy_agreed=uow.now))
    opened = book.call(logins.log_in, logins.VISITOR, logins.LogIn(account="i1", password=PASSWORD))
    return opened.token


# Each page kind: its path, and the operations it reads (the floor).
PAGES: Final[dict[str, tuple[str, Callable[[UnitOfWork, Actor], Any]]]] = {
    "dashboard": ("/", lambda uow, a: overview.dashboard(uow, a)),
    "sites list": ("/sites?type=community", lambda uow, a: overview.site_rows(uow, a)),
    "a site": (
        "/sites/s0003",
        lambda uow, a: (
            sites.get_site(uow, a, "s0003"),
            sites.services(uow, a, "s0003"),
            sites.apartments(uow, a, "s0003"),
            sites.site_devices(uow, a, "s0003"),
            sites.app_accounts(uow, a, "s0003"),
        ),
    ),
    "upgrade list": (
        "/upgrades",
        lambda uow, a: (upgrades.upgrades(uow, a, upgrades.UpgradeQuery()), overview.site_rows(uow, a)),
    ),
    "payments": ("/payments", lambda uow, a: paying.payments(uow, a)),
}


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def _page(port: int, cookie: str, path: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": f"sp_session={cookie}"})
        response = connection.getresponse()
        response.read()
        took = time.perf_counter() - started
    finally:
        connection.close()
    if response.status != 200:
        raise AssertionError(f"{path}: {response.status}")
    return took


def _measure(where: str, label: str) -> list[Result]:
    book = Ledger.open(where)
    cookie = _populate(book)
    actor = book.read(lambda uow: authority.resolve(uow, "i1"))
    gc.collect()
    gc.freeze()  # as the server does after its start: the floor's p95 is not the collector walking the set-up
    port = free_port()
    rows = []
    with tempfile.TemporaryDirectory() as home:
        server = subprocess.Popen(  # the portal as it ships: the api command, its own process
            [CLOUD, "--ledger", where, "--home", home, "api", "--port", str(port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _page(port, cookie, "/")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the portal never answered"
                    time.sleep(0.1)
            for name, (path, read) in PAGES.items():
                ours, floor = [], []
                for _ in range(5):  # warm
                    _page(port, cookie, path)
                    book.read(lambda uow, r=read: r(uow, actor))  # type: ignore[misc]
                for _ in range(REQUESTS):  # interleaved: the machine's noise falls on both
                    ours.append(_page(port, cookie, path))
                    started = time.perf_counter()
                    book.read(lambda uow, r=read: r(uow, actor))  # type: ignore[misc]
                    floor.append(time.perf_counter() - started)
                p95, floor95 = _p95(ours), _p95(floor)
                scale = f"{SITES:,} sites and {SITES * DEVICES_EACH:,} devices"
                rows.append(Result(f"Portal: {name}, p95, {scale}, {label}", "the bound", BOUND, p95, p95 / BOUND,
                                   "<= 1.0"))  # fmt: skip
                rows.append(Result(f"Portal: {name}, p95 against its operations called directly, {label}",
                                   "the operations, in process", floor95, p95, p95 / floor95, "info"))  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)
            book.close()
    return rows


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as directory:
        rows = _measure(str(Path(directory) / "ledger.db"), "SQLite")
    cluster = Cluster(durable=True).start()
    try:
        rows += _measure(cluster.database(), "PostgreSQL")
    finally:
        cluster.stop()
    return rows
