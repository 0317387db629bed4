"""Firmware images over HTTP: the cloud's image server, a Starlette application served by uvicorn.

``GET /<name>`` serves a file of the directory; Starlette's ``FileResponse`` answers ``Range`` (206 with
``Content-Range``; 416 past the end) and ``If-Range``, so a device resumes a cut download where it
stopped. What was asked (name and Range header, the last :data:`KEPT`) and the body bytes sent per image
are kept for the operator (and the tests).

``python -m cloud_stub.images DIR --port N`` serves a directory.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from cloud_stub.http import Served

KEPT: Final = 1000
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ImageServer(Served):
    """Serves ``directory`` on ``host``:``port`` (0: any free port)."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.sent: Counter[str] = Counter()
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header): the last KEPT
        app = Starlette(routes=[Route("/{name}", self._image, methods=["GET", "HEAD"])])
        super().__init__(self._counted(app), host, port, grace=1)

    async def _image(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = self.directory / name
        if not _NAME.match(name) or not path.is_file():
            return PlainTextResponse("no such image\n", status_code=404)
        self.requests.append((name, request.headers.get("range")))
        del self.requests[:-KEPT]
        return FileResponse(path, media_type="application/octet-stream")

    def _counted(self, app: Any) -> Any:
        """The app, counting the body bytes it sends per image."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            name = str(scope.get("path", "")).lstrip("/")

            async def counting(message: Message) -> None:
                if message["type"] == "http.response.body":
                    self.sent[name] += len(message.get("body", b""))
                await send(message)

            await app(scope, receive, counting if scope["type"] == "http" else send)

        return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def serve() -> None:
        server = ImageServer(args.directory, args.host, args.port)
        await server.start()
        print(f"serving {args.directory} on {server.url()}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
