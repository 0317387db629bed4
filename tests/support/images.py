"""The cloud's image server with faults planted per image, for the firmware tests: a server that stalls,
closes early, sends more than the file or ignores Range. The faults act on the ASGI messages of the real
image server (Starlette's FileResponse under uvicorn): nothing here parses HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_stub.images import ImageServer

Message = MutableMapping[str, Any]


@dataclass
class Fault:
    stall_after: int | None = None  # body bytes to send before going quiet, the connection left open
    close_after: int | None = None  # body bytes to send before the connection is closed
    extra: int = 0  # bytes sent past the end of the file, as if the image never ended
    ignore_range: bool = False
    delay_per_chunk: float = 0.0  # slow the response down (seconds per chunk of 64 KiB)


class _Closed(Exception):
    """Raised by the app to make uvicorn drop the connection mid-body (a truncated image)."""


class FaultyImageServer(ImageServer):
    """:class:`ImageServer` with ``faults`` by image name."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults: dict[str, Fault] = {}
        super().__init__(directory, host, port)
        clean = self.app
        self.app = lambda scope, receive, send: self._faulty(clean, scope, receive, send)

    async def _faulty(self, app: Any, scope: Any, receive: Any, send: Any) -> None:
        fault = self.faults.get(str(scope.get("path", "")).lstrip("/")) if scope["type"] == "http" else None
        if fault is None:
            await app(scope, receive, send)
            return
        if fault.ignore_range:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        sent = 0

        async def faulty(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.start" and fault.extra:  # no length: the body runs on
                message["headers"] = [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]
            if message["type"] != "http.response.body":
                await send(message)
                return
            body, more = message.get("body", b""), message.get("more_body", False)
            for limit in (fault.stall_after, fault.close_after):
                if limit is not None and sent + len(body) >= limit:
                    await send({"type": "http.response.body", "body": body[: max(0, limit - sent)], "more_body": True})
                    sent = limit
                    if limit == fault.stall_after:
                        await asyncio.Event().wait()  # quiet, the connection open, until the client's stall timeout
                    raise _Closed
            sent += len(body)
            if not more and fault.extra:
                await send({"type": "http.response.body", "body": body, "more_body": True})
                await send({"type": "http.response.body", "body": b"\xff" * fault.extra, "more_body": False})
                return
            await send(message)
            if fault.delay_per_chunk:
                await asyncio.sleep(fault.delay_per_chunk)

        try:
            await app(scope, receive, faulty)
        except _Closed:
            return  # uvicorn closes a connection whose response never completed
