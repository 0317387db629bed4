"""The ledger's database: SQLite (the embedded default) or PostgreSQL, by URL, through SQLAlchemy Core.

One place knows the back ends apart. Everything above asks for a transaction, reading or writing, and
runs SQLAlchemy Core statements (the aggregates in ``cloud_stub/ledger/`` own them):

- **SQLite**: WAL, ``synchronous=FULL`` (a commit is on disk when it returns), foreign keys on, a busy
  timeout. pysqlite's own transaction handling is switched off and transactions are begun here: a
  writing one with ``BEGIN IMMEDIATE``, so writers queue for the lock at their start instead of failing
  half way when a reader becomes a writer.
- **PostgreSQL** (psycopg 3): READ COMMITTED. Money moves by conditional writes (``UPDATE ... WHERE
  status = 'pending'``), which PostgreSQL re-checks after waiting for a concurrent writer's row lock; a
  deadlock or serialization failure is :class:`~cloud_stub.errors.LedgerConflict`, retried by the unit
  of work. Every writing transaction ends with ``NOTIFY`` on :data:`CHANNEL`, which ``serve`` listens on
  (``cloud_stub/storage/changes.py``).

Library errors are mapped here (``raise X from exc``): an unreachable server is
:class:`~cloud_stub.errors.LedgerUnavailable`.
"""

from __future__ import annotations

import operator
import secrets
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from cloud_stub.errors import LedgerConflict, LedgerUnavailable

CHANNEL: Final = "smartplus_ledger"  # NOTIFY'd by every writing transaction on PostgreSQL
BUSY_TIMEOUT_MS: Final = 30_000
_CONFLICT_CODES: Final = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


def url_of(ledger: str | Path) -> str:
    """A database URL for ``ledger``: a ``postgresql://`` or ``sqlite://`` URL as given (the driver made
    explicit), anything else a SQLite file's path."""
    text = str(ledger)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if text.startswith(("postgresql+psycopg://", "sqlite://", "sqlite+pysqlite://")):
        return text
    return f"sqlite+pysqlite:///{Path(text)}"


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


class Database:
    """One ledger database: an engine with a pool, and its transactions."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.writer = secrets.token_hex(8)  # NOTIFY's payload: a listener can tell its own writes apart
        # preserve_rowcount: an INSERT ... ON CONFLICT DO NOTHING says whether its row went in (SQLAlchemy
        # keeps rowcount for UPDATE and DELETE only, unless asked).
        options: dict[str, Any] = {"execution_options": {"preserve_rowcount": True}}
        if url.startswith("postgresql"):
            # No ping before each use (a round trip per transaction): a connection found dead is dropped by
            # the pool and the request answered 503, the next one gets a fresh connection.
            options |= {"pool_size": pool_size, "max_overflow": 40}
        self.engine: Engine = sa.create_engine(url, **options)
        self.dialect: str = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One writing transaction: committed when the block ends, rolled back if it raises."""
        with self._transaction(write=True) as connection:
            yield connection
            if not self.is_sqlite:
                connection.execute(sa.select(sa.func.pg_notify(CHANNEL, self.writer)))

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """One read: on SQLite a deferred transaction (one snapshot for every statement); on PostgreSQL each
        statement on its own (autocommit): READ COMMITTED gives each statement its own snapshot anyway, and
        BEGIN and COMMIT would cost two round trips a request."""
        if self.is_sqlite:
            with self._transaction(write=False) as connection:
                yield connection
            return
        with self._ledger_errors(), self.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self._ledger_errors(), self.engine.connect() as connection:
            connection = connection.execution_options(ledger_write=write)
            with connection.begin():
                yield connection

    @contextmanager
    def raw(self) -> Iterator[Connection]:
        """A connection outside any transaction (migrations begin their own)."""
        with self._ledger_errors(), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def _ledger_errors(self) -> Iterator[None]:
        """A driver's error as the ledger's (unavailable, conflict); a defect of ours as it is."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            mapped = _mapped(exc, self.url)
            if mapped is None:
                raise
            raise mapped from exc

    # -- statements that differ by back end -------------------------------------------------------
    def insert(self, table: sa.Table) -> Any:
        """An INSERT that knows ``ON CONFLICT`` in this back end's dialect."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    def insert_ignore(self, table: sa.Table, keys: Sequence[str] | None = None) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING``: its rowcount says whether a row went in."""
        return self.insert(table).on_conflict_do_nothing(index_elements=keys)

    def upsert(self, table: sa.Table, keys: Sequence[str], update: Mapping[str, Any]) -> Any:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE SET update`` (``update`` may use ``excluded``: pass
        a function of the statement's ``excluded`` columns as values via :meth:`excluded_upsert`)."""
        return self.insert(table).on_conflict_do_update(index_elements=list(keys), set_=dict(update))

    def excluded_upsert(self, table: sa.Table, keys: Sequence[str], columns: Sequence[str]) -> Any:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE SET column = excluded.column`` for ``columns``."""
        statement = self.insert(table)
        return statement.on_conflict_do_update(
            index_elements=list(keys), set_={c: statement.excluded[c] for c in columns}
        )


_COMPILED: dict[tuple[int, str], tuple[Any, Any]] = {}


def _compiled(statement: Any, dialect: Any) -> Any:
    """``statement`` compiled for ``dialect``, once (statements given to :meth:`Transaction.bulk` are module
    constants of the aggregates, so the cache holds a handful)."""
    key = (id(statement), dialect.name)
    found = _COMPILED.get(key)
    if found is None:  # the statement is kept beside its compiled form: its id cannot be taken by another
        found = _COMPILED[key] = (statement.compile(dialect=dialect), statement)
    return found[0]


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin, not by pysqlite
    for pragma in (
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA foreign_keys = ON",
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    ):
        dbapi_connection.execute(pragma)


def _sqlite_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get("ledger_write", True)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _mapped(exc: sa.exc.DBAPIError, url: str) -> Exception | None:
    """The ledger's error for a driver's, or None for one that is a defect of ours (re-raised)."""
    code = getattr(exc.orig, "sqlstate", None)
    if code in _CONFLICT_CODES:
        return LedgerConflict(f"concurrent transactions collided ({code})")
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        return LedgerUnavailable(f"the ledger {redacted(url)} cannot be used: {first}")
    return None


class Transaction:
    """What an aggregate is handed: one transaction's connection and the back end's dialect helpers."""

    def __init__(self, database: Database, connection: Connection) -> None:
        self.database, self.connection = database, connection
        self.insert, self.insert_ignore = database.insert, database.insert_ignore
        self.upsert, self.excluded_upsert = database.upsert, database.excluded_upsert

    def execute(self, statement: Any, parameters: Any = None) -> sa.CursorResult[Any]:
        return self.connection.execute(statement, parameters)

    def among(self, column: Any, values: Sequence[Any]) -> Any:
        """``column`` is one of ``values``: on PostgreSQL ``= ANY(array)``, one parameter however many values
        (an IN list of a thousand is a thousand parameters, each parsed and bound: ~7 ms a statement with
        psycopg); on SQLite ``IN (...)``, which it binds cheaply."""
        if self.database.is_sqlite:
            return column.in_(list(values))
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))

    def bulk(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> int:
        """One statement for many rows (``executemany``), compiled once per back end and handed to the driver
        as it is: SQLAlchemy's per-row parameter processing, ~12 µs a row, would cost more than the
        database's own work for a payment of 1,000 items (bench/bench_ledger.py). For statements whose
        columns need no type conversion (text, numbers). How many rows it changed."""
        if not rows:
            return 0
        compiled = _compiled(statement, self.connection.dialect)
        if compiled.positional:
            order = compiled.positiontup or ()  # itemgetter of two or more names gives a tuple, in C
            parameters: Any = (
                list(map(operator.itemgetter(*order), rows))
                if len(order) > 1
                else [tuple(row[name] for name in order) for row in rows]
            )
        else:
            parameters = list(rows)
        return int(self.connection.exec_driver_sql(str(compiled), parameters).rowcount)

    def rows(self, statement: Any, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A select's rows as the driver hands them (tuples), the statement compiled once per back end:
        SQLAlchemy's own row processing costs more than SQLite's reading for the thousand rows a payment
        prices from (bench/bench_ledger.py). For selects of columns that need no type conversion (text,
        numbers: not booleans or dates, which SQLite keeps as numbers and text) and without expanding IN."""
        compiled = _compiled(statement, self.connection.dialect)
        given: Any = (
            tuple(parameters[name] for name in compiled.positiontup or ()) if compiled.positional else parameters
        )
        result = self.connection.exec_driver_sql(str(compiled), given)
        try:
            found: list[tuple[Any, ...]] = result.cursor.fetchall()  # type: ignore[assignment]
        finally:
            result.close()
        return found

    def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self.connection.execute(statement, parameters).scalar()

    # Rows are handed on as Any: each aggregate unpacks its own select's columns into its dataclasses.
    def first(self, statement: Any, parameters: Any = None) -> Any:
        return self.connection.execute(statement, parameters).first()

    def all(self, statement: Any, parameters: Any = None) -> Sequence[Any]:
        return self.connection.execute(statement, parameters).all()

    def exclusive(self, name: str) -> None:
        """Hold the lock called ``name`` until this transaction ends, so that work which reads then writes
        across processes (making the first keys) is done once: on PostgreSQL an advisory transaction lock;
        on SQLite every writing transaction holds the database's one write lock already."""
        if not self.database.is_sqlite:
            self.connection.execute(sa.select(sa.func.pg_advisory_xact_lock(zlib.crc32(name.encode()))))

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that fails alone: rolled back to here if the block raises (a malformed
        report from one device must not undo a batch of others')."""
        with self.connection.begin_nested():
            yield

    def commit(self) -> None:
        """Commit what was done so far (a refusal that must keep a write, such as an order found expired);
        the next statement begins a new transaction."""
        self.connection.commit()
