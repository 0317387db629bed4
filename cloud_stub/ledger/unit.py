"""The unit of work: one operation, one transaction, every aggregate on the same connection.

``Ledger.run(work)`` opens a writing transaction, hands ``work`` a :class:`UnitOfWork` (the aggregates
and the time of the operation), and commits when it returns; a refusal (or any error) rolls back, so a
refused operation changes nothing. When concurrent transactions collide (a PostgreSQL deadlock or
serialization failure, :class:`~cloud_stub.errors.LedgerConflict`) the whole unit runs again, a few
times, from a fresh transaction: operations are functions of what they read, never of what an earlier
attempt read.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Final, TypeVar

from cloud_stub.errors import LedgerConflict
from cloud_stub.ledger.accounts import Accounts
from cloud_stub.ledger.audit import Audit
from cloud_stub.ledger.coupons import Coupons
from cloud_stub.ledger.credits import Credits
from cloud_stub.ledger.documents import Issued, Keys
from cloud_stub.ledger.holdings import Holdings
from cloud_stub.ledger.logins import Logins
from cloud_stub.ledger.mail import Mail
from cloud_stub.ledger.notices import Notices
from cloud_stub.ledger.orders import Orders
from cloud_stub.ledger.remote import Remote
from cloud_stub.ledger.reports import Reports
from cloud_stub.ledger.requests import Requests
from cloud_stub.ledger.sites import Sites
from cloud_stub.ledger.upgrades import Upgrades
from cloud_stub.storage import migrate
from cloud_stub.storage.database import Database, Transaction, url_of

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")
ATTEMPTS: Final = 8


class UnitOfWork:
    """The aggregates of one transaction, and its time (``now``: epoch seconds from the ledger's clock)."""

    def __init__(self, tx: Transaction, now: float) -> None:
        self.tx, self.now = tx, now

    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.tx)

    @cached_property
    def credits(self) -> Credits:
        return Credits(self.tx)

    @cached_property
    def sites(self) -> Sites:
        return Sites(self.tx)

    @cached_property
    def holdings(self) -> Holdings:
        return Holdings(self.tx)

    @cached_property
    def orders(self) -> Orders:
        return Orders(self.tx)

    @cached_property
    def notices(self) -> Notices:
        return Notices(self.tx)

    @cached_property
    def upgrades(self) -> Upgrades:
        return Upgrades(self.tx)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.tx)

    @cached_property
    def issued(self) -> Issued:
        return Issued(self.tx)

    @cached_property
    def remote(self) -> Remote:
        return Remote(self.tx)

    @cached_property
    def reports(self) -> Reports:
        return Reports(self.tx)

    @cached_property
    def requests(self) -> Requests:
        return Requests(self.tx)

    @cached_property
    def logins(self) -> Logins:
        return Logins(self.tx)

    @cached_property
    def mail(self) -> Mail:
        return Mail(self.tx)

    @cached_property
    def audit(self) -> Audit:
        return Audit(self.tx)

    @cached_property
    def coupons(self) -> Coupons:
        return Coupons(self.tx)

    def commit(self) -> None:
        """Keep what was written so far even though the operation goes on to refuse (an order found
        expired is recorded expired)."""
        self.tx.commit()


class Ledger:
    """One ledger: its database and its clock. Operations run through :meth:`run` (writing) or
    :meth:`read`."""

    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self.database, self.clock = database, clock

    @classmethod
    def open(cls, where: str | Path, clock: Callable[[], float] = time.time) -> Ledger:
        """The ledger at ``where`` (a SQLite file or a database URL): an empty database gets the current
        schema; one behind it is refused until ``smartplus-cloud migrate``
        (:class:`~cloud_stub.errors.LedgerOutdated`)."""
        if not str(where).startswith(("postgresql", "postgres", "sqlite")):
            Path(where).parent.mkdir(parents=True, exist_ok=True)
        database = Database(url_of(where))
        try:
            migrate.ensure_current(database)
        except BaseException:
            database.close()
            raise
        return cls(database, clock)

    def close(self) -> None:
        self.database.close()

    @property
    def url(self) -> str:
        return self.database.url

    def run(self, work: Callable[[UnitOfWork], T]) -> T:
        """``work`` in one writing transaction, committed when it returns; run again on a collision."""
        for attempt in range(ATTEMPTS):
            try:
                with self.database.writing() as connection:
                    return work(UnitOfWork(Transaction(self.database, connection), self.clock()))
            except LedgerConflict:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 -- jitter, not a secret
        raise AssertionError("unreachable")

    def call(self, operation: Callable[[UnitOfWork, A, R], T], actor: A, request: R) -> T:
        """``operation(uow, actor, request)`` in one writing transaction (:meth:`run`)."""
        return self.run(lambda uow: operation(uow, actor, request))

    def read(self, work: Callable[[UnitOfWork], T]) -> T:
        """``work`` in one reading transaction."""
        with self.database.reading() as connection:
            return work(UnitOfWork(Transaction(self.database, connection), self.clock()))
