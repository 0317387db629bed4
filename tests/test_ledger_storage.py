"""Where the ledger is kept (issue 23): Alembic's revisions make exactly the schema the aggregates declare, on
SQLite and PostgreSQL; a ledger from before Alembic is refused until ``smartplus-cloud migrate`` and keeps
its data through it; ``copy-ledger`` moves a SQLite ledger into PostgreSQL, every table compared; ``serve``
on PostgreSQL hears a change from another process at once (LISTEN/NOTIFY), not at its next timed pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import cloud_stub.ledger  # noqa: F401 -- every aggregate's tables join the metadata
from cloud_stub.storage import legacy, migrate
from cloud_stub.storage.database import Database, url_of
from cloud_stub.storage.metadata import metadata
from protocol import jws
from tests.support.brokers import Broker
from tests.support.documents import DEVICE_ID
from tests.support.ledger import CLOUD, DOOR2, LedgerAt, cloud, setup_ledger
from tests.support.postgres import Cluster


def test_the_head_revision_is_the_newest_script() -> None:
    """migrate.HEAD names the newest revision under migrations/versions (a new one must move it)."""
    config = migrate.alembic_config(None)  # type: ignore[arg-type]
    assert ScriptDirectory.from_config(config).get_current_head() == migrate.HEAD  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_revisions_make_the_schema_the_aggregates_declare(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """From an empty database, ``migrate`` runs every revision; Alembic then finds no difference between
    the database and the aggregates' tables (columns, types, nullability, indexes)."""
    if backend == "sqlite":
        where = str(tmp_path / "ledger.db")
    else:
        cluster: Cluster = request.getfixturevalue("postgres")
        where = cluster.empty()
    assert cloud(LedgerAt(where, tmp_path), "migrate")[1]["result"] == {
        "from": "empty",
        "to": f"revision {migrate.HEAD}",
    }
    database = Database(url_of(where))
    try:
        with database.raw() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        database.close()


def _legacy_ledger(path: Path) -> None:
    """A ledger as the last release before Alembic left it (PRAGMA user_version 8), with money in it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for statements in legacy.MIGRATIONS:
        for statement in statements:
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {legacy.LAST}")
    rows = [
        "INSERT INTO accounts (id, role, name, permission, credits) VALUES ('d1', 'distributor', 'D', 'none', 500)",
        "INSERT INTO accounts (id, role, parent, name, permission, credits) VALUES ('i1', 'installer', 'd1', 'I',"
        " 'credit', 30)",
        "INSERT INTO credit_log (account, at, amount, remaining, note) VALUES ('i1', 1000, 60, 60, 'allocated by d1')",
        "INSERT INTO credit_log (account, at, amount, remaining, note) VALUES ('i1', 1001, -30, 30,"
        " 'order 10000000000000001')",
        "INSERT INTO projects (id, type, installer, created, timezone, doors) VALUES ('office', 'commercial', 'i1',"
        " '2025-07-01', 'UTC', '[\"door-1\", \"door-2\"]')",
        "INSERT INTO orders (payer, items, method, source, amount, status, created, summary, txn, kind, paid_at)"
        " VALUES ('i1', '[[\"office\", \"door\", \"door:door-2\", 1800000000.0, null]]', 'credit', 'credit', 30,"
        " 'paid', 1001, '{}', '10000000000000001', 'manual', 1001)",
        "INSERT INTO services (project, service, subject, expires) VALUES ('office', 'door', 'door:door-2',"
        " 1800000000.0)",
        "INSERT INTO app_accounts (project, id, role, name) VALUES ('office', 'a-2', 'personnel', 'B')",
        "INSERT INTO app_accounts (project, id, role, name) VALUES ('office', 'a-1', 'personnel', 'A')",
    ]  # fmt: skip
    for row in rows:
        db.execute(row)
    db.execute("COMMIT")
    db.close()


def test_a_ledger_from_before_alembic_is_refused_until_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """The legacy ledger is refused with one line naming ``migrate``; migrated, its balances, log, orders
    (each debit now naming its order) and the order its app accounts were added in are all there."""
    path = tmp_path / "cloud" / "ledger.db"
    path.parent.mkdir()
    _legacy_ledger(path)
    code, out = cloud(path, "credit-log", actor="i1")
    assert code == 2
    assert "legacy version 8" in out
    assert "smartplus-cloud migrate" in out
    assert cloud(path, "migrate")[1]["result"] == {"from": "legacy version 8", "to": f"revision {migrate.HEAD}"}
    log = cloud(path, "credit-log", actor="i1")[1]["result"]
    assert (log["available"], log["total"], log["used"]) == (30, 60, 30)
    payments = cloud(path, "payments", actor="i1")[1]["result"]
    assert [(p["txn"], p["status"], p["amount"]) for p in payments] == [("10000000000000001", "paid", 30)]
    database = Database(url_of(str(path)))
    try:
        with database.reading() as connection:
            rows = connection.exec_driver_sql("SELECT order_id FROM credit_log WHERE amount < 0").fetchall()
            assert rows == [(1,)]
            ordered = connection.exec_driver_sql("SELECT id FROM app_accounts ORDER BY position").fetchall()
            assert ordered == [("a-2",), ("a-1",)]  # as they were added
    finally:
        database.close()
    assert cloud(path, "migrate")[1]["result"]["from"] == f"revision {migrate.HEAD}"  # again: nothing to do


def test_copy_ledger_moves_a_sqlite_ledger_into_postgresql(postgres: Cluster, tmp_path: Path) -> None:
    """copy-ledger FROM TO copies every table into an empty PostgreSQL ledger and compares them row by row;
    on the copy the same accounts act, and the next order is numbered after the copied ones."""
    source = LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db")
    setup_ledger(source)
    assert cloud(source, "renew", "--item", DOOR2, "--renew-to", "2027-01-31", "--source", "credit", actor="i1")[0] == 0
    target = LedgerAt(postgres.empty(), tmp_path / "cloud")
    code, out = cloud(source, "copy-ledger", source.where, target.where)
    assert code == 0, out
    copied = {row["table"]: row for row in out["result"]}
    assert all(row["same"] for row in copied.values())
    assert (copied["orders"]["rows"], copied["credit_log"]["rows"], copied["accounts"]["rows"]) == (1, 4, 2)
    assert cloud(target, "credit-log", actor="i1")[1]["result"] == cloud(source, "credit-log", actor="i1")[1]["result"]
    again = cloud(target, "renew", "--item", DOOR2, "--renew-to", "2027-03-31", "--source", "credit", actor="i1")
    assert again[0] == 0, again
    assert again[1]["result"]["order"] == 2
    code, out = cloud(source, "copy-ledger", source.where, target.where)
    assert code == 2
    assert "copy into an empty ledger" in out


async def test_serve_on_postgresql_hears_another_process_at_once(
    postgres: Cluster, mosquitto: Broker, tmp_path: Path
) -> None:
    """serve with a pass every 60 s: a renewal made by the command line (another process) reaches the
    device's retained document within seconds, because serve listens (LISTEN/NOTIFY), not because it polls."""
    ledger = LedgerAt(postgres.database(), tmp_path / "cloud")
    setup_ledger(ledger)
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(  # noqa: ASYNC220 -- started once, stopped below
        [CLOUD, *ledger.args(), "serve", "--broker", mosquitto.url(), "--images-port", "0", "--interval", "60"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, username="cloud", password="cloud") as watcher:
            await watcher.subscribe(f"smartplus/v1/devices/{DEVICE_ID}/entitlements", qos=1)
            messages = watcher.messages

            async def next_seq() -> int:
                async with asyncio.timeout(30):
                    message = await anext(messages)
                assert isinstance(message.payload, bytes)
                return int(json.loads(jws.parse(message.payload).payload)["seq"])

            assert await next_seq() == 1  # the first pass
            renewed = time.monotonic()
            code, out = await asyncio.to_thread(
                cloud, ledger, "renew", "--item", DOOR2, "--renew-to", "2027-01-31", "--source", "credit", actor="i1"
            )
            assert code == 0, out
            assert await next_seq() == 2
            assert time.monotonic() - renewed < 15  # far within the 60 s pass
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(server.wait, 30)
        log.close()
