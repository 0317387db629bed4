"""Retry delays: capped exponential backoff with full jitter (pure; the random source is injected).

One rule for everything that retries across a fleet: the MQTT session's reconnects and the retry of a
message it could not take yet (``agent/sync/session.py``), the firmware download's retries
(``firmware/engine.py``) and the fleet simulator's devices (``cloud_stub/fleet.py``). Full jitter (a
uniform draw between ``low`` and the capped exponential) spreads a fleet that failed at the same
instant over the whole window, so the broker or the image server is not hit by every device at once
when it comes back.
"""

from __future__ import annotations

import random
from typing import NamedTuple


class Backoff(NamedTuple):
    """Delays between ``low`` and ``high`` seconds, doubling per failed attempt."""

    low: float
    high: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before attempt ``attempt`` (0 is the first retry)."""
        ceiling = min(self.high, self.low * (2 ** min(attempt, 32)))
        return self.low + rng.uniform(0, max(0.0, ceiling - self.low))
