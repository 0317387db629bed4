"""The local control socket: a Unix socket, JSON lines, protocol version 1 (docs/control.md).

Each request is one JSON object on a line, ``{"op": ..., "id": ..., "v": 1}``; each response one line
``{"v": 1, "id": ..., "ok": true, ...}`` or ``{"v": 1, "id": ..., "ok": false, "error": {"code",
"message"}}``. Requests on one connection are served concurrently (responses carry the request's
``id``), so a burst of events shares group commits. Ops are registered by the daemon (``raise``,
``status``, ``check``, ``simulate``); ``hello`` is the socket's own: the protocol version and the ops
this peer may use. A daemon that finds a live socket refuses to start: two daemons on one data
directory would fight over one MQTT session.

Who may ask what. The socket is owner-only (``data_dir/control.sock``, 0600) unless ``[control]
group`` opens it to a group (the door phone's own UI or SIP application asking for decisions): then
it is 0660 in that group, in a directory of its own (``[control] socket``), and a peer that is
neither the agent's user nor root (told by ``SO_PEERCRED``) may use :data:`GROUP_OPS` only: asking,
never raising events or driving the hardware (``forbidden``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from agent.errors import AlreadyRunning, ControlError
from agent.runtime.faults import fault_point
from protocol import boundedjson

log = structlog.get_logger("agent.control")

SOCKET_NAME: Final = "control.sock"
PROTOCOL: Final = 1
GROUP_OPS: Final = frozenset({"hello", "check", "status"})  # what the configured group may ask
MAX_LINE: Final = 256 * 1024
MAX_CONCURRENT: Final = 512  # requests served at once per connection
CONNECT_SECONDS: Final = 2.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_path(where: Path) -> Path:
    """The control socket: ``where`` itself, or ``control.sock`` in it when it is a directory (a data_dir)."""
    return where / SOCKET_NAME if where.is_dir() else where


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return int(uid)


_SUN_PATH: Final = 108  # sockaddr_un.sun_path: a Unix socket's path is at most 107 bytes and a NUL


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """A name of ``path`` a Unix socket can take: the path itself, or for a longer one (a data directory
    deep in a file system) the same file through a descriptor of its directory, ``/proc/self/fd/N/NAME``,
    which Linux resolves for bind and connect alike. Without it, a socket under a long path could be
    neither made nor reached ("AF_UNIX path too long")."""
    if len(os.fsencode(path)) < _SUN_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


async def _alive(path: Path) -> bool:
    try:
        with _short(path) as name:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(name), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ControlServer:
    """Serves registered ops on the control socket until cancelled."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler], *, group: int | None = None) -> None:
        self.path = path
        self._handlers = {"hello": self._hello, **handlers}
        self._group = group  # a gid whose members may use GROUP_OPS; None: owner-only

    async def start(self) -> asyncio.Server:
        """Bind the socket (owner-only, or open to the group); :class:`AlreadyRunning` if a daemon holds it."""
        if self.path.exists():
            if await _alive(self.path):
                raise AlreadyRunning(f"another edge-agent is running on {self.path.parent}")
            self.path.unlink()
        previous = os.umask(0o177)
        try:
            with _short(self.path) as name:
                server = await asyncio.start_unix_server(self._connection, name, limit=MAX_LINE)
        except OSError as exc:  # its directory missing or not ours (a unit without RuntimeDirectory=, say)
            raise ControlError("unavailable", f"cannot make the control socket {self.path}: {exc.strerror}") from exc
        finally:
            os.umask(previous)
        if self._group is not None:
            try:
                os.chown(self.path, -1, self._group)
            except OSError as exc:  # not a member, or chown filtered out (the unit's control-group.conf)
                server.close()
                self.path.unlink(missing_ok=True)
                raise ControlError(
                    "unavailable", f"cannot give the control socket to group {self._group}: {exc.strerror}"
                ) from exc
            os.chmod(self.path, 0o660)
            try:  # the group must be able to reach it; the directory is the socket's own (config checks it)
                os.chown(self.path.parent, -1, self._group)
                os.chmod(self.path.parent, 0o750)  # noqa: S103 -- the group must reach the socket (docs/control.md)
            except PermissionError as exc:
                log.warning("control_directory_not_opened", directory=str(self.path.parent), error=str(exc))
        return server

    async def _hello(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "ops": sorted(request["_allowed"])}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slots = asyncio.Semaphore(MAX_CONCURRENT)
        write_lock = asyncio.Lock()
        uid = _peer_uid(writer)
        trusted = uid is not None and uid in (0, os.getuid())
        allowed = frozenset(self._handlers) if trusted else GROUP_OPS & frozenset(self._handlers)

        async def serve(line: bytes) -> None:
            response = await self._respond(line, allowed)
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
        except asyncio.CancelledError:
            # The daemon stops with the connection open. Nothing awaits this task; ending it normally keeps
            # Python 3.11's stream callback from logging the cancellation as an error with a traceback.
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, line: bytes, allowed: frozenset[str]) -> dict[str, Any]:
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
            if request.get("v", PROTOCOL) != PROTOCOL:
                raise ControlError("unsupported_version", f"this daemon speaks version {PROTOCOL} of the protocol")
            handler = self._handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                known = ", ".join(sorted(self._handlers))
                raise ControlError("unknown_op", f"op {str(op)[:40]!r} is not one of {known}")
            if op not in allowed:
                raise ControlError("forbidden", f"op {op!r} is not open to this user: {', '.join(sorted(allowed))}")
            fault_point(f"control:{op}")
            answer = await handler({**request, "_allowed": allowed} if op == "hello" else request)
            return {"v": PROTOCOL, "id": request_id, "ok": True, **answer}
        except ControlError as exc:
            return {"v": PROTOCOL, "id": request_id, "ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # a defect: this request fails, the daemon and the connection go on
            op = request.get("op") if isinstance(request, dict) else None
            log.exception("control_request_failed", op=str(op)[:40])
            message = f"the daemon failed serving the request ({type(exc).__name__})"
            error = {"code": "internal_error", "message": message}
            return {"v": PROTOCOL, "id": request_id, "ok": False, "error": error}


async def request(where: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the daemon of ``where`` (its data_dir, or its socket) and return its response
    (bound it with ``asyncio.timeout``)."""
    path = socket_path(where)
    data_dir = where
    try:
        with _short(path) as name:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(name, limit=MAX_LINE), CONNECT_SECONDS)
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
