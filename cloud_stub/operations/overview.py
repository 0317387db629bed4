"""What the portal's lists and dashboard show, read in bulk (a query per table, never one per site): the
Dashboard of seed 002, the Sites list with its counts, the Users module's people, the MAC Library.
Authority is the same as everywhere: ``authority.sites`` and ``authority.account``; making a person
(a property manager, a sub-installer) is an installer's, for itself (seed 002 "Add Property Manager
Account", "Add Sub-Installer Account")."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.holdings import Holding
from cloud_stub.operations import authority, logins
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.sites import SiteSummary
from cloud_stub.operations.types import Ident, Mac, Request, Result, Text

DAY: Final = 86_400.0
EXPIRING_DAYS: Final = 15  # the Dashboard's "services expiring within 15 days"


class SiteRow(SiteSummary):
    """A site as the Sites list shows it: its summary and its counts."""

    devices: int
    apartments: int
    app_accounts: int


class Expiring(Result):
    project: str
    name: str
    service: str
    subject: str
    expires: float
    auto_renew: bool


class Dashboard(Result):
    communities: int
    offices: int
    single_family: int
    devices: int
    app_accounts: int
    expiring: list[Expiring]


def site_rows(uow: UnitOfWork, actor: Actor) -> list[SiteRow]:
    """Every site ``actor`` acts for, with its counts (the Sites list)."""
    sites = authority.sites(uow, actor)
    counts = uow.sites.counts([s.id for s in sites])
    return [
        SiteRow(
            id=s.id,
            name=s.name,
            type=s.type,
            installer=s.installer,
            pm=s.pm,
            timezone=s.timezone,
            devices=counts[s.id][0],
            apartments=counts[s.id][1],
            app_accounts=counts[s.id][2],
        )
        for s in sites
    ]


def dashboard(uow: UnitOfWork, actor: Actor) -> Dashboard:
    """Counts of communities, offices and single-family sites; devices and app accounts; the services that
    expire within :data:`EXPIRING_DAYS` days."""
    rows = site_rows(uow, actor)
    soon = uow.now + EXPIRING_DAYS * DAY
    expiring = [
        Expiring(
            project=h.project,
            name=name,
            service=h.service,
            subject=h.subject,
            expires=h.expires,
            auto_renew=h.auto_renew,
        )
        for name, h in _held(uow, {r.id: r.name for r in rows})
        if h.expires is not None and uow.now < h.expires <= soon
    ]
    return Dashboard(
        communities=sum(r.type == "community" for r in rows),
        offices=sum(r.type == "commercial" for r in rows),
        single_family=sum(r.type == "single_family" for r in rows),
        devices=sum(r.devices for r in rows),
        app_accounts=sum(r.app_accounts for r in rows),
        expiring=expiring,
    )


class AutoRenewing(Result):
    project: str
    name: str
    service: str
    subject: str
    expires: float | None
    source: str | None


def auto_renewing(uow: UnitOfWork, actor: Actor) -> list[AutoRenewing]:
    """The services of the actor's sites that renew themselves (Automatic Payments), soonest first."""
    return [
        AutoRenewing(
            project=h.project, name=name, service=h.service, subject=h.subject, expires=h.expires, source=h.auto_source
        )
        for name, h in _held(uow, {s.id: s.name for s in authority.sites(uow, actor)})
        if h.auto_renew
    ]


def _held(uow: UnitOfWork, names: dict[str, str]) -> list[tuple[str, Holding]]:
    """What the named sites hold, each with its site's name, soonest expiry first (one query)."""
    held = uow.holdings.of_sites(list(names)) if names else {}
    order = sorted(held.values(), key=lambda h: (h.expires or 0.0, h.project, h.service, h.subject))
    return [(names[h.project], h) for h in order]


# -- people -------------------------------------------------------------------------------------------------
class Person(Result):
    id: str
    role: str
    name: str
    email: str
    two_factor: bool
    permission: str
    sites: list[str]


def people(uow: UnitOfWork, actor: Actor) -> list[Person]:
    """The accounts under ``actor``'s principal: an installer's property managers and sub-installers (with
    the sites each PM is assigned to), a distributor's installers and sub-distributors."""
    if actor.is_operator:
        raise Refused("not_yours", "the operator lists accounts with the CLI", "docs/cloud.md")
    every = uow.accounts.under(actor.principal)
    removed = uow.logins.flagged([a.id for a in every], "removed")
    under = [a for a in every if a.id not in removed]
    found = uow.logins.of([a.id for a in under])
    assigned: dict[str, list[str]] = {}
    if actor.principal_role == "installer":
        for site in authority.sites(uow, actor):
            if site.pm:
                assigned.setdefault(site.pm, []).append(site.name)
    return [
        Person(
            id=a.id,
            role=a.role,
            name=a.name,
            email=found[a.id].email if a.id in found else "",
            two_factor=found[a.id].two_factor if a.id in found else False,
            permission=a.permission,
            sites=assigned.get(a.id, []),
        )
        for a in under
    ]


class AddPerson(Request):
    id: Ident
    role: Literal["pm", "sub_installer"]
    name: Text
    email: logins.Email
    two_factor: bool = False
    base: Annotated[str, Field(max_length=300)]


def add_person(uow: UnitOfWork, actor: Actor, request: AddPerson) -> Person:
    """An installer makes a property manager or a sub-installer account under itself, with a portal login
    whose password link is mailed to it."""
    if actor.principal_role != "installer":
        raise Refused("not_yours", "property managers and sub accounts are an installer's to make", "seed 002 Users")
    if request.name.strip() == "":
        raise Refused("bad_name", "a name is needed", "seed 002 Users")
    if not uow.accounts.add(request.id, request.role, request.name, actor.principal, "none"):
        raise Refused("already_exists", f"there is an account {request.id} already", "ledger")
    logins.set_login(uow, actor, logins.SetLogin(account=request.id, email=request.email,
                                                 two_factor=request.two_factor, base=request.base))  # fmt: skip
    authority.audit(uow, actor, "account_added", request.id, role=request.role, parent=actor.principal)
    return Person(id=request.id, role=request.role, name=request.name, email=request.email,
                  two_factor=request.two_factor, permission="none", sites=[])  # fmt: skip


class EditPerson(Request):
    id: Ident
    name: Text
    email: logins.Email
    two_factor: bool = False


def _mine(uow: UnitOfWork, actor: Actor, ident: str) -> None:
    """A property manager or sub-installer of the actor's (an installer's) own."""
    if actor.principal_role != "installer":
        raise Refused("not_yours", "property managers and sub accounts are an installer's", "seed 002 Users")
    found = authority.child(uow, actor, ident)
    if found.role not in ("pm", "sub_installer"):
        raise Refused("not_yours", f"{ident} is not a property manager or sub account", "seed 002 Users")


def edit_person(uow: UnitOfWork, actor: Actor, request: EditPerson) -> Person:
    """Edit Property Manager / Sub Account: the name, the email address (its login's, confirmed as the
    installer gives it), Email Two-Factor Authorization for Login."""
    _mine(uow, actor, request.id)
    if not request.name.strip():
        raise Refused("bad_name", "a name is needed", "seed 002 Users")
    uow.accounts.rename(request.id, request.name)
    if uow.logins.get(request.id) is None:
        raise Refused("no_login", f"{request.id} has no portal login", "seed 002 Users")
    uow.logins.update(request.id, email=request.email, two_factor=int(request.two_factor))
    authority.audit(uow, actor, "account_edited", request.id, two_factor=request.two_factor)
    return next(p for p in people(uow, actor) if p.id == request.id)


class RemovePerson(Request):
    id: Ident


class Removed(Result):
    id: str
    role: str
    sites_unassigned: int


def remove_person(uow: UnitOfWork, actor: Actor, request: RemovePerson) -> Removed:
    """Delete (seed 002 "Edit/Delete Property Manager Account", "Delete Sub-Installer Account"): the person
    can no longer log in, its sessions end, it is no site's property manager any more. Its account stays in
    the ledger, named by the payments and notices it took part in, and no longer listed."""
    _mine(uow, actor, request.id)
    role = uow.accounts.require(request.id).role
    uow.logins.remove(request.id)
    unassigned = uow.sites.unassign_pm(request.id)
    uow.logins.set_setting(request.id, "removed", True)
    authority.audit(uow, actor, "account_removed", request.id, sites_unassigned=unassigned)
    return Removed(id=request.id, role=role, sites_unassigned=unassigned)


# -- the MAC library ----------------------------------------------------------------------------------------
class MacRow(Result):
    mac: str
    model: str
    distributor: str
    project: str | None
    name: str | None


def _libraries(uow: UnitOfWork, actor: Actor) -> list[str]:
    role = actor.principal_role
    if role in ("distributor", "sub_distributor"):
        return [actor.principal]
    if role == "installer":
        parent = uow.accounts.require(actor.principal).parent
        return [] if parent is None else [parent]
    return []


def mac_library(uow: UnitOfWork, actor: Actor) -> list[MacRow]:
    """The MACs a distributor registered: all of its own; for an installer, its distributor's that are in
    no site yet and those in its own sites (never another installer's)."""
    mine = {s.id for s in authority.sites(uow, actor)} if actor.principal_role == "installer" else None
    return [
        MacRow(mac=d.mac, model=d.model, distributor=d.distributor, project=d.project, name=d.name)
        for d in uow.sites.library(_libraries(uow, actor))
        if mine is None or d.project is None or d.project in mine
    ]


class RemoveMac(Request):
    mac: Mac


def remove_mac(uow: UnitOfWork, actor: Actor, request: RemoveMac) -> str:
    """Remove a MAC that is in no site from the library it is in (its distributor, or an installer of it)."""
    found = uow.sites.device(request.mac)
    if found is None or found.distributor not in _libraries(uow, actor):
        raise Refused("not_found", f"no MAC {request.mac} in your library", "seed 002 MAC Library")
    if found.project is not None:
        raise Refused("device_placed", f"{request.mac} is in site {found.project}: remove it there first",
                      "seed 002 MAC Library")  # fmt: skip
    uow.sites.remove_mac(request.mac)
    authority.audit(uow, actor, "mac_removed", request.mac)
    return request.mac
