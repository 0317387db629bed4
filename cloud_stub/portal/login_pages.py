"""Logging in and out (seed 002 "Log into SmartPlus", "Privacy Policy", "Email Confirmation"): the login form,
the emailed code, the Privacy Policy, the email address, the links mailed to confirm it or to set a password.
Each step is one operation of ``cloud_stub/operations/logins.py``; a step that moves the login on sets a new
session cookie (the old one ends with it). Links mailed out open a page with a button: a mail scanner that
fetches the link changes nothing."""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cloud_stub.errors import Refused
from cloud_stub.operations import logins
from cloud_stub.operations.logins import VISITOR, Opened
from cloud_stub.portal import guard
from cloud_stub.portal.web import STAGE_PAGES, Portal, failed, refusal_text, shown, status_of


class Field(NamedTuple):
    name: str
    label: str
    type: str = "text"
    autocomplete: str = "off"
    hint: str = ""
    maxlength: int = 200


LOGIN_FIELDS: Final = (
    Field("account", "User Name", autocomplete="username", maxlength=64),
    Field("password", "Password", "password", "current-password", maxlength=128),
)
PASSWORD_HINT: Final = f"At least {logins.MIN_PASSWORD} characters, and not your user name."


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _next(request: Request, form: dict[str, str] | None = None) -> str:
    target = (form or {}).get("next") or request.query_params.get("next", "/")
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _opened(portal: Portal, opened: Opened, target: str = "/") -> Response:
    response = RedirectResponse(STAGE_PAGES.get(opened.stage, target), 303)
    guard.set_cookie(response, guard.SESSION_COOKIE, opened.token, secure=portal.tls)
    return response


def _pre(request: Request) -> tuple[str, bool]:
    found = request.cookies.get(guard.PRE_COOKIE)
    if found and len(found) <= 64:
        return found, False
    return guard.new_pre(), True


def _anonymous(
    request: Request, title: str, action: str, fields: tuple[Field, ...], submit: str, *, code: int = 200,
    error: str = "", form: dict[str, str] | None = None, links: tuple[tuple[str, str], ...] = (),
    hidden: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    portal = _portal(request)
    pre, fresh = _pre(request)
    response = portal.render(
        request, "login.html", None, code=code, csrf_holder=f"pre:{pre}", title=title, action=action,
        fields=fields, submit=submit, error=error, form=form or {}, links=links, hidden=hidden or {},
    )  # fmt: skip
    if fresh:
        guard.set_cookie(response, guard.PRE_COOKIE, pre, secure=portal.tls, strict=True)
    return response


async def _visitor_form(request: Request) -> dict[str, str] | Response:
    """A form posted before a login (login, reset, confirmation), its client not throttled, checked against
    the pre-login cookie's token."""
    if (slow := _portal(request).throttled(request)) is not None:
        return slow
    pre = request.cookies.get(guard.PRE_COOKIE)
    return await _portal(request).form(request, f"pre:{pre}" if pre else None)


# -- the login form ----------------------------------------------------------------------------------------
LINKS: Final = (("/forgot", "Forgot password?"),)


async def login_page(request: Request) -> Response:
    session = await _portal(request).session(request)
    if session is not None:
        return RedirectResponse(STAGE_PAGES.get(session.stage, _next(request)), 303)
    return _anonymous(request, "Log in", "/login", LOGIN_FIELDS, "Login", links=LINKS,
                      hidden={"next": _next(request)})  # fmt: skip


async def login(request: Request) -> Response:
    portal = _portal(request)
    form = await _visitor_form(request)
    if isinstance(form, Response):
        return form
    try:
        asked = logins.LogIn(account=form.get("account", ""), password=form.get("password", ""))
        opened = await run_in_threadpool(portal.book.run, lambda uow: logins.log_in(uow, VISITOR, asked))
    except (Refused, ValidationError) as exc:
        failed(request)
        status = 429 if isinstance(exc, Refused) and exc.rule == "locked" else 401
        return _anonymous(request, "Log in", "/login", LOGIN_FIELDS, "Login", code=status, error=refusal_text(exc),
                          form=shown({"account": form.get("account", "")}), links=LINKS,
                          hidden={"next": _next(request, form)})  # fmt: skip
    portal.poke()
    return _opened(portal, opened, _next(request, form))


async def logout(request: Request) -> Response:
    portal = _portal(request)
    session = await portal.session(request)
    if session is None:
        return RedirectResponse("/login", 303)
    form = await portal.form(request, session.digest)
    if isinstance(form, Response):
        return form
    await run_in_threadpool(portal.book.run, lambda uow: logins.log_out(uow, session))
    response = RedirectResponse("/login", 303)
    guard.clear_cookie(response, guard.SESSION_COOKIE, secure=portal.tls)
    return response


# -- the steps after the password ----------------------------------------------------------------------------
STEPS: Final[dict[str, tuple[str, tuple[Field, ...], str]]] = {
    "code": ("Verification code", (Field("code", "The code emailed to you", autocomplete="one-time-code",
                                         hint="Six digits. It expires in 10 minutes.", maxlength=12),), "Verify"),
    "email": ("Email Confirmation", (Field("email", "Email", "email", "email", maxlength=254,
                                           hint="Used to reset your password and for notices."),), "Submit"),
}  # fmt: skip


async def _step(request: Request, stage: str) -> tuple[Any, Response | None]:
    portal = _portal(request)
    session = await portal.session(request)
    if session is None:
        return None, RedirectResponse("/login", 303)
    if session.stage != stage:
        return None, RedirectResponse(STAGE_PAGES.get(session.stage, "/"), 303)
    return session, None


async def _step_form(request: Request, stage: str) -> tuple[Any, dict[str, str]] | Response:
    """The session at ``stage`` and its POSTed form, checked; or where it must go instead."""
    session, away = await _step(request, stage)
    if away is not None:
        return away
    form = await _portal(request).form(request, session.digest)
    if isinstance(form, Response):
        return form
    return session, form


def _step_page(request: Request, stage: str, session: Any, *, code: int = 200, error: str = "",
               form: dict[str, str] | None = None) -> Response:  # fmt: skip
    title, fields, submit = STEPS[stage]
    links = (("/login", "Log in again"),) if stage == "code" else ()
    return _portal(request).render(request, "login.html", None, code=code, csrf_holder=session.digest,
                                   title=title, action=STAGE_PAGES[stage], fields=fields, submit=submit,
                                   error=error, form=form or {}, links=links, hidden={})  # fmt: skip


async def code_page(request: Request) -> Response:
    session, away = await _step(request, "code")
    return away or _step_page(request, "code", session, error="")


async def code(request: Request) -> Response:
    portal = _portal(request)
    if (slow := portal.throttled(request)) is not None:
        return slow
    stepped = await _step_form(request, "code")
    if isinstance(stepped, Response):
        return stepped
    session, form = stepped
    try:
        asked = logins.GiveCode(code=form.get("code", ""))
        opened = await run_in_threadpool(portal.book.run, lambda uow: logins.give_code(uow, session, asked))
    except (Refused, ValidationError) as exc:
        failed(request)
        return _step_page(request, "code", session, code=401, error=refusal_text(exc))
    return _opened(portal, opened)


async def privacy_page(request: Request) -> Response:
    portal = _portal(request)
    session = await portal.session(request)
    if session is not None and session.stage == "privacy":
        return portal.render(request, "privacy.html", None, csrf_holder=session.digest, title="Privacy Policy",
                             asking=True, error="")  # fmt: skip
    who = await portal.who(request)
    if isinstance(who, Response):
        return who
    return portal.render(request, "privacy.html", who, title="Privacy Policy", asking=False, error="")


async def privacy(request: Request) -> Response:
    portal = _portal(request)
    stepped = await _step_form(request, "privacy")
    if isinstance(stepped, Response):
        return stepped
    session, form = stepped
    asked = logins.Agree(agree=form.get("answer") == "agree")
    opened = await run_in_threadpool(portal.book.run, lambda uow: logins.privacy(uow, session, asked))
    if opened is None:
        response = portal.render(request, "refused.html", None, code=403, title="Privacy Policy",
                                 message="You did not agree to the Privacy Policy: you cannot log into the platform.",
                                 error="")  # fmt: skip
        guard.clear_cookie(response, guard.SESSION_COOKIE, secure=portal.tls)
        return response
    return _opened(portal, opened)


async def email_page(request: Request) -> Response:
    session, away = await _step(request, "email")
    return away or _step_page(request, "email", session)


async def email(request: Request) -> Response:
    portal = _portal(request)
    stepped = await _step_form(request, "email")
    if isinstance(stepped, Response):
        return stepped
    session, form = stepped
    try:
        asked = logins.GiveEmail(email=form.get("email", "").strip(), base=_base(request))
        await run_in_threadpool(portal.book.run, lambda uow: logins.give_email(uow, session, asked))
    except (Refused, ValidationError) as exc:
        return _step_page(request, "email", session, code=400, error=refusal_text(exc), form=shown(form))
    portal.poke()
    return portal.go("/login/email", "email_sent")


# -- links mailed out ----------------------------------------------------------------------------------------------
def _token(request: Request) -> str:
    return str(request.path_params["token"])[:100]


async def confirm_page(request: Request) -> Response:
    return _anonymous(request, "Confirm your email address", request.url.path, (), "Confirm")


async def confirm(request: Request) -> Response:
    portal = _portal(request)
    form = await _visitor_form(request)
    if isinstance(form, Response):
        return form
    try:
        asked = logins.Confirm(token=_token(request))
        await run_in_threadpool(portal.book.run, lambda uow: logins.confirm_email(uow, VISITOR, asked))
    except (Refused, ValidationError) as exc:
        failed(request)
        code = status_of(exc) if isinstance(exc, Refused) else 400
        return _anonymous(request, "Confirm your email address", request.url.path, (), "Confirm", code=code,
                          error=refusal_text(exc))  # fmt: skip
    return portal.go("/", "email_confirmed")


FORGOT_FIELDS: Final = (Field("account", "User Name or Email", autocomplete="username", maxlength=254),)


async def forgot_page(request: Request) -> Response:
    return _anonymous(request, "Forgot password", "/forgot", FORGOT_FIELDS, "Send a link")


async def forgot(request: Request) -> Response:
    portal = _portal(request)
    form = await _visitor_form(request)
    if isinstance(form, Response):
        return form
    try:
        asked = logins.ForgotPassword(account=form.get("account", "").strip(), base=_base(request))
    except ValidationError as exc:
        return _anonymous(request, "Forgot password", "/forgot", FORGOT_FIELDS, "Send a link", code=400,
                          error=refusal_text(exc))  # fmt: skip
    failed(request)  # every reset asked counts: a mailbox is not flooded from one address
    await run_in_threadpool(portal.book.run, lambda uow: logins.forgot_password(uow, VISITOR, asked))
    portal.poke()
    return portal.go("/login", "reset_asked")


RESET_FIELDS: Final = (
    Field("password", "New password", "password", "new-password", PASSWORD_HINT, 128),
    Field("again", "The new password again", "password", "new-password", maxlength=128),
)


async def reset_page(request: Request) -> Response:
    portal = _portal(request)
    try:
        await run_in_threadpool(portal.book.read, lambda uow: logins.link_account(uow, _token(request)))
    except Refused as exc:
        return _anonymous(request, "Set a password", request.url.path, (), "", code=410, error=str(exc),
                          links=(("/forgot", "Ask for a new link"),))  # fmt: skip
    return _anonymous(request, "Set a password", request.url.path, RESET_FIELDS, "Set the password")


async def reset(request: Request) -> Response:
    portal = _portal(request)
    form = await _visitor_form(request)
    if isinstance(form, Response):
        return form
    try:
        if form.get("password", "") != form.get("again", ""):
            raise ValueError("the two passwords differ")
        asked = logins.ResetPassword(token=_token(request), password=form.get("password", ""))
        await run_in_threadpool(portal.book.run, lambda uow: logins.reset_password(uow, VISITOR, asked))
    except (Refused, ValidationError, ValueError) as exc:
        failed(request)
        return _anonymous(request, "Set a password", request.url.path, RESET_FIELDS, "Set the password",
                          code=400, error=refusal_text(exc))  # fmt: skip
    return portal.go("/login", "password_set")
