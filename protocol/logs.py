"""Structured logging: stable event names with key-value fields (structlog).

JSON lines when stderr is not a terminal (journald, files, tests); readable columns on one. Under
systemd, when stderr is the journal's stream (``JOURNAL_STREAM`` names it, as sd_journal_stream_fd's
callers are told), each line starts with its syslog priority (``<3>`` for errors...), which journald
strips and records, so ``journalctl -p err`` selects them.
Secrets never reach a log: the config keeps passwords as ``SecretStr`` and the agent logs key ids,
never keys, and document digests, never tokens; as a last guard, a field whose name says it holds a
secret (``password``, ``token``, ``private_key``...) is replaced by ``[redacted]`` whatever its value.

The last :data:`RECENT` lines are also kept in memory (:func:`recent`), as written: what a support
engineer gets with ``collect_diagnostics`` (agent/runtime/diagnostics.py) without a site visit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


# syslog priorities (sd-daemon.h SD_ERR...) by structlog level
PRIORITIES: Final[Mapping[str, int]] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}


def under_journald(environ: Mapping[str, str] = os.environ, stream: Any = None) -> bool:
    """Whether ``stream`` (stderr) is the journal's stream: ``JOURNAL_STREAM`` is its ``device:inode``."""
    stream = sys.stderr if stream is None else stream
    try:
        device, inode = (int(part) for part in environ.get("JOURNAL_STREAM", "").split(":"))
        found = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (found.st_dev, found.st_ino) == (device, inode)


RECENT: Final = 500  # lines kept in memory for collect_diagnostics
_recent: collections.deque[str] = collections.deque(maxlen=RECENT)
# A field named for a secret (``password``, ``api_token``, ``private_key``...), not one named for what
# describes it (``token_sha256``, ``key_id``): the name must end with the secret's word.
_SECRET: Final = re.compile(r"(?i)(?:^|_)(password|passphrase|secret|token|private_key|pin)$")


def recent(count: int) -> list[str]:
    """The last ``count`` lines logged by this process (at most :data:`RECENT`), oldest first."""
    lines = list(_recent)
    return lines[-count:] if count > 0 else []


def _redact(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in [n for n in event_dict if _SECRET.search(n)]:
        event_dict[name] = "[redacted]"
    return event_dict


class _Written:
    """The renderer, its line kept in :func:`recent`, led by its syslog priority (``<3>{...}``) for
    journald."""

    def __init__(self, renderer: Any, journald: bool) -> None:
        self._renderer, self._journald = renderer, journald

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        line = str(self._renderer(logger, method, event_dict))
        _recent.append(line)
        if not self._journald:
            return line
        return f"<{PRIORITIES.get(str(event_dict.get('level', method)), 6)}>{line}"


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Route structlog events to stderr at ``level``, as JSON unless stderr is a terminal (each line led
    by its syslog priority when stderr is the journal)."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            _Written(renderer, under_journald()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def quiet_library_defects(loop: asyncio.AbstractEventLoop) -> None:
    """Let ``loop`` log, at debug and without a traceback, the one callback error a library defect raises
    at every unlucky stop (docs/sync.md "Library defects met"): aiomqtt's ``_on_disconnect`` asks
    ``exception()`` of a connect future that was cancelled, raising ``CancelledError`` in paho's callback.
    Anything else goes to the loop's default handler as before."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError) and _raised_in(exc, "aiomqtt"):
            structlog.get_logger("protocol.logs").debug("aiomqtt_cancelled_connect_callback")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether a frame of ``exc``'s traceback is in ``package``."""
    marker = f"{os.sep}{package}{os.sep}"
    return any(marker in frame.f_code.co_filename for frame, _ in traceback.walk_tb(exc.__traceback__))
