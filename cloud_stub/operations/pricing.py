"""The catalogue's prices for one item of one site (DOMAIN.md "Project types and their paid services";
seed 003 service-based charging; seed 002 row 11 attendance plans). Pure: the site's facts are read once
per site by the caller (:func:`facts`) and each item is priced from them, so a payment for 1,000 items
costs four reads, not four thousand."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.sites import Site
from cloud_stub.operations.sites import account_services, apartment_switches


@dataclass(frozen=True)
class Facts:
    """What pricing a site's items needs to know about it."""

    site: Site
    accounts: dict[str, tuple[str, str, str | None]]  # id -> (role, the service that pays for it, apartment)
    apartments: dict[str, dict[str, bool]]  # id -> each apartment service on or off
    switched: frozenset[str]  # site-level services switched on (communities)
    personnel: int


def facts(uow: UnitOfWork, site: Site, switched: frozenset[str] | None = None) -> Facts:
    """A site's facts, in two or three reads (``switched``: its site-level services, when the caller has read
    them already)."""
    entries = uow.sites.app_accounts(site.id)
    roles = account_services(uow, site, entries)
    apartment_of = {a.id: a.apartment for a in entries}
    if switched is None:
        switched = frozenset(h.service for h in uow.holdings.of(site.id) if h.subject == "project")
    apartments = {a.id: {s: getattr(a, s) for s in rules.APARTMENT_SERVICES}
                  for a in apartment_switches(uow, site, switched)}  # fmt: skip
    personnel = sum(1 for role, _ in roles.values() if role == "personnel")
    return Facts(site, {a: (r, s, apartment_of.get(a)) for a, (r, s) in roles.items()}, apartments, switched, personnel)


def monthly(facts: Facts, service: str, subject: str, plan: str | None) -> int:
    """The monthly price of one item, refusing what the site does not have or has switched off."""
    site = facts.site
    offer = rules.offer(site.type, service)
    rules.check_switchable(service)
    rules.check_subject(offer, subject, site.doors)
    level, _, ident = subject.partition(":")
    price = offer.monthly
    if level == "account":
        found = facts.accounts.get(ident)
        if found is None:
            raise Refused("unknown_account", f"{site.id} has no app account {ident}", "DOMAIN.md project types")
        rules.check_account_service(service, found[0], ident)
        if service == "app" and site.type == "community":  # seed 003: the App charge follows the monitor
            apartment = facts.apartments.get(found[2] or "")
            if apartment is not None and not apartment["with_indoor_monitor"]:
                price = rules.APP_WITHOUT_MONITOR
    elif level == "apartment":
        switches = facts.apartments.get(ident)
        if switches is None:
            raise Refused("unknown_apartment", f"{site.id} has no apartment {ident}", "seed 003")
        if not switches[service]:
            raise Refused("switched_off", f"{service} is switched off for apartment {ident}", "seed 003")
    elif site.type == "community" and "apartment" in offer.levels and service != "with_indoor_monitor":
        raise Refused("per_apartment", f"a community's {service} is charged per apartment (apartment:ID)", "seed 003")
    elif site.type == "community" and level == "project" and service not in facts.switched:
        raise Refused("switched_off", f"{service} is switched off for {site.id}", "seed 003")
    if service == "attendance":
        price = rules.attendance_price(plan, facts.personnel)
    return price
