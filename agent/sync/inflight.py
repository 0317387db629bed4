"""The pump's publishes awaiting their PUBACK, and the one deadline that bounds them all.

aiomqtt bounds each publish's wait for its PUBACK on its own: ``asyncio.wait_for`` with a timeout makes a
task and a timer for every publish, which was 15 % of a backlog's drain (``bench backlog``: 0.82x of raw
aiomqtt with it, 0.98x without, same runs). The pump's workers wait without one (``timeout=math.inf``)
and note here when each publish began; :meth:`InFlight.watch`, one task per connection, ends the
connection when any of them has waited longer than ``mqtt.timeout``, as aiomqtt's own timeout would
have (the session reconnects; whatever was not acknowledged goes again). It sleeps until the oldest
publish's deadline (``limit`` seconds when none is in flight), so a broker that is up but has stopped
answering is left ``limit`` seconds after the publish it did not acknowledge, and an idle connection
wakes it once per ``limit``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import aiomqtt

IDLE = math.inf  # a worker with no publish awaiting its PUBACK


class PubackOverdue(aiomqtt.MqttError):
    """A publish waited longer than ``mqtt.timeout`` for its PUBACK: the connection is given up (an
    ``MqttError``, as aiomqtt's own timeout was, so the session reconnects)."""


class InFlight:
    """When each worker's publish began (one slot per worker; idle slots hold infinity)."""

    def __init__(self, workers: int, limit: float, now: Callable[[], float]) -> None:
        self.began = [IDLE] * workers
        self.limit = limit
        self._now = now

    def left(self) -> float:
        """Seconds until the oldest publish in flight is overdue (``limit`` when none is); <= 0: it is."""
        oldest = min(self.began)
        return self.limit if oldest == IDLE else oldest + self.limit - self._now()

    async def watch(self) -> None:
        """Raise :class:`PubackOverdue` once a publish has waited ``limit`` seconds for its PUBACK (one
        timer per connection, at the oldest publish's deadline, instead of one per publish)."""
        while True:
            left = self.left()
            if left <= 0:
                raise PubackOverdue(f"no PUBACK within {self.limit:g} s")
            await asyncio.sleep(left)  # a deadline, not a condition to poll: nothing signals "overdue"
