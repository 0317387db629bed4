"""Serving an ASGI application with uvicorn inside an asyncio program (``serve``, the tests, the demo).

The socket is bound here, before uvicorn starts, so that port 0 (any free port) gives a known port and a
port in use is an ``OSError`` at :meth:`Served.start`, not a log line. Signals stay the program's own:
uvicorn's handlers (which would re-raise SIGTERM after it stopped) are not installed; :meth:`Served.stop`
ends the server gracefully, giving open requests ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any, Final, Self

import uvicorn

STARTUP_SECONDS: Final = 10.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the program handles its signals, not uvicorn
        yield


class Served:
    """An ASGI app on ``host``:``port`` (0: any free port; :attr:`port` once started)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, grace: int = 5) -> None:
        self.app, self.host, self.port, self.grace = app, host, port, grace
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    async def start(self) -> Self:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = uvicorn.Config(
            self.app, interface="asgi3", log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=self.grace,
            server_header=False, date_header=True,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(STARTUP_SECONDS):
            while not self._server.started:
                if self._task.done():
                    await self._task  # its error
                    raise OSError(f"the server on {self.host}:{self.port} stopped as it started")
                await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(self.grace + 5):
                await self._task
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
