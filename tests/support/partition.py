"""A TCP relay between a client and a broker that can stop passing bytes without closing anything:
the network between them gone quiet, which only a keepalive notices."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.brokers import free_port


class Partition:
    """Relays 127.0.0.1:port to a broker; :meth:`cut` silences it, :meth:`heal` restores it."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self._upstream = upstream_port
        self._open = asyncio.Event()
        self._open.set()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Partition:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self) -> str:
        """The mqtt.url to give the client."""
        return f"mqtt://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """No byte passes any more, in either direction, on old or new connections; nothing is closed."""
        self._open.clear()

    def heal(self) -> None:
        """Drop what was connected while cut (the client gave up on it), then pass bytes again."""
        self._close_all()
        self._open.set()

    def _close_all(self) -> None:
        for pair in list(self._pairs):
            for writer in pair:
                writer.close()
        self._pairs.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            client_writer.close()
            return
        pair = (client_writer, broker_writer)
        self._pairs.add(pair)
        for source, sink in ((client_reader, broker_writer), (broker_reader, client_writer)):
            task = asyncio.create_task(self._pump(source, sink, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                await self._open.wait()
                if pair not in self._pairs:  # dropped by heal(): what it carried is stale
                    return
                sink.write(data)
                await sink.drain()
        for writer in pair:
            writer.close()
        self._pairs.discard(pair)
