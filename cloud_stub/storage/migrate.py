"""The ledger's schema: which revision a database is at, a new ledger made at the current one, and
``smartplus-cloud migrate`` bringing an older one up to it (Alembic, under ``migrations/``).

A new, empty database is given the current schema at once (``make demo`` needs no step of its own):
the tables from the aggregates' metadata and the head revision stamped, in one transaction that a second
process starting at the same moment waits for (SQLite's write lock; a PostgreSQL advisory lock). A
database at an older revision is refused until ``migrate`` (a ledger shared by several processes is
migrated once, by an operator, not by whichever process starts first). A SQLite ledger from before
Alembic (``PRAGMA user_version`` 1-8) is brought to version 8 by ``legacy.py`` and stamped ``0001``,
then migrated like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloud_stub.errors import LedgerOutdated
from cloud_stub.storage import legacy
from cloud_stub.storage.database import Database, redacted
from cloud_stub.storage.metadata import metadata

HEAD: Final = "0003"  # the newest revision under migrations/versions (tests/test_ledger_storage.py checks)
BASELINE: Final = "0001"  # what a legacy ledger at version 8 is
_LOCK: Final = 0x5350_4C44  # pg_advisory_xact_lock key while a ledger is created ("SPLD")
_VERSION_TABLE: Final = "alembic_version"


@dataclass(frozen=True)
class State:
    """Where a database stands: ``revision`` (None: none recorded), ``legacy`` (a user_version from before
    Alembic), ``empty`` (no tables at all)."""

    revision: str | None
    legacy: int
    empty: bool

    def describe(self) -> str:
        if self.empty:
            return "empty"
        if self.revision is not None:
            return f"revision {self.revision}"
        return f"legacy version {self.legacy}" if self.legacy else "not a ledger"


def state(connection: Connection) -> State:
    inspector = sa.inspect(connection)
    names = set(inspector.get_table_names())
    revision = None
    if _VERSION_TABLE in names:
        revision = connection.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()  # noqa: S608
    version = 0
    if connection.dialect.name == "sqlite" and revision is None:
        version = int(connection.exec_driver_sql("PRAGMA user_version").scalar() or 0)
    return State(revision, version, not names)


def _stamp(connection: Connection, revision: str) -> None:
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
    )
    connection.exec_driver_sql(f"DELETE FROM {_VERSION_TABLE}")  # noqa: S608 -- our table
    connection.execute(sa.text(f"INSERT INTO {_VERSION_TABLE} (version_num) VALUES (:v)"), {"v": revision})  # noqa: S608


def _create(connection: Connection) -> None:
    import cloud_stub.ledger  # noqa: F401 -- every aggregate's tables join the metadata

    metadata.create_all(connection)
    _stamp(connection, HEAD)


def ensure_current(database: Database) -> None:
    """The ledger is at :data:`HEAD` (an empty database is made so); else ``LedgerOutdated``."""
    with database.reading() as connection:
        found = state(connection)
    if found.revision == HEAD:
        return
    if found.empty:
        with database.writing() as connection:
            if not database.is_sqlite:
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
            if state(connection).empty:  # another process may have made it while this one waited
                _create(connection)
        return
    raise LedgerOutdated(
        f"the ledger {redacted(database.url)} is at {found.describe()}, this program needs revision {HEAD}:"
        " run smartplus-cloud migrate"
    )


def alembic_config(connection: Connection) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "cloud_stub.storage:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(database: Database) -> tuple[str, str]:
    """Bring the ledger to :data:`HEAD` by its revisions (a legacy SQLite ledger first to version 8);
    (where it was, where it is)."""
    from alembic import command

    with database.raw() as connection:
        before = state(connection)
        connection.rollback()
        if before.revision == HEAD:
            return before.describe(), f"revision {HEAD}"
        if database.is_sqlite:  # tables are rebuilt in batch mode: foreign keys are checked after, not during
            _pragma(connection, "PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                if not database.is_sqlite:
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
                now = state(connection)
                if now.revision is None and not now.empty:
                    if not now.legacy:
                        raise LedgerOutdated(f"{redacted(database.url)} is not a ledger (no revision, no version)")
                    legacy.upgrade(connection, now.legacy)
                    _stamp(connection, BASELINE)
                command.upgrade(alembic_config(connection), "head")  # type: ignore[arg-type]
                if database.is_sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise LedgerOutdated(f"the migrated ledger breaks {len(broken)} foreign keys: {broken[:3]}")
        finally:
            if database.is_sqlite:
                _pragma(connection, "PRAGMA foreign_keys = ON")
    return before.describe(), f"revision {HEAD}"


def _pragma(connection: Connection, statement: str) -> None:
    """A SQLite pragma outside any transaction (inside one, ``foreign_keys`` is silently ignored)."""
    connection.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
