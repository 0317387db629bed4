"""The store: versioned migrations, atomic document commits, consistency checked on load."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from agent.config import Config
from agent.device import Device
from agent.errors import DocumentRefused, StoreCorrupt, StoreTooNew
from agent.store.database import DB_NAME, Store, store_error
from agent.store.migrations import SCHEMA_VERSION
from protocol import reasons
from tests.support.devices import DeviceFactory
from tests.support.documents import Claims, Keys, forge, svc


async def test_a_new_store_is_at_the_latest_schema(tmp_path: Path) -> None:
    """Opening an empty directory creates the database at the latest schema version, owner-only."""
    async with await Store.open(tmp_path / "data"):
        pass
    path = tmp_path / "data" / DB_NAME
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


async def test_reopening_migrates_nothing_twice(tmp_path: Path) -> None:
    """A second open of a migrated store succeeds and keeps the version."""
    for _ in range(2):
        async with await Store.open(tmp_path):
            pass
    assert sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_schema_from_newer_firmware_is_refused(tmp_path: Path) -> None:
    """A database written by a newer agent (say, before a firmware rollback) that says older agents may
    not use it is not used blindly."""
    async with await Store.open(tmp_path):
        pass
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.execute("UPDATE schema_compat SET readable_from = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreTooNew):
        await Store.open(tmp_path)


async def test_a_newer_schema_that_only_added_is_used_as_it_is(tmp_path: Path) -> None:
    """Newer firmware added a table and said agents of this schema may still use the database: they do,
    and leave its schema alone."""
    async with await Store.open(tmp_path):
        pass
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("CREATE TABLE later (x INTEGER)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    async with await Store.open(tmp_path):
        pass
    assert sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


async def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    """Garbage where the database should be is reported as corrupt, not as a crash."""
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 1000)
    with pytest.raises(StoreCorrupt):
        await Store.open(tmp_path)


async def test_derived_rows_are_replaced_whole(device: Device, keys: Keys, claims: Claims) -> None:
    """A new entitlements document replaces every service row, and all rows carry its seq."""
    await device.accept(forge(keys.root, claims.entitlements(services=[svc("app", "account:a"), svc("booking")])))
    await device.accept(forge(keys.root, claims.entitlements(services=[svc("dynamic_qr")])))
    snapshot = await device._store.snapshot()
    assert [(r.doc_seq, r.service) for r in snapshot.services] == [(2, "dynamic_qr")]


TAMPERING = [
    ("services from another document", "UPDATE services SET doc_seq = 99"),
    ("project from another document", "UPDATE project SET doc_seq = 99"),
    ("project row missing", "DELETE FROM project"),
    ("two project rows", "INSERT INTO project SELECT * FROM project"),
    ("doors not JSON", "UPDATE project SET doors = '[door-1'"),
    ("created not a date", "UPDATE project SET created = 'yesterday'"),
    ("signing keys from another trust document", "UPDATE signing_keys SET trust_seq = 7"),
    ("a signing key of the wrong length", "UPDATE signing_keys SET x = x'00'"),
    ("signing keys without a trust document", "DELETE FROM documents WHERE typ = 'trust'"),
    ("entitlement rows without a document", "DELETE FROM documents WHERE typ = 'entitlements'"),
]


@pytest.mark.parametrize("statement", [t[1] for t in TAMPERING], ids=[t[0] for t in TAMPERING])
async def test_derived_rows_that_do_not_match_the_documents_are_caught(
    statement: str, device: Device, devices: DeviceFactory, config: Config, keys: Keys, claims: Claims
) -> None:
    """A store whose derived rows disagree with the documents in force is reported corrupt on load."""
    await device.accept(forge(keys.root, claims.trust([keys.signing]), typ="trust"))
    await device.accept(forge(keys.signing, claims.entitlements(services=[svc("app", "account:a")])))
    await device.close()
    devices.opened.remove(device)
    with sqlite3.connect(config.data_dir / DB_NAME) as db:
        db.execute(statement)
    with pytest.raises(StoreCorrupt):
        await devices.open()


async def test_two_processes_cannot_roll_each_other_back(devices: DeviceFactory, keys: Keys, claims: Claims) -> None:
    """The daemon and `edge-agent accept` share a store: a stale one cannot put an older seq in force."""
    daemon, cli = await devices.open(), await devices.open()
    await daemon.accept(forge(keys.root, claims.entitlements(seq=3)))
    with pytest.raises(DocumentRefused) as refused:
        await cli.accept(forge(keys.root, claims.entitlements(seq=2)))
    assert refused.value.reason == reasons.ROLLBACK
    with pytest.raises(DocumentRefused) as refused:
        await cli.accept(forge(keys.root, claims.entitlements(seq=3, services=[])))
    assert refused.value.reason == reasons.SEQ_REUSED
    assert cli.entitlements is not None
    assert cli.entitlements.seq == 3
    assert (await cli._store.snapshot()).documents["entitlements"].seq == 3


async def test_the_device_enforces_from_the_store_on_start(
    devices: DeviceFactory, device: Device, keys: Keys, claims: Claims
) -> None:
    """A restarted device decides from what it stored, before (and without) any network."""
    await device.accept(forge(keys.root, claims.entitlements(services=[svc("app", "account:a")])))
    reopened = await devices.restart(device)
    assert reopened.decide("app_call", "account:a").allowed
    assert reopened.decide("report_alarm").reason == "doors_limited"


@pytest.mark.parametrize(
    ("error", "corrupt"),
    [
        (sqlite3.DatabaseError("file is not a database"), True),
        (sqlite3.DatabaseError("database disk image is malformed"), True),
        (sqlite3.OperationalError("no such table: project"), True),
        (sqlite3.OperationalError("database is locked"), False),
        (sqlite3.OperationalError("disk I/O error"), False),
        (sqlite3.OperationalError("database or disk is full"), False),
        (sqlite3.OperationalError("attempt to write a readonly database"), False),
        (sqlite3.IntegrityError("UNIQUE constraint failed: documents.typ"), False),
    ],
)
def test_only_damage_counts_as_corruption(error: sqlite3.DatabaseError, corrupt: bool) -> None:
    """A locked, full or read-only database is trouble to report, never a file to quarantine."""
    mapped = store_error(Path("agent.db"), error)
    assert isinstance(mapped, StoreCorrupt) is corrupt
    assert str(error) in str(mapped)


def test_each_migration_says_who_may_still_use_the_database() -> None:
    """READABLE_FROM has one entry per migration (docs/firmware.md "Writing a migration"): never above the
    migration's own number, and never lower than the one before (a database cannot become readable again
    by agents a migration shut out)."""
    from agent.store.migrations import MIGRATIONS, READABLE_FROM, SCHEMA_VERSION

    assert len(READABLE_FROM) == len(MIGRATIONS) == SCHEMA_VERSION
    assert all(1 <= readable <= n for n, readable in enumerate(READABLE_FROM, start=1))
    assert list(READABLE_FROM) == sorted(READABLE_FROM)
