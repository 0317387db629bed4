"""PostgreSQL for the ledger's tests: one cluster of the test session's own (Debian's ``initdb`` and
``pg_ctl`` in a temporary directory, on a free port, as the ``postgres`` user: PostgreSQL refuses to run
as root), never the machine's service. Each test gets a database of its own, copied from a template the
ledger's migrations made once (``CREATE DATABASE ... TEMPLATE``: a file copy, ~0.1 s).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from tests.support.brokers import free_port

USER: Final = "postgres"
TEMPLATE: Final = "ledger_template"


def _binary(name: str) -> str:
    """Debian keeps PostgreSQL's server programs out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True) or [shutil.which(name) or ""]
    if not found[0]:
        raise RuntimeError(f"{name} not found: .ci/run installs Debian's postgresql package")
    return found[0]


class Cluster:
    """A PostgreSQL cluster in a temporary directory; :meth:`database` makes a fresh database.

    Tests run it without flushing to disk (``fsync=off``: a crash loses the cluster, and tests make a new one
    each session); ``durable=True`` keeps PostgreSQL's own defaults, as a deployment runs it, for benches.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.directory = Path(tempfile.mkdtemp(prefix="ledger-pg-", dir="/tmp"))
        self.port = free_port()
        self._names = itertools.count(1)
        account = pwd.getpwnam(USER)
        os.chown(self.directory, account.pw_uid, account.pw_gid)
        self._as_postgres = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> Cluster:
        data = self.directory / "data"
        self._run(_binary("initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(_binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.directory / "log"), "-w",
                  "-t", "60", "start")  # fmt: skip
        self.sql(f"CREATE DATABASE {TEMPLATE}")
        from cloud_stub.storage import migrate
        from cloud_stub.storage.database import Database

        database = Database(self.url(TEMPLATE))
        try:
            migrate.upgrade(database)  # the real revisions, so each test's ledger is what migrate makes
        finally:
            database.close()
        return self

    def url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        for attempt in range(50):  # a template still in use by a closing connection refuses a copy for a moment
            try:
                with psycopg.connect(self.url(database), autocommit=True) as connection:
                    connection.execute(statement.encode())
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.1)

    def database(self) -> str:
        """A new, empty-but-migrated ledger database; its URL."""
        name = f"ledger_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def empty(self) -> str:
        """A new database with no tables at all; its URL."""
        name = f"empty_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self._as_postgres, _binary("pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate",
                        "-w", "stop"], check=False, capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)
