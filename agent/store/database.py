"""The agent's SQLite database (aiosqlite): documents in force and what derives from them, the clock,
the outbox, settings, credentials and commands.

Durability: WAL with ``synchronous=FULL``, so a commit has reached the disk when it returns.
Atomicity: every write happens in a :class:`Transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a
crash at any instant leaves the state before or after it, never a mix. One connection is shared by
everything in the daemon (document intake, the outbox writer, command handling), so transactions
take a lock: statements of two coroutines never end up in one transaction. A document's ``seq`` is
checked again inside its transaction: a second process (``edge-agent accept`` beside the daemon)
cannot slip an older document past a newer one.

Each module owns the SQL of its tables (``agent/outbox/rows.py`` the outbox, ``agent/intake/commands.py``
settings and commands, ``agent/local/credentials.py`` and ``door_actions.py`` what the doors need,
``firmware/jobs.py`` the firmware jobs); this one owns documents, derived rows and the clock, and the
connection.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import aiosqlite
import structlog

from agent.clock import Anchor
from agent.errors import StoreCorrupt, StoreError, StoreFull, StoreTooNew
from agent.store.durable import durable_replace
from agent.store.migrations import MIGRATIONS, READABLE_FROM, SCHEMA_VERSION
from agent.store.reserve import Reserve

log = structlog.get_logger("agent.store")

DB_NAME = "agent.db"
COMPAT_SINCE = 5  # the migration that made schema_compat: written with every migration from it on


def snapshot_path(data_dir: Path, version: int) -> Path:
    """Where the database is kept as it was at schema ``version`` before a migration an older agent cannot
    follow (agent/store/rollback.py restores it)."""
    return data_dir / f"{DB_NAME}.schema-{version}"


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
    """A signing key derived from the trust document ``trust_seq``; ``typs`` a JSON array, or None: any type."""

    trust_seq: int
    kid: str
    x: bytes
    not_after: float
    typs: str | None


class RootRow(NamedTuple):
    """A root key set by the trust document ``trust_seq`` (PROTOCOL.md "Root rotation")."""

    kid: str
    x: bytes
    trust_seq: int


class Snapshot(NamedTuple):
    """Documents in force, their derived rows and the clock anchor, read in one transaction."""

    documents: dict[str, StoredDocument]
    project: ProjectRow | None
    services: list[ServiceRow]
    signing_keys: list[SigningKeyRow]
    anchor: Anchor | None
    roots: list[RootRow]


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


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """Map an SQLite error: damage (quarantine the file) apart from trouble (locked, full, I/O).

    Only a file SQLite cannot read as a database, or one missing tables its schema version promises,
    is corrupt; a full disk is :class:`StoreFull`; anything else leaves the file alone.
    """
    message = f"{path}: {exc}"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES or (primary is None and type(exc) is sqlite3.DatabaseError):
        return StoreCorrupt(message)
    if primary == sqlite3.SQLITE_FULL:
        return StoreFull(message)
    if str(exc).startswith(("no such table", "no such column")):
        return StoreCorrupt(message)
    return StoreError(message)


_CLOCK_COLUMNS = (
    "trusted_at, boot_id, at_monotonic, signed_at, generation",  # schema 4 and later
    "trusted_at, boot_id, at_monotonic",
)


def salvage_anchor(db: sqlite3.Connection) -> Anchor | None:
    """The clock's anchor as a corrupt database still holds it, if it can be read (agent/store/quarantine.py)."""
    for columns in _CLOCK_COLUMNS:
        try:
            found = db.execute(f"SELECT {columns} FROM clock").fetchone()  # noqa: S608 -- constants
        except sqlite3.Error:
            continue
        try:
            return None if found is None else Anchor(float(found[0]), found[1], float(found[2]), *found[3:])
        except (TypeError, ValueError):
            return None
    return None


_Row = TypeVar("_Row", bound=tuple[Any, ...])
_T = TypeVar("_T")


async def _select(tx: Transaction, record: type[_Row], table: str) -> list[_Row]:
    """Every row of ``table`` as ``record``s, whose fields name the columns (one source for both)."""
    columns = ", ".join(record._fields)  # type: ignore[attr-defined]
    return [record(*row) for row in await tx.fetchall(f"SELECT {columns} FROM {table}")]  # noqa: S608 -- names from code


class Transaction:
    """The statements of one transaction; callbacks registered with :meth:`after_commit` run once it commits."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._after: list[Callable[[], None]] = []
        # What a writer has claimed in this transaction but not yet committed (the outbox's next seq),
        # so that a second write in the same transaction goes on from it; gone with the transaction.
        self.claimed: dict[str, Any] = {}

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the commit (still holding the store's lock), not on rollback."""
        self._after.append(callback)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        cursor = await self._db.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement for each of ``rows``; the number of rows they changed in all."""
        cursor = await self._db.executemany(sql, rows)
        return cursor.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of a query."""
        return list(await self._db.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or ``None``."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # -- documents, derived rows, clock --------------------------------------------------------------
    async def document_seq(self, typ: str) -> int | None:
        """The ``seq`` of the document of ``typ`` in force, as stored."""
        row = await self.fetchone("SELECT seq FROM documents WHERE typ = ?", (typ,))
        return None if row is None else int(row[0])

    async def put_document(self, document: StoredDocument) -> None:
        """Make ``document`` the one of its type in force."""
        await self.execute(
            """INSERT INTO documents (typ, seq, digest, iat, exp, kid, token, accepted_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (typ) DO UPDATE SET seq = excluded.seq, digest = excluded.digest,
                 iat = excluded.iat, exp = excluded.exp, kid = excluded.kid, token = excluded.token,
                 accepted_at = excluded.accepted_at""",
            document,
        )

    async def replace_entitlements(self, project: ProjectRow, services: Sequence[ServiceRow]) -> None:
        """Replace the rows derived from the entitlements document whole."""
        await self.execute("DELETE FROM project")
        await self.execute(
            "INSERT INTO project (doc_seq, id, type, created, doors, free_apps, settings) VALUES (?, ?, ?, ?, ?, ?, ?)",
            project,
        )
        await self.execute("DELETE FROM services")
        await self.executemany(
            "INSERT INTO services (doc_seq, service, subject, expires, plan) VALUES (?, ?, ?, ?, ?)", services
        )

    async def replace_signing_keys(self, keys: Sequence[SigningKeyRow]) -> None:
        """Replace the signing keys derived from the trust document whole."""
        await self.execute("DELETE FROM signing_keys")
        await self.executemany(
            "INSERT INTO signing_keys (trust_seq, kid, x, not_after, typs) VALUES (?, ?, ?, ?, ?)", keys
        )

    async def replace_roots(self, roots: Sequence[RootRow]) -> None:
        """Replace the root keys a trust document rotated to, whole."""
        await self.execute("DELETE FROM roots")
        await self.executemany("INSERT INTO roots (kid, x, trust_seq) VALUES (?, ?, ?)", roots)

    async def write_anchor(self, anchor: Anchor) -> None:
        """Persist the clock's floor if it is later than the one stored, or corrected since (a later generation)."""
        await self.execute(
            """INSERT INTO clock (id, trusted_at, boot_id, at_monotonic, signed_at, generation)
               VALUES (1, ?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET trusted_at = excluded.trusted_at, boot_id = excluded.boot_id,
                 at_monotonic = excluded.at_monotonic, signed_at = excluded.signed_at,
                 generation = excluded.generation
               WHERE excluded.generation > clock.generation
                  OR (excluded.generation = clock.generation AND excluded.trusted_at >= clock.trusted_at)""",
            anchor,
        )


async def _complete(statement: Awaitable[Any]) -> bool:
    """Await ``statement`` to its end even if the task is cancelled meanwhile; whether it was.

    An error of the statement propagates; if a cancellation came first, the cancellation does.
    """
    task = asyncio.ensure_future(statement)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                cancelled = True
                continue
            if task.cancelled():
                raise
            cancelled = True
        except BaseException:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
        return cancelled


class Store:
    """One connection to the agent's database. Use :meth:`open`; close it (or ``async with``)."""

    def __init__(self, db: aiosqlite.Connection, path: Path, reserve: Reserve | None = None) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self.path = path
        self.reserve = reserve
        self._cap_pages = 0  # ordinary writes: max_bytes (0: no cap)
        self._reserved_pages = 0  # writes entitled to the reserve: max_bytes plus the reserve

    @classmethod
    async def open(cls, data_dir: Path, *, max_bytes: int = 0, reserve: Reserve | None = None) -> Store:
        """Open (creating if need be, owner-only) and migrate the database in ``data_dir``.

        ``max_bytes`` caps the database file (0: no cap); writes beyond it fail as :class:`StoreFull`.
        ``reserve`` is the data directory's ballast (``agent/store/reserve.py``): the daemon's, which
        :meth:`reserved` may spend; commands that only read pass none.
        """
        path = await asyncio.to_thread(_create_owner_only, data_dir)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise store_error(path, exc) from None
        store = cls(db, path, reserve)
        try:
            await store._configure(max_bytes)
            await store._migrate()
        except sqlite3.Error as exc:
            await db.close()
            raise store_error(path, exc) from None
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection; committed data is on disk already."""
        async with self._lock:
            await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _configure(self, max_bytes: int) -> None:
        for pragma in (
            "PRAGMA busy_timeout = 5000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA foreign_keys = ON",
        ):
            await self._db.execute(pragma)
        if max_bytes:
            page_size = int((await self._db.execute_fetchall("PRAGMA page_size"))[0][0])  # type: ignore[index]
            reserve = min(self.reserve.size, max_bytes // 4) if self.reserve is not None else 0
            self._cap_pages = max(1, max_bytes // page_size)
            self._reserved_pages = self._cap_pages + reserve // page_size
            await self._db.execute(f"PRAGMA max_page_count = {self._cap_pages}")

    async def _migrate(self) -> None:
        version = await self._user_version()
        if version > SCHEMA_VERSION:
            readable_from = await self._readable_from(version)
            if readable_from <= SCHEMA_VERSION:  # newer firmware only added to it: used as it is
                return
            raise StoreTooNew(
                f"{self.path} has schema {version}, usable by agents of schema {readable_from} and up; this agent "
                f"knows up to {SCHEMA_VERSION}: written by newer firmware"
            )
        if 0 < version < SCHEMA_VERSION and max(READABLE_FROM[version:]) > version:
            await self._snapshot(version)  # an older agent could not use the database after these migrations
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with self.transaction() as tx:
                if await self._user_version() >= target:  # another process migrated meanwhile
                    continue
                for statement in MIGRATIONS[target - 1]:
                    await tx.execute(statement)
                await tx.execute(f"PRAGMA user_version = {target}")
                if target >= COMPAT_SINCE:
                    await tx.execute(
                        "INSERT OR REPLACE INTO schema_compat (id, readable_from) VALUES (1, ?)",
                        (READABLE_FROM[target - 1],),
                    )

    async def _readable_from(self, version: int) -> int:
        """The oldest schema that may use this database (its own version where it does not say)."""
        try:
            rows = list(await self._db.execute_fetchall("SELECT readable_from FROM schema_compat WHERE id = 1"))
        except sqlite3.Error:
            return version
        return int(rows[0][0]) if rows else version

    async def _snapshot(self, version: int) -> None:
        """Copy the database as it is (schema ``version``) beside it, durably, before migrating it."""
        target = snapshot_path(self.path.parent, version)
        temporary = target.with_name(target.name + ".tmp")
        temporary.unlink(missing_ok=True)
        await self._db.execute(f"VACUUM INTO '{temporary}'")  # a consistent copy, in one statement
        await asyncio.to_thread(durable_replace, temporary, target)
        log.info("store_snapshot", path=str(target), schema=version)

    async def _user_version(self) -> int:
        rows = await self._db.execute_fetchall("PRAGMA user_version")
        return int(next(iter(rows))[0])

    async def reserved(self, work: Callable[[Transaction], Awaitable[_T]]) -> _T:
        """Run ``work`` in a transaction entitled to the reserve (``agent/store/reserve.py``).

        Under a capped database it may grow past ``max_bytes`` by the reserve; on a full file system
        the ballast is released and the transaction tried once more. :class:`StoreFull` only when
        even the reserve is spent.
        """
        try:
            async with self.transaction(reserved=True) as tx:
                return await work(tx)
        except StoreFull:
            if self.reserve is None or not await asyncio.to_thread(self.reserve.release):
                raise
        async with self.transaction(reserved=True) as tx:
            return await work(tx)

    @asynccontextmanager
    async def transaction(
        self, mode: str = "IMMEDIATE", *, durable: bool = True, reserved: bool = False
    ) -> AsyncIterator[Transaction]:
        """One transaction under the store's lock: committed on success, rolled back on any error.

        ``durable=False`` commits without an fsync (``synchronous=NORMAL`` for that one transaction):
        a process crash keeps it, a power cut may lose it. Only for writes that are safe to lose.
        ``reserved=True`` lets a capped database grow into the reserve (use :meth:`reserved`).

        Cancellation-safe: a statement awaited when the task is cancelled still runs in aiosqlite's
        thread, so ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` are always awaited to completion, the
        after-commit callbacks run whenever the commit happened, and only then is the cancellation
        passed on. (Otherwise a cancelled ``COMMIT`` would commit on disk while memory believed it
        had not: a seq given out twice.) SQLite errors leave as :class:`StoreError`.
        """
        async with self._lock:
            tx = Transaction(self._db)
            cancelled = False
            raised = reserved and self._reserved_pages > self._cap_pages
            if raised:
                cancelled = await _complete(self._db.execute(f"PRAGMA max_page_count = {self._reserved_pages}"))
            if not durable:
                cancelled = await _complete(self._db.execute("PRAGMA synchronous = NORMAL")) or cancelled
            try:
                cancelled = await _complete(self._db.execute(f"BEGIN {mode}")) or cancelled
                if cancelled:
                    raise asyncio.CancelledError
                yield tx
                cancelled = await _complete(self._db.execute("COMMIT"))
            except BaseException as exc:
                if self._db.in_transaction:
                    cancelled = await _complete(self._db.execute("ROLLBACK")) or cancelled
                if isinstance(exc, sqlite3.Error):
                    raise store_error(self.path, exc) from None
                raise
            finally:
                if not durable:
                    cancelled = await _complete(self._db.execute("PRAGMA synchronous = FULL")) or cancelled
                if raised:  # SQLite keeps it at the file's size if the file grew past the cap meanwhile
                    cancelled = (
                        await _complete(self._db.execute(f"PRAGMA max_page_count = {self._cap_pages}")) or cancelled
                    )
            for callback in tx._after:
                callback()
            if cancelled:
                raise asyncio.CancelledError

    async def snapshot(self) -> Snapshot:
        """Read documents, derived rows and the clock anchor consistently."""
        async with self.transaction("DEFERRED") as tx:
            documents = {d.typ: d for d in await _select(tx, StoredDocument, "documents")}
            projects = await _select(tx, ProjectRow, "project")
            services = await _select(tx, ServiceRow, "services ORDER BY rowid")
            signing = await _select(tx, SigningKeyRow, "signing_keys ORDER BY kid")
            clock = await _select(tx, Anchor, "clock")
            roots = await _select(tx, RootRow, "roots ORDER BY kid")
        if len(projects) > 1:
            raise StoreCorrupt(f"{self.path}: {len(projects)} project rows, expected at most one")
        anchor = clock[0] if clock else None
        return Snapshot(documents, projects[0] if projects else None, services, signing, anchor, roots)

    async def save_anchor(self, anchor: Anchor) -> None:
        """Persist the clock's floor if it is later than the one stored."""
        async with self.transaction() as tx:
            await tx.write_anchor(anchor)
