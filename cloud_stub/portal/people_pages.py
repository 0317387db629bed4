"""Users (seed 002 "Add Property Manager Account", "Sub-Installer Account Management"; seed 001 "Pay by
Installer"): an installer's property managers and sub accounts, a distributor's installers with the
permission each has to pay, and a distributor switching into an installer's portal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import accounts, logins, overview, sites
from cloud_stub.operations.authority import Actor
from cloud_stub.portal import guard, listing
from cloud_stub.portal.guard import as_bool
from cloud_stub.portal.web import Portal, action, checked, page, refusal_text

PERMISSIONS: Final = (("none", "No Permission"), ("regular", "Stripe/PayPal/Coupon"), ("credit", "Credits"))
TABS: Final = {"pm": "Property Manager", "sub_installer": "Sub Account"}


def _users_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    everyone = overview.people(uow, actor)
    installer = actor.principal_role == "installer"
    tab = request.query_params.get("tab", "pm")
    tab = tab if tab in TABS else "pm"
    shown = [p for p in everyone if p.role == tab] if installer else everyone
    shown = listing.searched(shown, request, lambda p: p.name, lambda p: p.id, lambda p: p.email)
    rows, pages = listing.paged(
        listing.sorted_by(shown, request, {"name": lambda p: p.name.casefold()}, "name"), request
    )
    return {"rows": rows, "pages": pages, "tab": tab, "tabs": TABS, "installer": installer,
            "distributor": actor.principal_role in ("distributor", "sub_distributor"), "permissions": PERMISSIONS,
            "query": listing.query_maker(request), "q": request.query_params.get("q", "")[:100]}  # fmt: skip


users = page("users.html", "Users")(_users_context)


def _new_context(_uow: UnitOfWork, _actor: Actor, request: Request) -> Mapping[str, Any]:
    role = request.query_params.get("role", "pm")
    return {"role": role if role in TABS else "pm", "tabs": TABS}


new_user_page = page("user_form.html", "New user")(_new_context)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@action("user_form.html", "New user", then=lambda _r, p: f"/users?tab={p.role}",
        done=lambda p: "sub_added" if p.role == "sub_installer" else "pm_added", again=_new_context)  # fmt: skip
def new_user(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> overview.Person:
    return overview.add_person(uow, actor, overview.AddPerson(
        id=form.get("id", "").strip(), role=form.get("role", ""), name=form.get("name", "").strip(),
        email=form.get("email", "").strip(), two_factor=as_bool(form, "two_factor"), base=_base(request),
    ))  # fmt: skip


def _account(request: Request) -> str:
    return str(request.path_params["account"])[:64]


def _edit_context(uow: UnitOfWork, actor: Actor, request: Request) -> Mapping[str, Any]:
    found = [p for p in overview.people(uow, actor) if p.id == _account(request) and p.role in TABS]
    if not found or actor.principal_role != "installer":
        raise Refused("not_yours", f"{_account(request)} is not one of your users", "seed 002 Users")
    assignable = [s for s in overview.site_rows(uow, actor) if s.type != "single_family"]
    return {"person": found[0], "role": found[0].role, "tabs": TABS, "assignable": assignable}


edit_user_page = page("user_form.html", "Edit user")(_edit_context)


@action("user_form.html", "Edit user", then=lambda _r, p: f"/users?tab={p.role}", done="pm_saved", again=_edit_context)
def edit_user(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> overview.Person:
    person = overview.edit_person(uow, actor, overview.EditPerson(
        id=_account(request), name=form.get("name", "").strip(), email=form.get("email", "").strip(),
        two_factor=as_bool(form, "two_factor"),
    ))  # fmt: skip
    if person.role == "pm" and form.get("assigning") == "on":  # seed 002: the sites it manages, ticked
        ticked = {v for v in form.get("sites[]", "").split("\n") if v}
        for site in overview.site_rows(uow, actor):
            if site.type == "single_family" or (site.id in ticked) == (site.pm == person.id):
                continue
            changes: dict[str, Any] = {"pm": person.id if site.id in ticked else None}
            sites.edit_site(uow, actor, sites.EditSite(project=site.id, changes=changes))
    return person


@action("refused.html", "Users", then=lambda _r, gone: f"/users?tab={gone.role}", done="user_removed")
def delete_user(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> overview.Removed:
    return overview.remove_person(uow, actor, overview.RemovePerson(id=_account(request)))


@action("refused.html", "Users", then=lambda _r, _e: "/users", done="reset_sent")
def send_reset(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> str:
    return logins.send_reset(uow, actor, logins.AdminReset(account=_account(request), base=_base(request)))


@action("users.html", "Users", then=lambda _r, _v: "/users", done="grant_saved", again=_users_context)
def grant(uow: UnitOfWork, actor: Actor, form: Mapping[str, str], request: Request) -> accounts.AccountView:
    return accounts.grant(uow, actor, accounts.Grant(account=_account(request), permission=form.get("permission", "")))


async def switch_into(request: Request) -> Response:
    """A distributor into an installer's portal (its permission granted): a new session cookie."""
    portal: Portal = request.app.state.portal
    got = await checked(request)
    if isinstance(got, Response):
        return got
    who, _ = got
    try:
        opened = await run_in_threadpool(
            portal.book.run, lambda uow: logins.switch_into(uow, who.session, _account(request))
        )
    except Refused as exc:
        return portal.render(request, "refused.html", who, code=403, title="Users", message=refusal_text(exc))
    response = portal.go("/", "switched_into")
    guard.set_cookie(response, guard.SESSION_COOKIE, opened.token, secure=portal.tls)
    return response


async def switch_back(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    got = await checked(request)
    if isinstance(got, Response):
        return got
    who, _ = got
    opened = await run_in_threadpool(portal.book.run, lambda uow: logins.switch_back(uow, who.session))
    response = portal.go("/", "switched_back")
    guard.set_cookie(response, guard.SESSION_COOKIE, opened.token, secure=portal.tls)
    return response
