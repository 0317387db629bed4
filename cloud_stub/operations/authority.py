"""Who acts, and for what: the one place authority is decided (seed 001 "Roles and Permissions";
DOMAIN.md "Who is who", "Paying").

Every operation takes a required :class:`Actor`: an account of the ledger, or the platform operator
(:data:`OPERATOR`, its own role: it runs the platform, registers accounts, sites and MACs, keeps the
firmware list and the keys, and may read every site; it pays for nothing and acts for no site). The
adapters never decide: they resolve who is asking (``--as``, a bearer token) and hand the actor over.

| actor | acts for a site when | acts for an account when |
| --- | --- | --- |
| operator | reading only | always (reading), platform changes |
| distributor | made by its installers or its sub-distributors' installers | it is the account or above it |
| sub-distributor | made by its installers | likewise |
| installer | it made the site | likewise |
| sub-installer | its main installer made the site ("the data shown are the same") | as its main installer |
| property manager | it is assigned to the site | it is the account |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.accounts import Account
from cloud_stub.ledger.sites import Site
from cloud_stub.ledger.upgrades import Upgrade

OPERATOR_ROLE: Final = "operator"
ROLES: Final = ("distributor", "sub_distributor", "installer", "sub_installer", "pm")
_ROLES_SEED: Final = "seed 001 Roles and Permissions"


@dataclass(frozen=True)
class Actor:
    """Who is asking: an account (its id, role, parent and "Pay by Installer"), or the operator."""

    id: str
    role: str
    parent: str | None = None
    permission: str = "none"
    by: str | None = None  # the distributor acting in this installer's portal (docs/portal.md)

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR_ROLE

    @property
    def principal(self) -> str:
        """The account whose sites and money this actor sees: a sub-installer's main installer."""
        return str(self.parent) if self.role == "sub_installer" else self.id

    @property
    def principal_role(self) -> str:
        return "installer" if self.role == "sub_installer" else self.role


OPERATOR: Final = Actor("operator", OPERATOR_ROLE)


def actor_of(account: Account) -> Actor:
    return Actor(account.id, account.role, account.parent, account.permission)


def audit(uow: UnitOfWork, actor: Actor, action: str, subject: str, **detail: object) -> None:
    """An audit line for what ``actor`` did, naming the distributor behind it when one acts for an installer."""
    who, behalf = (actor.by, actor.id) if actor.by else (actor.id, None)
    uow.audit.add(uow.now, who, action, subject, acting_for=behalf, **detail)


def resolve(uow: UnitOfWork, ident: str) -> Actor:
    """The actor for account ``ident`` (``not_found`` for none)."""
    return actor_of(uow.accounts.require(ident))


def operator_only(actor: Actor, what: str) -> None:
    """The platform operator's operations (accounts, sites' registration, MACs, firmware, keys, tokens)."""
    if not actor.is_operator:
        raise Refused("operator_only", f"{what} is the platform operator's to do", "docs/cloud.md running it")


def _mine(uow: UnitOfWork, actor: Actor, site: Site) -> bool:
    chain = uow.accounts.chain(site.installer, 2) if actor.principal_role in ("distributor", "sub_distributor") else ()
    return rules.acts_for(actor.principal, actor.principal_role, chain, site.installer, site.pm)


def site(uow: UnitOfWork, actor: Actor, project: str, *, read: bool = False) -> Site:
    """The site, if ``actor`` acts for it (``read``: the operator may look); else ``not_yours``."""
    found = uow.sites.require(project)
    if actor.is_operator and read:
        return found
    if actor.is_operator or not _mine(uow, actor, found):
        raise Refused("not_yours", f"{actor.id} ({actor.role}) does not act for site {project}", _ROLES_SEED)
    return found


def sites(uow: UnitOfWork, actor: Actor) -> list[Site]:
    """Every site ``actor`` acts for (the operator: every site)."""
    role, who = actor.principal_role, actor.principal
    if actor.is_operator:
        return uow.sites.listed()
    if role == "installer":
        return uow.sites.listed(installers=[who])
    if role == "pm":
        return uow.sites.listed(pm=who)
    if role == "distributor":
        return uow.sites.listed(installers=uow.accounts.installers_under(who))
    if role == "sub_distributor":
        return uow.sites.listed(installers=[a.id for a in uow.accounts.under(who) if a.role == "installer"])
    return []


def account(uow: UnitOfWork, actor: Actor, ident: str) -> Account:
    """An account ``actor`` may see: itself (a sub-installer: its main account too), one below it, or any
    for the operator; else ``not_yours``."""
    found = uow.accounts.require(ident)
    if actor.is_operator or ident in (actor.id, actor.principal):
        return found
    if actor.principal in uow.accounts.chain(ident):
        return found
    raise Refused("not_yours", f"{actor.id} does not act for account {ident}", _ROLES_SEED)


def child(uow: UnitOfWork, actor: Actor, ident: str) -> Account:
    """An account directly under ``actor`` (granting "Pay by Installer": seed 001 lines 54-55)."""
    found = uow.accounts.require(ident)
    if found.parent != actor.principal or actor.is_operator:
        raise Refused("not_yours", f"{ident} is not under {actor.id}", "seed 001 lines 54-55")
    return found


def upgrade(uow: UnitOfWork, actor: Actor, ident: str, *, read: bool = False) -> Upgrade:
    """An upgrade (not deleted) of a site ``actor`` acts for (``not_found``, ``not_yours``)."""
    found = uow.upgrades.get(ident)
    if found is None:
        raise Refused("not_found", f"no upgrade {ident}", "seed 002 line 445")
    site(uow, actor, found.project, read=read)
    return found


def payer(uow: UnitOfWork, actor: Actor, sites_: Iterable[Site], method: str) -> None:
    """Whether ``actor`` may pay ``method`` for ``sites_``: permission first (an account that may not pay
    is told so), then whose sites they are; a PM's permission is each site's "Pay by PM" (seed 002 row 8),
    so for a PM its own sites come first."""
    chosen = list(sites_)
    if actor.is_operator:
        raise Refused("no_permission", "the platform operator pays for nothing", "seed 001 lines 52-55")
    role = actor.principal_role
    permission = actor.permission
    if actor.role == "sub_installer":  # it pays with its main account's permission
        permission = uow.accounts.require(actor.principal).permission
    if role == "pm":
        for each in chosen:
            site(uow, actor, each.id)
        permission = "none" if any(s.pay_by_pm == "none" for s in chosen) else "regular"
    rules.check_permission(role, permission, method)
    if role != "pm":
        for each in chosen:
            site(uow, actor, each.id)
