"""Firmware, Upgrade and MAC Library (seed 002 "Firmware Management", "Upgrade Firmware", "Check and Edit the
Firmware Upgrade List"; the phased rollouts of docs/cloud.md): the firmware list, upgrades filtered by
status, project type, site and search, a new upgrade (project type, site, model and version, the devices
with their current version, now or at a time, reset after upgrade), editing and deleting a pending one,
a rollout's waves with resume and cancel; the MACs registered for the account."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from starlette.requests import Request

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import overview, sites, upgrades
from cloud_stub.operations.authority import Actor
from cloud_stub.portal import listing
from cloud_stub.portal.guard import as_bool
from cloud_stub.portal.web import action, page

STATUSES: Final = ("Pending", "Processing", "Executed")


@page("firmware.html", "Firmware")
def firmware(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    rows = listing.searched(upgrades.firmware_list(uow, actor), request, lambda f: f.model, lambda f: f.version)
    return listing.listed(rows, request)


def _upgrades_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    status = request.query_params.get("status", "")
    kind = request.query_params.get("type", "")
    project = request.query_params.get("site", "")
    site_rows = overview.site_rows(uow, actor)
    names = {s.id: s for s in site_rows}
    rows = upgrades.upgrades(uow, actor, upgrades.UpgradeQuery(status=status if status in STATUSES else None))
    if kind:
        rows = [u for u in rows if u.project in names and names[u.project].type == kind]
    if project:
        rows = [u for u in rows if u.project == project]
    rows = listing.searched(rows, request, lambda u: u.version, lambda u: u.model, lambda u: names[u.project].name)
    rows, pages = listing.paged(rows, request)
    return {"rows": rows, "pages": pages, "names": names, "status": status, "kind": kind, "site": project,
            "statuses": STATUSES, "sites": site_rows, "query": listing.query_maker(request),
            "q": request.query_params.get("q", "")[:100], "writable": actor.principal_role == "installer"}  # fmt: skip


upgrade_list = page("upgrades.html", "Upgrade")(_upgrades_context)


def _new_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    """The New upgrade form, step by step in the query string: project type, site, model/firmware; then the
    devices of that model in the site with their current version."""
    site_rows = list(overview.site_rows(uow, actor))
    kind = request.query_params.get("type", "")
    project = request.query_params.get("site", "")
    chosen = request.query_params.get("firmware", "")
    shown_sites = [s for s in site_rows if not kind or s.type == kind]
    listed = upgrades.firmware_list(uow, actor)
    devices: list[tuple[sites.DeviceView, str]] = []
    if project in {s.id for s in shown_sites} and chosen:
        model = chosen.split("/", 1)[0]
        for device in sites.site_devices(uow, actor, project):
            if device.model == model:
                devices.append((device, upgrades.current_version(uow, device.mac)))
    return {"sites": shown_sites, "kind": kind, "site": project, "firmware": listed, "chosen": chosen,
            "devices": devices}  # fmt: skip


new_upgrade_page = page("upgrade_form.html", "Upgrade Strategy Creation")(_new_context)


def _at(form: Mapping[str, str]) -> datetime | None:
    if form.get("when") != "at":
        return None
    text = form.get("at", "").strip()
    if not text:
        raise ValueError("at: give the time to upgrade at")
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.astimezone()


def _list(form: Mapping[str, str], name: str) -> list[str]:
    return [v for v in form.get(f"{name}[]", "").split("\n") if v]


@action("upgrade_form.html", "Upgrade Strategy Creation", then=lambda _r, _d: "/upgrades", done="upgrade_added",
        again=_new_context)  # fmt: skip
def new_upgrade(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> list[str]:
    model, _, version = form.get("firmware", "").partition("/")
    size = form.get("wave_size", "").strip()
    return upgrades.stage(uow, actor, upgrades.StageUpgrade(
        id=f"u-{secrets.token_hex(5)}", project=form.get("site", ""), model=model, version=version,
        devices=_list(form, "devices") or None, at=_at(form), reset=as_bool(form, "reset"),
        wave_size=int(size) if size.isdigit() else None,
    ))  # fmt: skip


def _ident(request: Request) -> str:
    return str(request.path_params["ident"])[:64]


def _one_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    one = upgrades.upgrade_view(uow, actor, _ident(request))
    try:
        rollout = upgrades.rollout(uow, actor, one.id)
    except Refused as exc:
        if exc.rule != "not_phased":
            raise
        rollout = None
    versions = [f.version for f in upgrades.firmware_list(uow, actor) if f.model == one.model]
    return {"upgrade": one, "rollout": rollout, "writable": actor.principal_role == "installer", "versions": versions}


upgrade_page = page("upgrade.html", "Upgrade")(_one_context)


@action(
    "upgrade.html", "Upgrade", then=lambda r, _v: f"/upgrades/{_ident(r)}", done="upgrade_saved", again=_one_context
)
def edit_upgrade(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> upgrades.UpgradeView:
    at = _at(form)
    version = form.get("version", "").strip() or None
    asked = upgrades.EditUpgrade(id=_ident(request), at=at, right_now=at is None, version=version)
    return upgrades.edit(uow, actor, asked)


@action("upgrade.html", "Upgrade", then=lambda _r, _v: "/upgrades", done="upgrade_deleted", again=_one_context)
def delete_upgrade(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> str:
    return upgrades.delete(uow, actor, _ident(request))


@action(
    "upgrade.html", "Upgrade", then=lambda r, _v: f"/upgrades/{_ident(r)}", done="rollout_resumed", again=_one_context
)
def resume(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> upgrades.RolloutView:
    return upgrades.resume(uow, actor, _ident(request))


@action(
    "upgrade.html", "Upgrade", then=lambda r, _v: f"/upgrades/{_ident(r)}", done="rollout_paused", again=_one_context
)
def pause(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> upgrades.RolloutView:
    return upgrades.pause(uow, actor, _ident(request))


@action(
    "upgrade.html", "Upgrade", then=lambda r, _v: f"/upgrades/{_ident(r)}", done="rollout_cancelled", again=_one_context
)
def cancel(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> upgrades.RolloutView:
    return upgrades.cancel(uow, actor, _ident(request))


# -- MAC Library ------------------------------------------------------------------------------------------------
@page("macs.html", "MAC Library")
def macs(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    rows = listing.searched(overview.mac_library(uow, actor), request, lambda m: m.mac, lambda m: m.model,
                            lambda m: m.name or "")  # fmt: skip
    return listing.listed(rows, request)


@action("refused.html", "MAC Library", then=lambda _r, _m: "/macs", done="mac_removed")
def remove_mac(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> str:
    return overview.remove_mac(uow, actor, overview.RemoveMac(mac=str(request.path_params["mac"])[:17]))
