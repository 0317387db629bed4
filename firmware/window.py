"""When a job may install and reboot: its ``window`` in the project's local time (pure; PROTOCOL.md).

``start`` and ``end`` are ``HH:MM`` of the site's time zone (its ``timezone`` setting; UTC when none is
known, or when the name is not one this device knows); ``end`` before ``start`` spans midnight; ``start``
equal to ``end`` is the whole day. A job with no window may install at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from protocol.claims import Window


def _zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    # Imported with the first window read in a zone (0.35 MiB that an idle daemon does not hold).
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def inside(window: Window | None, now: float, zone: str | None) -> bool:
    """Whether trusted time ``now`` (epoch seconds) is inside ``window`` in ``zone``."""
    if window is None:
        return True
    local = datetime.fromtimestamp(now, _zone(zone))
    minute = local.hour * 60 + local.minute
    start, end = _minutes(window.start), _minutes(window.end)
    if start == end:
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # spans midnight


def opens_in(window: Window | None, now: float, zone: str | None) -> float:
    """Seconds until ``window`` next opens (0 when inside it)."""
    if inside(window, now, zone):
        return 0.0
    assert window is not None
    local = datetime.fromtimestamp(now, _zone(zone))
    start = _minutes(window.start)
    opening = local.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)
    if opening <= local:
        opening += timedelta(days=1)
    return max(1.0, opening.timestamp() - now)
