"""The ledger in a test: where it is (a SQLite file, or a database of the session's PostgreSQL cluster, with
a home for keys and images), its command line run in process (``smartplus-cloud``), the operations run as
an account, and a ledger set up with a distributor, an installer with credits, a commercial site and one
device."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner

from cloud_stub.cli import main
from cloud_stub.ledger import Ledger, UnitOfWork
from cloud_stub.operations import accounts, authority
from cloud_stub.operations.authority import Actor
from tests.support.brokers import free_port
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


# -- the ledger as the end-to-end tests drive it, through the operations ------------------------------------
def office_ledger(where: LedgerAt | Path, clock: Callable[[], float] | None = None) -> Ledger:
    """A ledger with a distributor, an installer with credits, a new office (door-2 unpaid) and the device."""
    from datetime import date

    from cloud_stub.operations import credits, sites

    book = at(where).open(clock)
    for request in (
        accounts.AddAccount(id="d1", role="distributor", name="Distributor"),
        accounts.AddAccount(id="i1", role="installer", name="Installer", parent="d1", permission="credit"),
    ):
        call(book, accounts.add_account, None, request)
    call(book, sites.add_site, None, sites.AddSite(id="office", type="commercial", installer="i1",
                                                   created=date(2025, 7, 1), doors=["door-1", "door-2"]))  # fmt: skip
    place(book, DEVICE_ID)
    call(book, credits.buy, "d1", credits.BuyCredits(amount=1000))
    call(book, credits.allocate, "d1", credits.Allocate(account="i1", amount=500))
    return book


def place(book: Ledger, mac: str, project: str = "office", model: str = "R29") -> None:
    """Register ``mac`` in d1's library and put it in ``project`` (as its installer, i1)."""
    from cloud_stub.operations import sites

    call(book, sites.add_device, "i1", sites.AddDevice(mac=mac, distributor="d1", model=model, project=project))


def renew_door_2(book: Ledger, days: int = 90) -> Any:
    """i1 pays door-2 of the office with credits, to ``days`` from now."""
    from datetime import UTC, datetime, timedelta

    from cloud_stub.operations import paying

    renew_to = (datetime.fromtimestamp(book.clock(), UTC) + timedelta(days=days)).date()
    asked = paying.Renew(items=[DOOR2], renew_to=renew_to, source="credit")
    return call(book, paying.renew, "i1", asked)


def add_firmware(book: Ledger, images: Path, image: Path, model: str = "R29", version: str = "29.30.10.1") -> None:
    """Put ``image`` in the firmware list (as the operator)."""
    from cloud_stub.operations import upgrades

    name, size, digest = upgrades.store_image(images, model, version, image)
    asked = upgrades.AddFirmware(model=model, version=version, log="fixes", file=name, size=size, sha256=digest)
    call(book, upgrades.add_firmware, None, asked)


def stage(book: Ledger, ident: str, **fields: Any) -> list[str]:
    """i1 stages upgrade ``ident`` of the office's R29s to 29.30.10.1 (``fields``: waves...)."""
    from cloud_stub.operations import upgrades

    asked = upgrades.StageUpgrade(id=ident, project="office", model="R29", version="29.30.10.1", **fields)
    return call(book, upgrades.stage, "i1", asked)


def statuses(book: Ledger, ident: str) -> dict[str, str]:
    from cloud_stub.operations import upgrades

    return book.read(lambda uow: upgrades.statuses(uow, authority.OPERATOR, ident))


def alarms(book: Ledger, project: str = "office") -> list[dict[str, Any]]:
    from cloud_stub.operations import ingest

    return book.read(lambda uow: ingest.alarms(uow, authority.OPERATOR, project))


def device_state(book: Ledger, mac: str) -> dict[str, Any] | None:
    from cloud_stub.operations import ingest

    return book.read(lambda uow: ingest.state(uow, mac))


def unsent(book: Ledger) -> list[tuple[str, int]]:
    """(key, seq) of every document issued and not yet acknowledged by a broker."""
    return [(d.key, d.seq) for d in book.read(lambda uow: uow.issued.unsent())]


def start_serve(ledger: LedgerAt, log: Path, api_port: int) -> subprocess.Popen[bytes]:
    """``smartplus-cloud serve`` as its own process (the embedded broker on a free port, images on any),
    its API on ``api_port``, its output in ``log``; the caller waits for it and stops it."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [CLOUD, *ledger.args(), "serve", "--port", str(free_port()), "--images-port", "0", "--api-port",
             str(api_port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
