"""Money moves exactly once under concurrency (issue 23): payers racing for one order from the command line
and over HTTP at once, allocations racing for one balance, one Idempotency-Key sent many times at once,
on SQLite and PostgreSQL; and two ``serve`` processes on one PostgreSQL ledger through auto-renewal
cycles, each cycle renewed once."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud_stub import api as http_api
from cloud_stub import signing
from cloud_stub.errors import Refused
from cloud_stub.http import Served
from cloud_stub.keys import load_private_key
from cloud_stub.ledger import Ledger
from cloud_stub.operations import credits, keys, paying
from tests.support.brokers import Broker
from tests.support.ledger import CLOUD, DOOR2, LedgerAt, as_account, call, cloud, setup_ledger
from tests.support.postgres import Cluster

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # .ci/run installs faketime


def post(port: int, token: str, path: str, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    try:
        connection.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
async def served(ledger_at: LedgerAt) -> AsyncIterator[tuple[int, str]]:
    """The ledger of setup_ledger, its HTTP API on a port of its own, and a token of i1's."""
    setup_ledger(ledger_at)
    token = cloud(ledger_at, "api-token", "create", "i1")[1]["result"]["token"]
    book = ledger_at.open()
    server = await Served(http_api.app(book)).start()
    try:
        yield server.port, token
    finally:
        await server.stop()
        book.close()


def debits(book: Ledger, txn: str) -> list[int]:
    order = book.read(lambda uow: uow.orders.by_txn(txn))
    return [n for o, n, _ in book.read(lambda uow: uow.credits.debits_for_orders()) if o == order.id]


async def test_twenty_payers_of_one_order_are_charged_once(ledger_at: LedgerAt, served: tuple[int, str]) -> None:
    """Ten ``smartplus-cloud pay`` processes and ten HTTP clients pay one order at once: one is paid, the
    nineteen others are told ``not_pending``; the credits move once, and one debit names the order."""
    port, token = served
    placed = cloud(ledger_at, "order", "--item", DOOR2, "--renew-to", "2027-01-31", "--source", "credit",
                   actor="i1")[1]["result"]  # fmt: skip
    txn = placed["txn"]

    async def by_cli() -> tuple[str, Any]:
        process = await asyncio.create_subprocess_exec(
            CLOUD, *ledger_at.args(), "--json", "--as", "i1", "pay", txn,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        answer = json.loads(out)
        return ("paid" if process.returncode == 0 else answer["rule"]), process.returncode

    async def by_http() -> tuple[str, Any]:
        status, answer = await asyncio.to_thread(post, port, token, f"/v1/orders/{txn}/pay", {})
        return ("paid" if status == 200 else answer["rule"]), status

    answers = await asyncio.gather(*(by_cli() for _ in range(10)), *(by_http() for _ in range(10)))
    outcomes = sorted(outcome for outcome, _ in answers)
    assert outcomes == ["not_pending"] * 19 + ["paid"], answers
    assert {code for outcome, code in answers if outcome == "not_pending"} <= {1, 409}
    book = ledger_at.open()
    try:
        assert book.read(lambda uow: uow.orders.by_txn(txn).status) == "paid"
        assert book.read(lambda uow: uow.credits.balance("i1")) == 60 - placed["amount"]
        assert debits(book, txn) == [1]
    finally:
        book.close()


def race(count: int, work: Any) -> list[Any]:
    """``work(n)`` in ``count`` threads released at once; each one's result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(n: int) -> None:
        barrier.wait()
        try:
            results[n] = work(n)
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_serve_processes_starting_at_once_make_the_first_keys_once(ledger_at: LedgerAt, tmp_path: Path) -> None:
    """Four ledgers (as four ``serve`` starting at one moment) each make sure the keys exist: one root, its
    file the key the ledger names, and one active signer per purpose (two serve processes on PostgreSQL
    once both made the root and crashed on the second's insert)."""
    directory = tmp_path / "keys"
    directory.mkdir()
    books = [ledger_at.open() for _ in range(4)]
    try:
        made = race(4, lambda n: books[n].run(lambda uow: keys.ensure(uow, directory)))
        assert not [r for r in made if isinstance(r, Exception)], made
        roots = books[0].read(lambda uow: uow.keys.roots())
        signers = books[0].read(lambda uow: uow.keys.trusted())
    finally:
        for book in books:
            book.close()
    assert len(roots) == 1
    assert signing.key_thumbprint(load_private_key(directory / roots[0].file).public_key()) == roots[0].kid
    assert sorted(k.purpose for k in signers if k.state == "active") == sorted(keys.PURPOSES)
    assert all((directory / k.file).is_file() for k in signers)


def test_payers_in_threads_and_allocations_racing_for_one_balance(ledger_at: LedgerAt) -> None:
    """Twenty threads paying one order, released by a barrier: one payment. Then twenty allocations of 5
    credits from a balance of 60: twelve go through, eight are refused ``not_enough_credits``, and the
    balance and the log add up (never below zero)."""
    setup_ledger(ledger_at)
    cloud(ledger_at, "add-account", "pm9", "--role", "pm", "--name", "P", "--parent", "i1")
    book = ledger_at.open()
    try:
        placed = call(book, paying.place, "i1", paying.PlaceOrder(items=[DOOR2], months=None,
                                                                    renew_to=datetime(2027, 1, 31, tzinfo=UTC).date(),
                                                                    source="credit"))  # fmt: skip
        payer = as_account(book, "i1")
        paid = race(20, lambda n: book.call(paying.pay, payer, paying.Pay(txn=placed.txn)))
        assert sum(isinstance(r, paying.Paid) for r in paid) == 1, paid
        assert {r.rule for r in paid if isinstance(r, Refused)} == {"not_pending"}
        left = book.read(lambda uow: uow.credits.balance("i1"))
        moved = race(20, lambda n: book.call(credits.allocate, payer, credits.Allocate(account="pm9", amount=5)))
        done = [r for r in moved if isinstance(r, credits.Allocated)]
        assert len(done) == left // 5, moved
        assert {r.rule for r in moved if isinstance(r, Refused)} == {"not_enough_credits"}
        assert book.read(lambda uow: (uow.credits.balance("i1"), uow.credits.balance("pm9"))) == (
            left % 5,
            5 * len(done),
        )
        log = call(book, credits.credit_log, "i1", credits.CreditLogQuery())
        assert log.available == log.total - log.used == left % 5
    finally:
        book.close()


async def test_one_idempotency_key_sent_at_once_does_one_thing(ledger_at: LedgerAt, served: tuple[int, str]) -> None:
    """Ten requests with one key at the same moment: one allocation, ten identical answers."""
    port, token = served
    cloud(ledger_at, "add-account", "pm9", "--role", "pm", "--name", "P", "--parent", "i1")
    body = {"account": "pm9", "amount": 7}
    answers = await asyncio.gather(
        *(asyncio.to_thread(post, port, token, "/v1/credits/allocate", body, "same-key") for _ in range(10))
    )
    assert {(status, json.dumps(answer)) for status, answer in answers} == {(200, json.dumps({"remaining": 7,
                                                                                           "left": 53}))}  # fmt: skip
    assert cloud(ledger_at, "credit-log", "pm9", actor="i1")[1]["result"]["total"] == 7


# -- two serve processes on one PostgreSQL ledger ---------------------------------------------------------
class SharedClock:
    """One libfaketime offset file for several processes: they all read the same time, moved by the test."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "faketime"
        self.file.write_text("+0d\n")

    def set(self, moment: float) -> None:
        self.file.write_text(f"{moment - time.time():+.0f}\n")  # an offset, in seconds, from the real clock

    def env(self) -> dict[str, str]:
        assert LIBFAKETIME.exists(), "libfaketime is missing (.ci/run installs the faketime package)"
        return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(self.file), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # fmt: skip


async def test_two_serve_processes_renew_each_cycle_once(postgres: Cluster, mosquitto: Broker, tmp_path: Path) -> None:
    """Two ``serve`` processes on one PostgreSQL ledger, their clocks moved together through five
    auto-renewal cycles: each cycle is renewed once (one paid auto order per cycle, each from the expiry the
    previous one set), however the two race."""
    ledger = LedgerAt(postgres.database(), tmp_path / "home")
    for args, actor in [
        (("add-account", "d1", "--role", "distributor", "--name", "D"), None),
        (("add-account", "i1", "--role", "installer", "--name", "I", "--parent", "d1", "--permission", "regular"),
         None),
        (("add-project", "towers", "--type", "community", "--installer", "i1", "--created", "2024-03-01"), None),
        (("switch", "towers", "with_indoor_monitor", "--off"), "i1"),
        (("add-apartment", "towers", "101"), "i1"),
        (("add-app-account", "towers", "r-1", "--role", "master", "--apartment", "101"), "i1"),
        (("renew", "--item", "towers/app/account:r-1", "--months", "1", "--source", "stripe", "--auto-renew"), "i1"),
    ]:  # fmt: skip
        code, out = cloud(ledger, *args, actor=actor)
        assert code == 0, (args, out)
    book = ledger.open()
    expiry = book.read(lambda uow: uow.holdings.of("towers"))
    [first] = [h.expires for h in expiry if h.service == "app"]
    assert first is not None
    clock = SharedClock(tmp_path)
    env = {**os.environ, **clock.env()}
    logs = [(tmp_path / f"serve-{n}.log").open("wb") for n in range(2)]
    command = [CLOUD, *ledger.args(), "serve", "--broker", mosquitto.url(), "--user", "cloud", "--password", "cloud",
               "--images-port", "0", "--interval", "0.2"]  # fmt: skip
    servers = [  # each its own MQTT client id: a broker drops a session another connection takes over
        subprocess.Popen([*command, "--client-id", f"cloud-{n}"], env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        for n, log in enumerate(logs)
    ]
    try:
        expected = first
        for cycle in range(5):
            clock.set(expected + 60)  # a minute past the upcoming expiry: both processes find it due
            expected += 30 * 86_400
            deadline = time.monotonic() + 60
            while True:  # the ledger has no event to wait on: polled, with a deadline
                now = [h.expires for h in book.read(lambda uow: uow.holdings.of("towers")) if h.service == "app"]
                if now == [expected]:
                    break
                assert time.monotonic() < deadline, (cycle, now, expected)
                assert all(s.poll() is None for s in servers), "a serve process stopped"
                await asyncio.sleep(0.05)
        autos = [o for o in book.read(lambda uow: uow.orders.all()) if o.kind == "auto"]
        assert [(o.status, o.items[0][5], o.items[0][3]) for o in autos] == [
            ("paid", first + 30 * 86_400 * n, first + 30 * 86_400 * (n + 1)) for n in range(5)
        ]
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(server.wait, 30) for server in servers]
        for log in logs:
            log.close()
        book.close()
    assert codes == [0, 0]  # stopped gracefully, by SIGTERM
    said = [(tmp_path / f"serve-{n}.log").read_text() for n in range(2)]
    assert sum(text.count("auto_renewed") for text in said) == 5
