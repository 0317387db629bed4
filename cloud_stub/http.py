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

    def protocol(self) -> asyncio.Protocol:
        """A connection's protocol, made as uvicorn's own listeners make it (``Server.startup``)."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


def listening(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: any free port), bound here so that a port in use is an
    ``OSError`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every response waits 40 ms for the client's delayed ACK (Nagle: the headers, then the body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Served:
    """An ASGI app on ``host``:``port`` (0: any free port; :attr:`port` once started).

    ``sock``: a listening socket made already. ``dealt``: instead of listening, take the connections a
    dealer process hands this one over a Unix socket (:func:`deal`)."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, grace: int = 5, sock: socket.socket | None = None,
        dealt: socket.socket | None = None,
    ) -> None:  # fmt: skip
        self.app, self.host, self.port, self.grace, self.sock, self.dealt = app, host, port, grace, sock, dealt
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._adopting: set[asyncio.Task[Any]] = set()

    def url(self, path: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    async def start(self) -> Self:
        listeners = []
        if self.dealt is None:
            sock = self.sock or listening(self.host, self.port)
            self.port = sock.getsockname()[1]
            listeners.append(sock)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = uvicorn.Config(
            self.app, interface="asgi3", log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=self.grace,
            server_header=False, date_header=True,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=listeners))
        async with asyncio.timeout(STARTUP_SECONDS):
            while not self._server.started:
                if self._task.done():
                    await self._task  # its error
                    raise OSError(f"the server on {self.host}:{self.port} stopped as it started")
                await asyncio.sleep(0.01)
        if self.dealt is not None:
            self.dealt.setblocking(False)
            asyncio.get_running_loop().add_reader(self.dealt.fileno(), self._receive, self.dealt)
        return self

    def _receive(self, channel: socket.socket) -> None:
        """The connections the dealer handed over (one a message), each served as if accepted here."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, descriptors, _, _ = socket.recv_fds(channel, 1, 1)
            except BlockingIOError:
                return
            if not message:  # the dealer is gone: nothing more will come
                loop.remove_reader(channel.fileno())
                return
            for descriptor in descriptors:
                connection = socket.socket(fileno=descriptor)  # TCP, as accepted: TCP_NODELAY is set for it
                connection.setblocking(False)
                if self._server is None or self._server.should_exit:
                    connection.close()
                    continue
                task = loop.create_task(loop.connect_accepted_socket(self._server.protocol, connection))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        if self.dealt is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.dealt.fileno())
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


class Dealt(Exception):
    """Raised by a signal handler to stop :func:`deal`."""


def deal(sock: socket.socket, workers: list[socket.socket]) -> None:
    """Accept connections on ``sock`` and hand them to the worker processes in turn, each over its Unix
    socket (SOCK_SEQPACKET, the descriptor as SCM_RIGHTS), as Node's cluster module does. Worker processes
    that accept from one shared socket themselves do not share the load: the one whose event loop wakes
    first takes every connection waiting (bench api: all 20 of its keep-alive clients on one of two
    workers, the throughput halved and the tail tripled), and SO_REUSEPORT's hash of each connection splits
    20 as unevenly as 15 and 5. A worker that is gone is dealt no more; with none left, this returns. Runs
    until a signal handler raises :class:`Dealt`."""
    turn = 0
    while workers:
        connection, _ = sock.accept()
        with connection:
            while workers:
                channel = workers[turn % len(workers)]
                try:
                    socket.send_fds(channel, [b"c"], [connection.fileno()])
                    turn += 1
                    break
                except OSError:  # that worker stopped: the others take its turns
                    workers.remove(channel)
                    channel.close()
