"""The pump's publishes awaiting their PUBACK, and the one deadline that bounds them all.

aiomqtt bounds each publish's wait for its PUBACK on its own: ``asyncio.wait_for`` with a timeout makes a
task and a timer for every publish, which was 15 % of a backlog's drain (``bench backlog``: 0.82x of raw
aiomqtt with it, 0.98x without, same runs). The pump's workers wait without one (``timeout=math.inf``)
and note here when each publish began; :meth:`InFlight.watch`, one task per connection, ends the
connection when any of them has waited longer than ``mqtt.timeout``, as aiomqtt's own timeout would
have (the session reconnects; whatever was not acknowledged goes again). A broker that is up but has
stopped answering is left after between ``limit`` and 1.25 x ``limit`` seconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import aiomqtt

_IDLE = math.inf  # a worker with no publish awaiting its PUBACK


class PubackOverdue(aiomqtt.MqttError):
    """A publish waited longer than ``mqtt.timeout`` for its PUBACK: the connection is given up (an
    ``MqttError``, as aiomqtt's own timeout was, so the session reconnects)."""


class InFlight:
    """When each worker's publish began (one slot per worker; idle slots hold infinity)."""

    def __init__(self, workers: int, limit: float, now: Callable[[], float]) -> None:
        self.began = [_IDLE] * workers
        self.limit = limit
        self._now = now

    def overdue(self) -> float:
        """How long the oldest publish has waited beyond ``limit`` (0 when none has)."""
        return max(0.0, self._now() - min(self.began) - self.limit)

    async def watch(self) -> None:
        """Raise :class:`PubackOverdue` once a publish has waited longer than ``limit``; checks four
        times per ``limit`` (one timer per connection instead of one per publish)."""
        while True:
            await asyncio.sleep(self.limit / 4)
            if self.overdue() > 0:
                raise PubackOverdue(f"no PUBACK within {self.limit:g} s")
