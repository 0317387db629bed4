"""What each site holds: its services, each with its expiry, plan and auto-renewal (DOMAIN.md "Project
types and their paid services"), and the community switches (a service row without an expiry: switched
on, never paid). The ``services`` table's SQL is here and nowhere else.

An extension is a conditional write: it names the expiry it was priced from, and a service whose expiry
moved since (another payment, an auto-renewal) is not extended twice; the payment is refused instead
(``quote_stale``), in the same transaction, so nothing is charged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud_stub.errors import Refused
from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

services = sa.Table(
    "services",
    metadata,
    sa.Column("project", sa.Text, sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("service", sa.Text, primary_key=True),
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("expires", sa.Float),  # NULL: switched on, never paid
    sa.Column("plan", sa.Text),
    sa.Column("auto_renew", sa.Integer, nullable=False, server_default="0"),
    sa.Column("auto_source", sa.Text),
    sa.Column("auto_payer", sa.Text, sa.ForeignKey("accounts.id")),
    # the auto-renewals due: only auto-renewing rows are in it, so a payment's 1,000 extensions do not touch it
    sa.Index(
        "ix_services_auto_expires",
        "expires",
        sqlite_where=sa.text("auto_renew = 1"),
        postgresql_where=sa.text("auto_renew = 1"),
    ),
)

NEVER: float = 253402300799.0  # 9999-12-31T23:59:59Z: a service with no end (Integration)


class Holding(NamedTuple):
    project: str
    service: str
    subject: str
    expires: float | None
    plan: str | None
    auto_renew: bool
    auto_source: str | None
    auto_payer: str | None


class Extension(NamedTuple):
    """One item of a payment: ``expires`` replaces ``base`` (what it was priced from)."""

    project: str
    service: str
    subject: str
    base: float | None
    expires: float
    plan: str | None


# A payment's extension of each item from the expiry it was priced from (:meth:`Holdings.extend`), and the
# rows of items held for the first time, as module constants: run for many rows at once (Transaction.bulk).
_EXTEND = (
    sa.update(services)
    .where(
        services.c.project == sa.bindparam("p"),
        services.c.service == sa.bindparam("s"),
        services.c.subject == sa.bindparam("subj"),
        services.c.expires.is_not_distinct_from(sa.bindparam("base", type_=sa.Float)),
    )
    .values(
        expires=sa.bindparam("new", type_=sa.Float),
        plan=sa.func.coalesce(sa.bindparam("plan_", type_=sa.Text), services.c.plan),
        auto_renew=sa.bindparam("auto_", type_=sa.Integer),
        auto_source=sa.bindparam("source_", type_=sa.Text),
        auto_payer=sa.bindparam("payer_", type_=sa.Text),
    )
)
_FRESH = {
    dialect: insert(services).on_conflict_do_nothing()
    for dialect, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
_HOLDING = sa.select(
    services.c.project, services.c.service, services.c.subject, services.c.expires, services.c.plan,
    services.c.auto_renew, services.c.auto_source, services.c.auto_payer,
)  # fmt: skip
_EXPIRIES = sa.select(services.c.project, services.c.service, services.c.subject, services.c.expires).where(
    services.c.project == sa.bindparam("project")
)  # read raw (Transaction.rows): a quote prices from every service of its sites
_KEY = (services.c.project, services.c.service, services.c.subject)
_OF_SITE = _HOLDING.where(services.c.project == sa.bindparam("project")).order_by(
    services.c.service, services.c.subject
)


def _holding(row: Sequence[object]) -> Holding:
    p, s, subj, e, plan, auto, source, payer = row
    return Holding(str(p), str(s), str(subj), e, plan, bool(auto), source, payer)  # type: ignore[arg-type]


class Holdings:
    """The services of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def of(self, project: str) -> list[Holding]:
        return [_holding(r) for r in self.tx.all(_OF_SITE, {"project": project})]

    def expiries(self, projects: Iterable[str]) -> dict[tuple[str, str, str], float | None]:
        """(site, service, subject) -> expiry (None: switched on, never paid), for every service of the sites:
        what a quote is priced from, in four columns."""
        return {
            (p, s, subject): expires
            for project in projects
            for p, s, subject, expires in self.tx.rows(_EXPIRIES, {"project": project})
        }

    def of_sites(self, projects: Iterable[str]) -> dict[tuple[str, str, str], Holding]:
        rows = self.tx.all(_HOLDING.where(self.tx.among(services.c.project, list(projects))))
        return {(h.project, h.service, h.subject): h for h in map(_holding, rows)}

    def switched(self, project: str, service: str, subject: str = "project") -> bool:
        row = self.tx.first(
            sa.select(1).where(
                services.c.project == project, services.c.service == service, services.c.subject == subject
            )
        )
        return row is not None

    def switch(self, project: str, service: str, on: bool) -> int:
        """A community-level switch; how many rows changed."""
        if on:
            statement = self.tx.insert_ignore(services).values(project=project, service=service, subject="project")
            return int(self.tx.execute(statement).rowcount)
        return int(
            self.tx.execute(
                sa.delete(services).where(
                    services.c.project == project, services.c.service == service, services.c.subject == "project"
                )
            ).rowcount
        )

    def any_active(self, project: str, service: str, now: float) -> bool:
        """Whether an account-level ``service`` of the site is paid and unexpired (PM App locked on)."""
        row = self.tx.first(
            sa.select(1).where(
                services.c.project == project,
                services.c.service == service,
                services.c.subject != "project",
                services.c.expires > now,
            )
        )
        return row is not None

    def extend(self, entries: Sequence[Extension], *, auto_source: str | None, payer: str | None) -> None:
        """Every entry's service moves from its ``base`` expiry to its new one, or nothing does
        (``quote_stale``: one moved since it was priced)."""
        auto = {"auto_": int(auto_source is not None), "source_": auto_source, "payer_": payer if auto_source else None}
        changed = self.tx.bulk(
            _EXTEND,
            [{"p": e.project, "s": e.service, "subj": e.subject, "base": e.base, "new": e.expires, "plan_": e.plan,
              **auto} for e in entries],
        )  # fmt: skip
        if changed < len(entries):
            fresh = [
                {"project": e.project, "service": e.service, "subject": e.subject, "expires": e.expires,
                 "plan": e.plan, "auto_renew": auto["auto_"], "auto_source": auto_source, "auto_payer": auto["payer_"]}
                for e in entries
                if e.base is None
            ]  # fmt: skip
            changed += self.tx.bulk(_FRESH[self.tx.database.dialect], fresh)
        if changed != len(entries):
            raise Refused(
                "quote_stale",
                "a service was renewed since this order was priced: nothing was charged; quote again",
                "DOMAIN.md Paying",
            )

    def force_on(self, project: str, service: str) -> None:
        """Switch a community-level service on (PM App, once a PM App account is paid: seed 003 line 225)."""
        self.tx.execute(self.tx.insert_ignore(services).values(project=project, service=service, subject="project"))

    def set_forever(self, project: str, service: str) -> None:
        """A service with no end (Integration, while a PMS is integrated)."""
        self.tx.execute(
            self.tx.insert_ignore(services).values(project=project, service=service, subject="project", expires=NEVER)
        )

    def remove(self, project: str, service: str | None = None) -> int:
        statement = sa.delete(services).where(services.c.project == project)
        if service is not None:
            statement = statement.where(services.c.service == service)
        return int(self.tx.execute(statement).rowcount)

    def cancel_auto(self, items: Iterable[tuple[str, str, str]]) -> int:
        """Stop auto-renewing these; how many were."""
        return sum(
            int(
                self.tx.execute(
                    sa.update(services)
                    .where(*(c == v for c, v in zip(_KEY, item, strict=True)), services.c.auto_renew == 1)
                    .values(auto_renew=0, auto_source=None, auto_payer=None)
                ).rowcount
            )
            for item in items
        )

    def due_auto(self, now: float) -> list[Holding]:
        """Auto-renewing services whose upcoming expiry is reached."""
        rows = self.tx.all(_HOLDING.where(services.c.auto_renew == 1, services.c.expires <= now).order_by(*_KEY))
        return [_holding(r) for r in rows]

    def renew_auto(self, holding: Holding, new: float) -> bool:
        """Move an auto-renewing service from its expiry to ``new``, unless another process did it first."""
        result = self.tx.execute(
            sa.update(services)
            .where(
                *(c == v for c, v in zip(_KEY, (holding.project, holding.service, holding.subject), strict=True)),
                services.c.auto_renew == 1,
                services.c.expires == holding.expires,
            )
            .values(expires=new)
        )
        return result.rowcount == 1

    def expiring(self, now: float, within: float) -> list[Holding]:
        """Services that expire after ``now`` and within ``within`` seconds of it."""
        rows = self.tx.all(_HOLDING.where(services.c.expires > now, services.c.expires <= now + within).order_by(*_KEY))
        return [_holding(r) for r in rows]

    def all(self) -> list[Holding]:
        return [_holding(r) for r in self.tx.all(_HOLDING.order_by(*_KEY))]
