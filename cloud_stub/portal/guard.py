"""What every portal request passes before a page sees it: security headers on every answer, forms read
within bounds, CSRF tokens checked, cookies set as a security reviewer expects.

- **Headers:** a Content-Security-Policy without inline script or style (``'self'`` only, ``frame-ancestors
  'none'``, ``form-action 'self'``), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: same-origin``, ``Cache-Control: no-store`` on pages (static files may be cached),
  HSTS when served over TLS.
- **Cookies:** ``sp_session`` (a session's only copy of its secret; the ledger keeps its SHA-256) and
  ``sp_pre`` (a browser before its login, for the login form's CSRF token): HttpOnly, SameSite=Lax for the
  session (a link followed from a mail arrives logged in; every change is a POST, which Lax does not send
  from other sites), Strict for ``sp_pre``, Secure over TLS, Path=/.
- **CSRF:** every form carries ``csrf``, an HMAC-SHA256 under the portal's secret of the session (or
  ``sp_pre``) it was made for; a POST without the right one is refused with 403 before anything is read
  from the ledger. Origin, when a browser sends it, must be this portal's.
- **Forms:** ``application/x-www-form-urlencoded`` only (415 otherwise), at most :data:`MAX_FORM` bytes
  (413), at most :data:`MAX_FIELDS` fields; every value a string of at most :data:`MAX_VALUE` characters.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE: Final = "sp_session"
PRE_COOKIE: Final = "sp_pre"
MAX_FORM: Final = 64 * 1024
MAX_FIELDS: Final = 300
MAX_VALUE: Final = 4000
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class FormRefused(Exception):
    """A form refused before any page sees it: its status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def csrf_token(secret: bytes, holder: str) -> str:
    """The token a form made for ``holder`` (a session's digest, or ``pre:`` and the pre-login cookie) carries."""
    return hmac.new(secret, holder.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, holder: str | None, given: str | None) -> bool:
    if not holder or not given:
        return False
    return hmac.compare_digest(csrf_token(secret, holder), given)


async def read_form(request: Request) -> dict[str, str]:
    """The POSTed form as a dict (the last value of a repeated name wins but for the names ending in ``[]``,
    which are kept as lists joined by newlines), or :class:`FormRefused`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefused(415, "a form is sent as application/x-www-form-urlencoded")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM):
        raise FormRefused(413 if declared.isdigit() else 400, f"a form is at most {MAX_FORM} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise FormRefused(413, f"a form is at most {MAX_FORM} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormRefused(400, "a form is UTF-8") from None
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise FormRefused(400, f"a form has at most {MAX_FIELDS} fields of UTF-8 text") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if len(value) > MAX_VALUE or len(name) > 100:
            raise FormRefused(413, f"a form's value is at most {MAX_VALUE} characters")
        if name.endswith("[]") and name in form:
            form[name] += "\n" + value
        else:
            form[name] = value
    return form


class Throttle:
    """At most ``limit`` failures (a refused login or code, a used link) or reset requests per ``window``
    seconds from one client address; beyond it, 429 until the window has moved on. Kept in the process (each
    API worker its own), for at most :data:`THROTTLE_CLIENTS` addresses (the oldest forgotten first): it
    slows a password spray across accounts, which the per-account lockout does not see."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _times(self, client: str, now: float) -> deque[float]:
        times = self._seen.pop(client, None) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        self._seen[client] = times
        if len(self._seen) > THROTTLE_CLIENTS:
            self._seen.popitem(last=False)
        return times

    def wait(self, client: str, now: float) -> float | None:
        """None when ``client`` may try now; else the seconds until it may."""
        times = self._times(client, now)
        return times[0] + self.window - now if len(times) >= self.limit else None

    def count(self, client: str, now: float) -> None:
        self._times(client, now).append(now)


THROTTLE_CLIENTS: Final = 10_000


def set_cookie(response: Response, name: str, value: str, *, secure: bool, strict: bool = False) -> None:
    response.set_cookie(name, value, httponly=True, secure=secure, samesite="strict" if strict else "lax", path="/")


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="lax")


def new_pre() -> str:
    return secrets.token_urlsafe(24)


class SecurityHeaders:
    """Adds the headers above to every answer of the portal."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app, self.tls = app, tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                headers += _headers(static=static, tls=self.tls)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def _headers(*, static: bool, tls: bool) -> list[tuple[bytes, bytes]]:
    found: dict[str, str] = {
        "content-security-policy": CSP,
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
        "permissions-policy": "camera=(), microphone=(), geolocation=()",
    }
    if not static:
        found["cache-control"] = "no-store"
    if tls:
        found["strict-transport-security"] = "max-age=31536000"
    return [(k.encode(), v.encode()) for k, v in found.items()]


def origin_ok(request: Request) -> bool:
    """A browser's Origin (when sent) is this portal's own."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def as_bool(form: Mapping[str, Any], name: str) -> bool:
    return str(form.get(name, "")).lower() in ("on", "true", "1", "yes")
