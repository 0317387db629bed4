"""The portal's machinery: who a request is (its session, the actor it acts as), pages read in one
transaction and rendered from templates, forms checked (CSRF, bounds) and run as one operation in one
transaction, then answered with a redirect (POST/redirect/GET) or the form again with the refusal.

Pages are written as plain functions of ``(uow, actor, request)`` returning the template's context
(:func:`page`), and changes as functions of ``(uow, actor, form, request)`` (:func:`action`): they call
the operations and nothing else; no rule, authority check or SQL is here.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import jinja2
import structlog
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cloud_stub.errors import LedgerError, Refused, first_invalid
from cloud_stub.ledger import Ledger, UnitOfWork
from cloud_stub.operations import logins
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.logins import SessionLabel, SessionView
from cloud_stub.operations.types import REFUSED_CHARACTERS
from cloud_stub.portal import guard, navigation

log = structlog.get_logger("cloud_stub.portal")
Endpoint = Callable[[Request], Awaitable[Response]]
STAGE_PAGES: Final = {"code": "/login/code", "privacy": "/login/privacy", "email": "/login/email"}
_STATUS: Final = {"not_yours": 403, "not_found": 404, "no_permission": 403, "operator_only": 403}


@dataclass(frozen=True)
class Who:
    """A logged-in request: its session, the actor it acts as, and what the account menu shows."""

    session: SessionView
    actor: Actor
    label: SessionLabel


class Portal:
    """The portal over one ledger: its templates, its CSRF secret, the mailer's doorbell."""

    def __init__(self, book: Ledger, *, tls: bool = False, poke: Callable[[], None] | None = None) -> None:
        self.book, self.tls = book, tls
        self.poke = poke or (lambda: None)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("cloud_stub.portal", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["day"] = navigation.day
        self.templates.filters["when"] = navigation.when
        self.templates.filters["money"] = navigation.money
        self.templates.filters["label"] = navigation.label
        self._secret: bytes | None = None
        self.throttle = guard.Throttle()

    def throttled(self, request: Request) -> Response | None:
        """429 when this client has failed too often (logins, codes, links); None when it may go on."""
        wait = self.throttle.wait(_client(request), time.monotonic())
        if wait is None:
            return None
        log.warning("portal_throttled", path=request.url.path)
        message = f"Too many attempts from here: try again in {max(1, round(wait))} seconds."
        return self.render(request, "refused.html", None, code=429, title="Too many attempts", message=message)

    # -- the CSRF secret, one per ledger -------------------------------------------------------------------
    def secret(self) -> bytes:
        if self._secret is None:
            fresh = secrets.token_hex(32)
            self._secret = bytes.fromhex(self.book.run(lambda uow: uow.logins.secret("csrf", fresh)))
        return self._secret

    # -- who asks ----------------------------------------------------------------------------------------------
    def _who(self, token: str) -> tuple[SessionView, Actor | None, SessionLabel | None] | None:
        def work(uow: UnitOfWork) -> tuple[SessionView, Actor | None, SessionLabel | None] | None:
            session = logins.session_of(uow, token)
            if session is None:
                return None
            if session.stage != "in":
                return session, None, None
            return session, logins.actor_of(uow, session), logins.label(uow, session)

        return self.book.read(work)

    async def session(self, request: Request) -> SessionView | None:
        token = request.cookies.get(guard.SESSION_COOKIE)
        if not token or len(token) > 100:
            return None
        found = await run_in_threadpool(self._who, token)
        return None if found is None else found[0]

    async def who(self, request: Request) -> Who | Response:
        """The logged-in request, or where it must go first (the login, or the login's next stage)."""
        token = request.cookies.get(guard.SESSION_COOKIE)
        found = None if not token or len(token) > 100 else await run_in_threadpool(self._who, token)
        if found is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
        session, actor, label = found
        if actor is None or label is None:
            return RedirectResponse(STAGE_PAGES[session.stage], 303)
        return Who(session, actor, label)

    # -- answers ------------------------------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, who: Who | None, *, code: int = 200, csrf_holder: str | None = None,
        **context: Any,
    ) -> HTMLResponse:  # fmt: skip
        holder = csrf_holder or (who.session.digest if who else None)
        page = self.templates.get_template(template).render(
            who=who,
            nav=navigation.menu(who.actor, who.label) if who else [],
            path=request.url.path,
            csrf=guard.csrf_token(self.secret(), holder) if holder else "",
            done=navigation.DONE.get(request.query_params.get("done", ""), ""),
            **{"title": "SmartPlus", "error": "", "form": {}, **context},
        )
        return HTMLResponse(page, status_code=code)

    def go(self, where: str, done: str | None = None) -> RedirectResponse:
        if done:
            where += ("&" if "?" in where else "?") + f"done={done}"
        return RedirectResponse(where, 303)

    async def form(self, request: Request, holder: str | None) -> dict[str, str] | Response:
        """The POSTed form, checked: CSRF for ``holder``, the Origin, the bounds; or the refusal."""
        try:
            form = await guard.read_form(request)
        except guard.FormRefused as refused:
            return HTMLResponse(f"<p>{refused}</p>", status_code=refused.status)
        if not guard.origin_ok(request) or not guard.csrf_ok(self.secret(), holder, form.get("csrf")):
            log.warning("portal_csrf_refused", path=request.url.path)
            return self.render(request, "refused.html", None, code=403,
                               message="This form has expired or did not come from this portal. Go back, reload the"
                                       " page and try again.")  # fmt: skip
        return form


_HIDDEN: Final = re.compile(f"[{REFUSED_CHARACTERS}]")


def shown(form: Mapping[str, str]) -> dict[str, str]:
    """A refused form as it is shown again: the characters the rules refuse (controls, bidirectional
    overrides such as U+202E) replaced by U+FFFD, so that what was refused is not echoed into the page."""
    return {k: _HIDDEN.sub("\ufffd", v) for k, v in form.items() if k != "csrf"}


async def checked(request: Request) -> tuple[Who, dict[str, str]] | Response:
    """A logged-in request's POSTed form, checked (:meth:`Portal.form`); or where it must go instead."""
    portal: Portal = request.app.state.portal
    who = await portal.who(request)
    if isinstance(who, Response):
        return who
    form = await portal.form(request, who.session.digest)
    if isinstance(form, Response):
        return form
    return who, form


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def failed(request: Request) -> None:
    """One more failure (or reset request) from this client, for its throttle."""
    portal: Portal = request.app.state.portal
    portal.throttle.count(_client(request), time.monotonic())


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def refusal_text(exc: Exception) -> str:
    """One line for a refused form: a field that does not fit names the first offending field."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    where, message = first_invalid(exc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where or 'payload'}: {_CONTROL.sub('?', message)}{more}"


def status_of(exc: Exception) -> int:
    if isinstance(exc, Refused):
        return _STATUS.get(exc.rule, 409)
    return 400


def page(template: str, title: str) -> Callable[[Callable[[UnitOfWork, Actor, Request], Mapping[str, Any]]], Endpoint]:
    """A page: ``read(uow, actor, request)`` gives the template's context, in one reading transaction."""

    def wrap(read: Callable[[UnitOfWork, Actor, Request], Mapping[str, Any]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            portal: Portal = request.app.state.portal
            who = await portal.who(request)
            if isinstance(who, Response):
                return who
            try:
                context = await run_in_threadpool(portal.book.read, lambda uow: read(uow, who.actor, request))
            except Refused as refused:
                return portal.render(request, "refused.html", who, code=status_of(refused), title=title,
                                     message=str(refused))  # fmt: skip
            except LedgerError:
                return portal.render(request, "refused.html", who, code=503, title=title,
                                     message="The ledger is unavailable: try again in a moment.")  # fmt: skip
            return portal.render(request, template, who, title=title, form={}, error="", **context)

        endpoint.__name__ = read.__name__
        return endpoint

    return wrap


Work = Callable[[UnitOfWork, Actor, Mapping[str, str], Request], Any]


def action(
    template: str, title: str, *, then: Callable[[Request, Any], str], done: str | Callable[[Any], str],
    again: Callable[[UnitOfWork, Actor, Request], Mapping[str, Any]] | None = None,
) -> Callable[[Work], Endpoint]:  # fmt: skip
    """A change: ``work(uow, actor, form, request)`` in one writing transaction, then a redirect to
    ``then(request, result)`` with the ``done`` message (or ``done(result)``'s); refused, ``template``
    again with the form as given and the reason (its context read by ``again``)."""

    def wrap(work: Work) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            portal: Portal = request.app.state.portal
            got = await checked(request)
            if isinstance(got, Response):
                return got
            who, form = got
            try:
                result = await run_in_threadpool(portal.book.run, lambda uow: work(uow, who.actor, form, request))
            except (Refused, ValidationError, ValueError) as exc:
                context: Mapping[str, Any] = {}
                try:
                    if again is not None:
                        context = await run_in_threadpool(portal.book.read, lambda uow: again(uow, who.actor, request))
                except Refused:  # the page itself is not the actor's: only the refusal is shown
                    return portal.render(request, "refused.html", who, code=status_of(exc), title=title,
                                         message=refusal_text(exc))  # fmt: skip
                return portal.render(request, template, who, code=status_of(exc), title=title, form=shown(form),
                                     error="" if template == "refused.html" else refusal_text(exc),
                                     message=refusal_text(exc), **context)  # fmt: skip
            portal.poke()
            return portal.go(then(request, result), done if isinstance(done, str) else done(result))

        endpoint.__name__ = work.__name__
        return endpoint

    return wrap
