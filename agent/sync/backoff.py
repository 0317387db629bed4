"""Reconnect delays: capped exponential backoff with full jitter (pure; the random source is injected).

Full jitter (a uniform draw between zero and the capped exponential) spreads a fleet that lost its
broker at the same instant over the whole window, so the broker is not hit by every device at once
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
