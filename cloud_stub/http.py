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


def listening(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: any free port), bound here so that a port in use is an
    ``OSError`` now. ``shared``: with SO_REUSEPORT, for one socket per worker process on one port
    (:func:`listening_each`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every response waits 40 ms for the client's delayed ACK (Nagle: the headers, then the body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def listening_each(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on one port, one for each worker process: the kernel spreads new
    connections over them evenly (SO_REUSEPORT). One socket shared by all would not: the worker that wakes
    first accepts every connection waiting, and keep-alive clients stay where they landed (bench api saw
    all 20 of its connections on one of two workers, and half the throughput).

    The port is first bound plainly, so that one in use by any other program is refused here as it would be
    without sharing; the shared sockets take it a moment later (0: the free port that bind found)."""
    with listening(host, port) as probe:
        port = probe.getsockname()[1]
    found: list[socket.socket] = []
    try:
        for _ in range(count):
            found.append(listening(host, port, shared=True))
    except OSError:
        for each in found:
            each.close()
        raise
    return found


class Served:
    """An ASGI app on ``host``:``port`` (0: any free port; :attr:`port` once started)."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, grace: int = 5, sock: socket.socket | None = None
    ) -> None:
        self.app, self.host, self.port, self.grace, self.sock = app, host, port, grace, sock
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    async def start(self) -> Self:
        sock = self.sock or listening(self.host, self.port)  # given: shared with other worker processes
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
