"""How ``serve`` hears that another process changed the ledger (the CLI, the API, another ``serve``), so a
change reaches the devices within a fraction of a second rather than at the next timed pass.

- SQLite: ``PRAGMA data_version`` on a connection of its own, read every 50 ms: it changes when another
  connection commits.
- PostgreSQL: ``LISTEN`` on the channel every writing transaction ``NOTIFY``s (``database.py``); the
  payload names the writer, and this process's own writes are not news to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Final, Protocol

import sqlalchemy as sa

from cloud_stub.errors import LedgerUnavailable
from cloud_stub.storage.database import CHANNEL, Database

POLL: Final = 0.05


class Changes(Protocol):
    async def start(self) -> None:
        """Begin hearing changes now: one committed after this is never missed (before the first pass)."""

    async def wait(self, seconds: float) -> bool:
        """Until another writer changed the ledger (True) or ``seconds`` passed (False)."""

    async def close(self) -> None: ...


class SqliteChanges:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._seen = self._version()

    async def start(self) -> None:
        """Nothing more: the version was read as this was made."""

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    async def wait(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            version = self._version()
            if version != self._seen:
                self._seen = version
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(POLL, left))

    async def close(self) -> None:
        self._db.close()


class PostgresChanges:
    def __init__(self, url: str, ignore: str) -> None:
        self._url, self._ignore = url, ignore
        self._connection: object | None = None

    async def start(self) -> None:
        """LISTEN now, before the first pass: a change another process commits between that pass and the
        first wait would otherwise go unheard until the next timed pass (a fresh clone's CI saw it)."""
        await self._connected()

    async def _connected(self) -> object:
        import psycopg

        if self._connection is None:
            try:
                connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                await connection.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error as exc:
                raise LedgerUnavailable(f"cannot listen for the ledger's changes: {exc}") from exc
            self._connection = connection
        return self._connection

    async def wait(self, seconds: float) -> bool:
        import psycopg

        connection = await self._connected()
        assert isinstance(connection, psycopg.AsyncConnection)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while (left := deadline - loop.time()) > 0:
                async for notice in connection.notifies(timeout=left, stop_after=1):
                    if notice.payload != self._ignore:
                        return True
        except psycopg.Error:  # the connection is gone: listen again on the next wait; look at the ledger now
            await self.close()
            return True
        return False

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()  # type: ignore[attr-defined]


def changes_of(database: Database) -> Changes:
    """The way to hear of changes to ``database`` from other writers."""
    if database.is_sqlite:
        path = sa.make_url(database.url).database
        assert path is not None
        return SqliteChanges(path)
    url = sa.make_url(database.url).set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresChanges(url, ignore=database.writer)
