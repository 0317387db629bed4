"""RFC 3339 on the wire, float epoch seconds inside (PROTOCOL.md "Identifiers")."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def to_rfc3339(epoch: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with a ``Z``; whole seconds unless there is a fraction."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_rfc3339_or_none(epoch: float | None) -> str | None:
    """Like :func:`to_rfc3339`, passing ``None`` and infinity through as ``None``."""
    if epoch is None or math.isinf(epoch):
        return None
    return to_rfc3339(epoch)


def epoch_of(moment: datetime) -> float:
    """Epoch seconds of an aware datetime."""
    return moment.timestamp()
