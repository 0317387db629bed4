"""One ASGI application for the cloud's web side: the HTTP API under ``/v1`` (``cloud_stub/api.py``) and the
portal everywhere else (``cloud_stub/portal``), over one ledger. ``serve --api-port`` and ``smartplus-cloud
api`` serve it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud_stub import api, portal
from cloud_stub.ledger import Ledger


class Application:
    """Routes a request by its path: ``/v1`` and below to the API, the rest to the portal."""

    def __init__(self, book: Ledger, *, tls: bool = False, poke: Callable[[], None] | None = None) -> None:
        self.api = api.app(book)
        self.portal = portal.app(book, tls=tls, poke=poke)
        self.state = self.api.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "lifespan" or path == "/v1" or path.startswith("/v1/"):
            await self.api(scope, receive, send)
        else:
            await self.portal(scope, receive, send)


def application(book: Ledger, *, tls: bool = False, poke: Callable[[], None] | None = None) -> Application:
    return Application(book, tls=tls, poke=poke)
