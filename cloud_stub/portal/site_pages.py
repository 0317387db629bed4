"""Dashboard and Sites (seed 002 "Dashboard", "Site Management", "Project Management"; seed 003's community
switches): the counts and quick links, the list of sites per project type, New/Edit/Delete with the seed's
fields for each type, and a site's own page with its apartments, devices, app accounts, services and
switches."""

from __future__ import annotations

import secrets
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

from starlette.requests import Request

from cloud_stub import rules
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import overview, sites
from cloud_stub.operations.authority import Actor
from cloud_stub.portal import listing
from cloud_stub.portal.guard import as_bool
from cloud_stub.portal.web import action, page

TYPES: Final = (("community", "Community"), ("commercial", "Office"), ("single_family", "Single-Family House"))
TIME_FORMATS: Final = (("24h", "24-hour time"), ("12h", "12-hour time"))
DATE_FORMATS: Final = (("Y-M-D", "Year-Month-Day"), ("M/D/Y", "Month/Day/Year"), ("D/M/Y", "Day/Month/Year"))
ORDERS: Final = (("first_last", "First Name, Last Name"), ("last_first", "Last Name, First Name"))
PAY_BY_PM: Final = (("none", "No Permission"), ("regular", "Stripe/PayPal/Coupon"))
APP_ROLES: Final = {
    "community": (("master", "Main resident"), ("family", "Family member"), ("pm", "Property manager")),
    "single_family": (("master", "Main resident"), ("family", "Family member")),
    "commercial": (("personnel", "Personnel"), ("admin", "Administrator")),
}


@cache
def zones() -> tuple[tuple[str, str], ...]:
    return tuple((z, z.replace("_", " ")) for z in sorted(zoneinfo.available_timezones()) if "/" in z or z == "UTC")


def _project(request: Request) -> str:
    return str(request.path_params["project"])[:64]


# -- Dashboard -------------------------------------------------------------------------------------------------
@page("dashboard.html", "Dashboard")
def dashboard(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    return {"board": overview.dashboard(uow, actor), "can_add": actor.principal_role == "installer"}


# -- the Sites list -------------------------------------------------------------------------------------------------
def _sites_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    kind = request.query_params.get("type", "")
    rows = overview.site_rows(uow, actor)
    counts = {code: sum(r.type == code for r in rows) for code, _ in TYPES}
    if kind not in counts:
        kind = next((code for code, _ in TYPES if counts[code]), "community")
    shown = [r for r in rows if r.type == kind]
    shown = listing.searched(shown, request, lambda r: r.name, lambda r: r.id, lambda r: r.pm or "")
    shown = listing.sorted_by(shown, request, {"name": lambda r: r.name.casefold(), "devices": lambda r: r.devices,
                                               "apartments": lambda r: r.apartments}, "name")  # fmt: skip
    page_rows, pages = listing.paged(shown, request)
    return {"rows": page_rows, "pages": pages, "kind": kind, "types": TYPES, "counts": counts,
            "query": listing.query_maker(request), "q": request.query_params.get("q", "")[:100],
            "sort": request.query_params.get("sort", "name"), "lines": listing.LINES,
            "can_add": actor.principal_role == "installer"}  # fmt: skip


sites_list = page("sites.html", "Sites")(_sites_context)


# -- New, Edit, Delete -----------------------------------------------------------------------------------------------
def _form_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    pms = (
        [(p.id, p.name) for p in overview.people(uow, actor) if p.role == "pm"]
        if actor.principal_role == "installer"
        else []
    )
    kind = request.query_params.get("type", "community")
    return {"types": TYPES, "zones": zones(), "time_formats": TIME_FORMATS, "date_formats": DATE_FORMATS,
            "orders": ORDERS, "pay_by_pm": PAY_BY_PM, "pms": [("", "None"), *pms],
            "kind": kind if kind in dict(TYPES) else "community", "site": None}  # fmt: skip


new_site_page = page("site_form.html", "New site")(_form_context)


def _site_changes(form: Mapping[str, str], kind: str) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "time_format": form.get("time_format", "24h"),
        "date_format": form.get("date_format", "Y-M-D"),
    }
    if kind != "single_family":
        changes.update(pay_by_pm=form.get("pay_by_pm", "none"), pm_notices=as_bool(form, "pm_notices"),
                       renew_notices=as_bool(form, "renew_notices"), pm=form.get("pm") or None,
                       contact_display_order=form.get("contact_display_order", "first_last"))  # fmt: skip
    if kind == "commercial":
        changes["landline"] = as_bool(form, "landline")
    return changes


@action("site_form.html", "New site", then=lambda _r, site: f"/sites/{site.id}", done="site_added", again=_form_context)
def new_site(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> sites.SiteView:
    kind = form.get("type", "")
    if not form.get("name", "").strip():
        raise ValueError("name: the site needs a name")
    doors = [d.strip() for d in form.get("doors", "").replace(",", " ").split() if d.strip()]
    created = datetime.fromtimestamp(uow.now, UTC).date()
    added = sites.add_site(uow, actor, sites.AddSite(
        id=f"s-{secrets.token_hex(5)}", type=kind, installer=actor.principal, created=created,
        timezone=form.get("timezone", "UTC"), name=form.get("name", "").strip(), doors=doors,
        address=form.get("address", "").strip(),
    ))  # fmt: skip
    return sites.edit_site(uow, actor, sites.EditSite(project=added.id, changes=_site_changes(form, kind)))


def _edit_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    context = dict(_form_context(uow, actor, request))
    site = sites.get_site(uow, actor, _project(request))
    context.update(site=site, kind=site.type)
    return context


edit_site_page = page("site_form.html", "Edit site")(_edit_context)


@action(
    "site_form.html", "Edit site", then=lambda r, _s: f"/sites/{_project(r)}", done="site_saved", again=_edit_context
)
def edit_site(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> sites.SiteView:
    site = sites.get_site(uow, actor, _project(request))
    changes = _site_changes(form, site.type)
    changes.update(name=form.get("name", "").strip(), timezone=form.get("timezone", site.timezone),
                   address=form.get("address", "").strip())  # fmt: skip
    return sites.edit_site(uow, actor, sites.EditSite(project=site.id, changes=changes))


@action("refused.html", "Delete site", then=lambda _r, _d: "/sites", done="site_deleted")
def delete_site(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> sites.Deleted:
    return sites.delete_site(uow, actor, sites.DeleteSite(project=_project(request)))


# -- a site's own page -------------------------------------------------------------------------------------------------
def _site_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    site = sites.get_site(uow, actor, _project(request))
    offers = [o.service for o in rules.CATALOGUE[site.type] if "project" in o.levels and o.service != "integration"]
    held = {h.service: h for h in sites.services(uow, actor, site.id) if h.subject == "project"}
    return {
        "site": site,
        "services": sites.services(uow, actor, site.id),
        "apartments": sites.apartments(uow, actor, site.id) if site.type == "community" else [],
        "devices": sites.site_devices(uow, actor, site.id),
        "app_accounts": sites.app_accounts(uow, actor, site.id),
        "switches": [(s, s in held) for s in offers] if site.type == "community" else [],
        "app_roles": APP_ROLES[site.type],
        "apartment_services": rules.APARTMENT_SERVICES,
        "writable": actor.principal_role == "installer",
    }


site_page = page("site.html", "Site")(_site_context)


def _back(request: Request, _result: object) -> str:
    return f"/sites/{_project(request)}"


@action("site.html", "Site", then=_back, done="apartment_added", again=_site_context)
def add_apartment(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> str:
    services = {s: as_bool(form, s) for s in rules.APARTMENT_SERVICES}
    return sites.add_apartment(uow, actor, sites.AddApartment(
        project=_project(request), id=form.get("id", "").strip(), name=form.get("name", "").strip(),
        device_mac=form.get("device_mac", "").strip() or None, device_name=form.get("device_name", "").strip() or None,
        services=services,
    ))  # fmt: skip


@action("site.html", "Site", then=_back, done="device_added", again=_site_context)
def add_device(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> str:
    distributor = uow.accounts.require(actor.principal).parent or ""
    return sites.add_device(uow, actor, sites.AddDevice(
        project=_project(request), mac=form.get("mac", "").strip(), distributor=distributor,
        model=form.get("model", "").strip(), name=form.get("name", "").strip() or None,
    ))  # fmt: skip


@action("site.html", "Site", then=_back, done="app_added", again=_site_context)
def add_app_account(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> str:
    return sites.add_app_account(uow, actor, sites.AddAppAccount(
        project=_project(request), id=form.get("id", "").strip(), role=form.get("role", ""),
        name=form.get("name", "").strip(), apartment=form.get("apartment", "").strip() or None,
    ))  # fmt: skip


@action("site.html", "Site", then=_back, done="switched", again=_site_context)
def switch(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> sites.Switched:
    scope = form.get("scope", "")
    return sites.switch(uow, actor, sites.Switch(
        project=_project(request), service=form.get("service", ""), on=form.get("on") == "on",
        apartment=form.get("apartment") or None if scope == "apartment" else None, all_apartments=scope == "all",
    ))  # fmt: skip
