"""Firmware images over HTTP/1.1 with Range support: the cloud's image server (and the tests' one).

``GET /<name>`` serves a file of the directory; ``Range: bytes=N-`` or ``bytes=N-M`` gets a 206 with
``Content-Range``. Faults can be set per image for the tests and the demo: stop sending after some
bytes and keep the connection open (a stall), close early (a truncated image), send more than the
file (endless data), ignore Range. ``sent`` counts the body bytes sent per image.

``python -m cloud_stub.images DIR --port N`` serves a directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_RANGE: Final = re.compile(r"bytes=(\d+)-(\d*)$")
CHUNK: Final = 64 * 1024


@dataclass
class Fault:
    stall_after: int | None = None  # body bytes to send before going quiet (per response)
    close_after: int | None = None  # body bytes to send before closing (per response)
    extra: int = 0  # bytes sent past the end of the file, as if the image never ended
    ignore_range: bool = False
    delay_per_chunk: float = 0.0  # slow the response down (seconds per 64 KiB)


class ImageServer:
    """Serves ``directory`` on 127.0.0.1; ``port`` once started."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.host, self.port = host, port
        self.faults: dict[str, Fault] = {}
        self.sent: Counter[str] = Counter()
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self._server: asyncio.Server | None = None

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> ImageServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            await self._respond(request.decode("latin-1"), writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, request: str, writer: asyncio.StreamWriter) -> None:
        line, *header_lines = request.split("\r\n")
        method, _, rest = line.partition(" ")
        name = rest.split(" ")[0].lstrip("/")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        path = self.directory / name
        if method != "GET" or "/" in name or not name or not path.is_file():
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        fault = self.faults.get(name, Fault())
        size = path.stat().st_size
        self.requests.append((name, headers.get("range")))
        start, end = 0, size - 1
        status = "200 OK"
        match = _RANGE.match(headers.get("range", ""))
        if match and not fault.ignore_range:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                writer.write(
                    f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
                return
            status = "206 Partial Content"
        length = end - start + 1
        head = [f"HTTP/1.1 {status}", "Accept-Ranges: bytes", "Connection: close"]
        if status.startswith("206"):
            head.append(f"Content-Range: bytes {start}-{end}/{size}")
        if not fault.extra:
            head.append(f"Content-Length: {length}")  # with extra bytes: close-delimited, as a broken server would
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await self._body(name, path, start, length, fault, writer)

    async def _body(
        self, name: str, path: Path, start: int, length: int, fault: Fault, writer: asyncio.StreamWriter
    ) -> None:
        sent = 0
        with path.open("rb") as f:
            f.seek(start)
            while sent < length + fault.extra:
                if fault.stall_after is not None and sent >= fault.stall_after:
                    await writer.drain()
                    await asyncio.sleep(3600)  # quiet, connection open; the client's stall timeout ends it
                if fault.close_after is not None and sent >= fault.close_after:
                    return
                chunk = f.read(min(CHUNK, length - sent)) if sent < length else b"\xff" * CHUNK
                if fault.stall_after is not None:
                    chunk = chunk[: max(0, fault.stall_after - sent)] or chunk
                if fault.close_after is not None:
                    chunk = chunk[: max(0, fault.close_after - sent)] or chunk
                if not chunk:
                    return
                writer.write(chunk)
                sent += len(chunk)
                self.sent[name] += len(chunk)
                await writer.drain()
                if fault.delay_per_chunk:
                    await asyncio.sleep(fault.delay_per_chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def serve() -> None:
        server = ImageServer(args.directory, args.host, args.port)
        await server.start()
        print(f"serving {args.directory} on http://{server.host}:{server.port}/", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
