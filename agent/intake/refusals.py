"""Refusals coalesced: a flood of hostile documents costs one event per reason and topic per window.

Every refused document is reported to the cloud (PROTOCOL.md: "the device reports the refusal as
an event ... with a reason code"). A flood of thousands of them must not fill the outbox, evict the
events that matter or flood the log (issue 12). So, per ``(typ, reason)``: the first refusal is
reported at once, as before; those that follow within :data:`WINDOW` seconds are only counted; when
the window ends, one more event carries the count (``data.count``, ``data.coalesced``), and a new
window opens if any came. A flood of 5,000 refusals of one kind over a minute is about seven events.

Pure: :class:`Coalescer` is fed refusals and times and says what to report; ``agent/intake/dispatch.py``
raises the events. The keys are bounded (types times reason codes), so memory is too. Counts not yet
reported live in memory: a crash loses at most one window's count, never the first report of a kind.
"""

from __future__ import annotations

from typing import Final, NamedTuple

WINDOW: Final = 10.0


class Summary(NamedTuple):
    """Refusals of one kind that were counted, not reported one by one."""

    typ: str
    reason: str
    refused: int  # how many
    detail: str  # the last one's
    token_sha256: str  # the last one's
    first_at: float
    last_at: float


class _Window(NamedTuple):
    until: float  # on the monotonic clock: a corrected trusted clock must not stretch a window
    refused: int
    detail: str
    token_sha256: str
    first_at: float
    last_at: float


class Coalescer:
    """Which refusals to report now, and which counts are due."""

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._open: dict[tuple[str, str], _Window] = {}

    def offer(self, typ: str, reason: str, detail: str, token_sha256: str, *, mono: float, at: float) -> bool:
        """A refusal happened (``mono`` on the monotonic clock, ``at`` in trusted time): whether to report it
        now (``False``: it is counted for a :class:`Summary`)."""
        key = (typ, reason)
        window = self._open.get(key)
        if window is None:
            self._open[key] = _Window(mono + self._window, 0, detail, token_sha256, at, at)
            return True
        first = window.first_at if window.refused else at
        self._open[key] = _Window(window.until, window.refused + 1, detail, token_sha256, first, at)
        return False

    def next_due(self) -> float | None:
        """When (monotonic) the earliest window ends, if any is open."""
        return min((w.until for w in self._open.values()), default=None)

    def due(self, mono: float) -> list[Summary]:
        """Counts of the windows that have ended; a window that counted something opens again."""
        summaries = []
        for key, window in list(self._open.items()):
            if window.until > mono:
                continue
            if window.refused:
                summaries.append(_summary(key, window))
                self._open[key] = window._replace(until=mono + self._window, refused=0)
            else:
                del self._open[key]
        return summaries

    def drain(self) -> list[Summary]:
        """Every count not yet reported (at a clean stop)."""
        summaries = [_summary(key, w) for key, w in self._open.items() if w.refused]
        self._open.clear()
        return summaries


def _summary(key: tuple[str, str], window: _Window) -> Summary:
    return Summary(key[0], key[1], window.refused, window.detail, window.token_sha256, window.first_at, window.last_at)
