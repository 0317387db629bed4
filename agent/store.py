"""The agent's SQLite database (aiosqlite): documents in force, what derives from them, the clock.

Durability: WAL with ``synchronous=FULL``, so a commit has reached the disk when it returns.
Atomicity: a document and everything derived from it are written in one ``BEGIN IMMEDIATE``
transaction (:meth:`Store.commit_document`), so a crash at any instant leaves the old document in
force or the new one, never a mix. The high-water check is repeated inside that transaction: a
second process (``edge-agent accept`` beside the daemon) cannot slip an older document past a newer.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import aiosqlite

from agent.clock import Anchor
from agent.errors import StoreCorrupt, StoreError, StoreTooNew
from agent.migrations import MIGRATIONS, SCHEMA_VERSION

DB_NAME = "agent.db"


class StoredDocument(NamedTuple):
    """A document row: the one of its ``typ`` in force."""

    typ: str
    seq: int
    digest: bytes
    iat: int
    exp: int
    kid: str
    token: str
    accepted_at: float


class ProjectRow(NamedTuple):
    """The project, derived from the entitlements document ``doc_seq``."""

    doc_seq: int
    id: str
    type: str
    created: str | None
    doors: str  # JSON array
    free_apps: int
    settings: str  # JSON object


class ServiceRow(NamedTuple):
    """A service derived from the entitlements document ``doc_seq``."""

    doc_seq: int
    service: str
    subject: str
    expires: float
    plan: str | None


class SigningKeyRow(NamedTuple):
    """A signing key derived from the trust document ``trust_seq``."""

    trust_seq: int
    kid: str
    x: bytes
    not_after: float


class Snapshot(NamedTuple):
    """Everything the store holds, read in one transaction."""

    documents: dict[str, StoredDocument]
    project: ProjectRow | None
    services: list[ServiceRow]
    signing_keys: list[SigningKeyRow]
    anchor: Anchor | None


def _create_owner_only(data_dir: Path) -> Path:
    """Make ``data_dir`` (0700) and the database file (0600) if missing; the database's path."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data_dir {data_dir}: {exc.strerror or exc}") from None
    path = data_dir / DB_NAME
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def store_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """Map an SQLite error: corruption (quarantine the file) apart from trouble (locked, full, I/O).

    Only a file SQLite cannot read as a database, or one missing tables its schema version promises,
    is corrupt; everything else leaves the file as it is and is reported as it happened.
    """
    message = f"{path}: {exc}"
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "database disk image is malformed"
        return StoreCorrupt(message)
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(("no such table", "no such column")):
        return StoreCorrupt(message)
    return StoreError(message)


class Store:
    """One connection to the agent's database. Use :meth:`open`; close it (or ``async with``)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, data_dir: Path) -> Store:
        """Open (creating if need be, owner-only) and migrate the database in ``data_dir``."""
        path = await asyncio.to_thread(_create_owner_only, data_dir)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        store = cls(db, path)
        try:
            await store._configure()
            await store._migrate()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise store_error(path, exc) from None
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection; committed data is on disk already."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _configure(self) -> None:
        for pragma in (
            "PRAGMA busy_timeout = 5000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA foreign_keys = ON",
        ):
            await self._db.execute(pragma)

    async def _migrate(self) -> None:
        version = await self._user_version()
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"{self.path} has schema {version}, this agent knows up to {SCHEMA_VERSION}: written by newer firmware"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with self._transaction() as db:
                if await self._user_version() >= target:  # another process migrated meanwhile
                    continue
                for statement in MIGRATIONS[target - 1]:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {target}")

    @asynccontextmanager
    async def _transaction(self, mode: str = "IMMEDIATE") -> AsyncIterator[aiosqlite.Connection]:
        """Commit on success; roll back on any error if SQLite has not already done so."""
        await self._db.execute(f"BEGIN {mode}")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def _user_version(self) -> int:
        rows = await self._db.execute_fetchall("PRAGMA user_version")
        return int(next(iter(rows))[0])

    async def snapshot(self) -> Snapshot:
        """Read documents, derived rows and the clock anchor consistently."""
        try:
            async with self._transaction("DEFERRED") as db:

                async def rows(sql: str) -> list[Any]:
                    return list(await db.execute_fetchall(sql))

                documents = {
                    row[0]: StoredDocument(*row)
                    for row in await rows("SELECT typ, seq, digest, iat, exp, kid, token, accepted_at FROM documents")
                }
                projects = [
                    ProjectRow(*row)
                    for row in await rows("SELECT doc_seq, id, type, created, doors, free_apps, settings FROM project")
                ]
                services = [
                    ServiceRow(*row)
                    for row in await rows(
                        "SELECT doc_seq, service, subject, expires, plan FROM services ORDER BY rowid"
                    )
                ]
                signing = [
                    SigningKeyRow(*row)
                    for row in await rows("SELECT trust_seq, kid, x, not_after FROM signing_keys ORDER BY kid")
                ]
                clock = await rows("SELECT trusted_at, boot_id, at_monotonic FROM clock")
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from None
        if len(projects) > 1:
            raise StoreCorrupt(f"{self.path}: {len(projects)} project rows, expected at most one")
        anchor = Anchor(*clock[0]) if clock else None
        return Snapshot(documents, projects[0] if projects else None, services, signing, anchor)

    async def commit_document(
        self,
        document: StoredDocument,
        *,
        derived: tuple[ProjectRow, Sequence[ServiceRow]] | Sequence[SigningKeyRow] | None,
        anchor: Anchor,
    ) -> bool:
        """Put ``document`` in force with what derives from it, in one transaction.

        ``derived`` (a project and its services, or signing keys) replaces the rows derived from
        the previous document of that type whole. Returns ``False``
        and writes nothing if the store already holds a ``seq`` at or above the document's (another
        process got there first): the caller reloads and verifies again.
        """
        try:
            async with self._transaction() as db:
                rows = list(await db.execute_fetchall("SELECT seq FROM documents WHERE typ = ?", (document.typ,)))
                if rows and int(rows[0][0]) >= document.seq:
                    return False
                await db.execute(
                    """INSERT INTO documents (typ, seq, digest, iat, exp, kid, token, accepted_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (typ) DO UPDATE SET seq = excluded.seq, digest = excluded.digest,
                         iat = excluded.iat, exp = excluded.exp, kid = excluded.kid, token = excluded.token,
                         accepted_at = excluded.accepted_at""",
                    (
                        document.typ,
                        document.seq,
                        document.digest,
                        document.iat,
                        document.exp,
                        document.kid,
                        document.token,
                        document.accepted_at,
                    ),
                )
                if isinstance(derived, tuple):
                    await self._replace_entitlements(*derived)
                elif derived is not None:
                    await db.execute("DELETE FROM signing_keys")
                    await db.executemany(
                        "INSERT INTO signing_keys (trust_seq, kid, x, not_after) VALUES (?, ?, ?, ?)",
                        [(r.trust_seq, r.kid, r.x, r.not_after) for r in derived],
                    )
                await self._write_anchor(anchor)
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from None
        return True

    async def _replace_entitlements(self, project: ProjectRow, services: Sequence[ServiceRow]) -> None:
        db = self._db
        await db.execute("DELETE FROM project")
        await db.execute(
            "INSERT INTO project (doc_seq, id, type, created, doors, free_apps, settings) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                project.doc_seq,
                project.id,
                project.type,
                project.created,
                project.doors,
                project.free_apps,
                project.settings,
            ),
        )
        await db.execute("DELETE FROM services")
        await db.executemany(
            "INSERT INTO services (doc_seq, service, subject, expires, plan) VALUES (?, ?, ?, ?, ?)",
            [(r.doc_seq, r.service, r.subject, r.expires, r.plan) for r in services],
        )

    async def save_anchor(self, anchor: Anchor) -> None:
        """Persist the clock's floor if it is later than the one stored."""
        try:
            await self._write_anchor(anchor)
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from None

    async def _write_anchor(self, anchor: Anchor) -> None:
        params: tuple[Any, ...] = (anchor.trusted_at, anchor.boot_id, anchor.at_monotonic)
        await self._db.execute(
            """INSERT INTO clock (id, trusted_at, boot_id, at_monotonic) VALUES (1, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET trusted_at = excluded.trusted_at, boot_id = excluded.boot_id,
                 at_monotonic = excluded.at_monotonic
               WHERE excluded.trusted_at > clock.trusted_at""",
            params,
        )
