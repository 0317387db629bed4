"""The ledger in a test: where it is (a SQLite file, or a database of the session's PostgreSQL cluster, with
a home for keys and images), its command line run in process (``smartplus-cloud``), the operations run as
an account, and a ledger set up with a distributor, an installer with credits, a commercial site and one
device."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner

from cloud_stub.cli import main
from cloud_stub.ledger import Ledger, UnitOfWork
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from tests.support.documents import DEVICE_ID

CLOUD = str(Path(sys.executable).parent / "smartplus-cloud")
DOOR2 = "office/door/door:door-2"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class LedgerAt:
    """Where a test's ledger is: ``where`` (a SQLite file's path or a PostgreSQL URL) and ``home`` (keys,
    images)."""

    where: str
    home: Path

    @classmethod
    def sqlite(cls, path: Path) -> LedgerAt:
        return cls(str(path), path.parent)

    @property
    def is_sqlite(self) -> bool:
        return "://" not in self.where

    def args(self) -> list[str]:
        """The command line's options naming it."""
        return ["--ledger", self.where, "--home", str(self.home)]

    def open(self, clock: Callable[[], float] | None = None) -> Ledger:
        return Ledger.open(self.where) if clock is None else Ledger.open(self.where, clock)


def at(ledger: LedgerAt | Path) -> LedgerAt:
    return ledger if isinstance(ledger, LedgerAt) else LedgerAt.sqlite(ledger)


def cloud(ledger: LedgerAt | Path, *args: str, actor: str | None = None) -> tuple[int, Any]:
    """Run one command in process; (exit code, the --json result or the error text)."""
    options = [*at(ledger).args(), "--json", *(["--as", actor] if actor else [])]
    result = CliRunner().invoke(main, [*options, *args])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.output


def as_account(book: Ledger, account: str | None) -> Actor:
    """The actor for ``account`` (the platform operator for None)."""
    if account is None:
        return authority.OPERATOR
    return book.read(lambda uow: authority.resolve(uow, account))


def call(book: Ledger, operation: Callable[[UnitOfWork, Actor, R], T], account: str | None, request: R) -> T:
    """Run one operation as ``account`` (None: the platform operator)."""
    return book.call(operation, as_account(book, account), request)


def setup_ledger(ledger: LedgerAt | Path) -> None:
    for args, actor in [
        (("add-account", "d1", "--role", "distributor", "--name", "D"), None),
        (("add-account", "i1", "--role", "installer", "--name", "I", "--parent", "d1"), None),
        (("grant", "i1", "credit"), "d1"),
        (("buy-credits", "100"), "d1"),
        (("allocate", "i1", "60"), "d1"),
        (("add-project", "office", "--type", "commercial", "--installer", "i1", "--created", "2025-07-01",
          "--door", "door-1", "--door", "door-2"), None),
        (("add-device", DEVICE_ID, "--distributor", "d1", "--model", "R29", "--project", "office"), "i1"),
    ]:  # fmt: skip
        code, out = cloud(ledger, *args, actor=actor)
        assert code == 0, (args, out)
