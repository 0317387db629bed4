"""``smartplus-cloud copy-ledger FROM TO``: a ledger moved from one database to another (a SQLite file into
PostgreSQL, say), every table copied in one transaction on the target and then compared row by row.

Both must speak the current schema: the source is migrated first (``smartplus-cloud migrate``), the target
is empty (it is given the schema here). Tables go parents first (foreign keys hold at every row); on
PostgreSQL the sequence behind every numbered key (``orders.id``, ``credit_log.id``, ``mail.id``,
``audit.id``: read from the tables) is moved past the copied rows, so the next row does not collide with a
copied one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloud_stub.errors import LedgerOutdated
from cloud_stub.storage import migrate
from cloud_stub.storage.database import Database, redacted
from cloud_stub.storage.metadata import metadata

BATCH: Final = 1000


@dataclass(frozen=True)
class Copied:
    table: str
    rows: int
    same: bool


def _serial(tables: list[sa.Table]) -> list[tuple[str, str]]:
    """The integer keys PostgreSQL numbers from a sequence."""
    return [
        (table.name, column.name)
        for table in tables
        for column in table.primary_key.columns
        if isinstance(column.type, sa.Integer) and column.autoincrement is True
    ]


def _tables() -> list[sa.Table]:
    import cloud_stub.ledger  # noqa: F401 -- every aggregate's tables join the metadata

    return list(metadata.sorted_tables)


def _rows(connection: Connection, table: sa.Table) -> Iterator[list[dict[str, Any]]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = connection.execution_options(stream_results=True).execute(sa.select(table).order_by(*order))
    for chunk in result.mappings().partitions(BATCH):
        yield [dict(row) for row in chunk]


def _snapshot(connection: Connection, table: sa.Table) -> list[tuple[Any, ...]]:
    order = list(table.primary_key.columns) or list(table.columns)
    return [tuple(row) for row in connection.execute(sa.select(table).order_by(*order))]


def copy(source: Database, target: Database) -> list[Copied]:
    """Copy every table of ``source`` into the empty ``target``; each table compared after."""
    for database, role in ((source, "source"), (target, "target")):
        with database.reading() as connection:
            state = migrate.state(connection)
        if role == "source" and state.revision != migrate.HEAD:
            raise LedgerOutdated(f"the source {redacted(database.url)} is at {state.describe()}: migrate it first")
        if role == "target" and not state.empty and state.revision != migrate.HEAD:
            raise LedgerOutdated(f"the target {redacted(database.url)} is at {state.describe()}, not empty")
    migrate.ensure_current(target)
    tables = _tables()
    with source.reading() as reading, target.writing() as writing:
        for table in tables:
            if writing.execute(sa.select(sa.func.count()).select_from(table)).scalar():
                raise LedgerOutdated(f"the target already holds rows in {table.name}: copy into an empty ledger")
        for table in tables:
            for chunk in _rows(reading, table):
                writing.execute(sa.insert(table), chunk)
        if not target.is_sqlite:
            for name, column in _serial(tables):  # our own names, never input
                restart = f"COALESCE((SELECT MAX({column}) FROM {name}), 0) + 1"  # noqa: S608
                writing.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', '{column}'), {restart}, false)")
                )
    copied = []
    with source.reading() as left, target.reading() as right:
        for table in tables:
            before, after = _snapshot(left, table), _snapshot(right, table)
            copied.append(Copied(table.name, len(before), before == after))
    return copied
