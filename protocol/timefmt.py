"""RFC 3339 on the wire, float epoch seconds inside (PROTOCOL.md "Identifiers")."""

from __future__ import annotations

import math
import time
from datetime import datetime

# The last whole second formatted: events of a burst share it, and strftime is the expensive part.
_last_second: int | None = None
_last_prefix = ""


def _text(second: int, fraction: str) -> str:
    """``second`` as RFC 3339 UTC, then ``fraction`` and ``Z`` (the last second formatted is kept)."""
    global _last_second, _last_prefix
    if second != _last_second:
        _last_second, _last_prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_last_prefix}{fraction}Z"


def to_rfc3339(epoch: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with a ``Z``; milliseconds when there is a fraction."""
    second, micro = divmod(round(epoch * 1_000_000), 1_000_000)
    return _text(second, f".{micro // 1000:03d}" if micro else "")


def to_rfc3339_ms(epoch: float) -> str:
    """:func:`to_rfc3339` of ``epoch`` rounded to the millisecond, as events carry their times.

    ``round(epoch * 1000)`` (an integer at once) rather than ``round(epoch, 3)`` (a correctly rounded
    decimal, several times slower; this runs for every event raised): the two differ only where the
    product's own rounding crosses half a millisecond.
    """
    second, milli = divmod(round(epoch * 1000), 1000)
    return _text(second, f".{milli:03d}" if milli else "")


def to_rfc3339_or_none(epoch: float | None) -> str | None:
    """Like :func:`to_rfc3339`, passing ``None`` and infinity through as ``None``."""
    if epoch is None or math.isinf(epoch):
        return None
    return to_rfc3339(epoch)


def epoch_of(moment: datetime) -> float:
    """Epoch seconds of an aware datetime."""
    return moment.timestamp()
