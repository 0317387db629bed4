"""The local control socket: a Unix socket in ``data_dir``, owner-only, JSON lines.

Each request is one JSON object on a line, ``{"op": ..., "id": ...}``; each response one line
``{"id": ..., "ok": true, ...}`` or ``{"id": ..., "ok": false, "error": {"code", "message"}}``.
Requests on one connection are served concurrently (responses carry the request's ``id``), so a
burst of events shares group commits. Ops are registered by the daemon (``raise``, ``status``,
``check``). A daemon that finds a live socket refuses to start: two daemons on one data directory
would fight over one MQTT session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from agent import boundedjson
from agent.errors import EdgeAgentError
from agent.faults import fault_point

log = structlog.get_logger("agent.control")

SOCKET_NAME: Final = "control.sock"
MAX_LINE: Final = 256 * 1024
MAX_CONCURRENT: Final = 512  # requests served at once per connection
CONNECT_SECONDS: Final = 2.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(EdgeAgentError):
    """A request the daemon could not serve; ``code`` is the wire code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AlreadyRunning(EdgeAgentError):
    """Another daemon answers on this data directory's control socket."""


def socket_path(data_dir: Path) -> Path:
    """Where the control socket of ``data_dir`` lives."""
    return data_dir / SOCKET_NAME


async def _alive(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ControlServer:
    """Serves registered ops on the control socket until cancelled."""

    def __init__(self, data_dir: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = socket_path(data_dir)
        self._handlers = handlers

    async def start(self) -> asyncio.Server:
        """Bind the socket (owner-only); :class:`AlreadyRunning` if another daemon holds it."""
        if self.path.exists():
            if await _alive(self.path):
                raise AlreadyRunning(f"another edge-agent is running on {self.path.parent}")
            self.path.unlink()
        previous = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._connection, str(self.path), limit=MAX_LINE)
        finally:
            os.umask(previous)
        return server

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slots = asyncio.Semaphore(MAX_CONCURRENT)
        write_lock = asyncio.Lock()

        async def serve(line: bytes) -> None:
            response = await self._respond(line)
            async with write_lock:
                writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
            slots.release()

        try:
            async with asyncio.TaskGroup() as requests:
                while True:
                    try:
                        line = await reader.readline()
                    except ValueError:  # longer than MAX_LINE
                        await serve(b'{"op": "too_long"}')
                        break
                    if not line:
                        break
                    await slots.acquire()
                    requests.create_task(serve(line))
        except (ConnectionError, BaseExceptionGroup):
            pass  # the client went away: nothing to answer to
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, line: bytes) -> dict[str, Any]:
        request_id: Any = None
        request: dict[str, Any] | None = None
        try:
            try:
                request = boundedjson.loads(line)
            except ValueError as exc:
                raise ControlError("bad_request", f"not a JSON line ({exc})") from None
            if not isinstance(request, dict):
                raise ControlError("bad_request", "a request is a JSON object")
            request_id = request.get("id")
            op = request.get("op")
            if op == "too_long":
                raise ControlError("bad_request", f"a request line may be at most {MAX_LINE} bytes")
            handler = self._handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ControlError(
                    "unknown_op", f"op {str(op)[:40]!r} is not one of {', '.join(sorted(self._handlers))}"
                )
            fault_point(f"control:{op}")
            return {"id": request_id, "ok": True, **await handler(request)}
        except ControlError as exc:
            return {"id": request_id, "ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # a defect: this request fails, the daemon and the connection go on
            op = request.get("op") if isinstance(request, dict) else None
            log.exception("control_request_failed", op=str(op)[:40])
            message = f"the daemon failed serving the request ({type(exc).__name__})"
            return {"id": request_id, "ok": False, "error": {"code": "internal_error", "message": message}}


async def request(data_dir: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the daemon of ``data_dir`` and return its response (bound it with ``asyncio.timeout``)."""
    path = socket_path(data_dir)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=MAX_LINE), CONNECT_SECONDS
        )
    except (OSError, TimeoutError):
        raise ControlError("no_daemon", f"no edge-agent is running on {data_dir} (no answer on {path})") from None
    try:
        writer.write(json.dumps(payload).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    except OSError as exc:
        raise ControlError("no_daemon", f"the daemon on {data_dir} did not answer: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line:
        raise ControlError("no_daemon", f"the daemon on {data_dir} closed the connection")
    try:
        response: dict[str, Any] = boundedjson.loads(line)
    except ValueError as exc:
        raise ControlError(
            "bad_response", f"the daemon on {data_dir} answered something else than JSON: {exc}"
        ) from None
    return response
