"""One connection's walk over the queue: which rows to publish next, each handed out once.

A reader lives as long as one MQTT connection. It goes through the sendable rows in queue order,
starts again from the top when the outbox says so (a gate opened, rows were replayed), and never
hands out a row it handed out before on this connection unless that row's publish failed with the
connection (a new connection starts a new reader: everything not acknowledged goes again).
"""

from __future__ import annotations

from typing import NamedTuple

from agent.outbox.box import FETCH, Outbox
from agent.outbox.events import wire_payload
from agent.outbox.rows import OutRow


class Outgoing(NamedTuple):
    """A row as it goes on the wire: its id (to acknowledge), its leaf topic, its payload."""

    id: int
    leaf: str  # "events" or "replies"
    payload: bytes


class Pump:
    """The session's source of what to publish (agent/sync/pump.py's protocol): a :class:`Reader` per
    connection."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def cursor(self) -> Reader:
        return Reader(self._outbox)


class Reader:
    """Call :meth:`next` for what to publish; :meth:`published` once the broker acknowledged one."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._cursor = 0
        self._given: set[int] = set()  # handed out, not acknowledged yet: not to be handed again
        self._caught_up = False  # the last read came back short: wait for more before reading again

    async def next_rows(self) -> list[OutRow]:
        """The next rows to publish, in queue order; waits until there are some."""
        outbox = self._outbox
        while True:
            if self._caught_up:
                await outbox.more.wait()
            if outbox.rescan:
                outbox.rescan, self._cursor = False, 0
            outbox.more.clear()
            found = await outbox.sendable(self._cursor)
            self._caught_up = len(found) < FETCH
            fresh = []
            for row in found:
                self._cursor = row.id
                if row.id not in self._given:
                    self._given.add(row.id)
                    fresh.append(row)
            if fresh:
                return fresh

    async def next(self) -> list[Outgoing]:
        """The next rows to publish as they go on the wire, in queue order; waits until there are some."""
        return [Outgoing(r.id, r.topic, wire_payload(r.body, r.seq, r.held_since)) for r in await self.next_rows()]

    def published(self, row_id: int) -> None:
        """The broker acknowledged the row."""
        self._outbox.acknowledge(row_id)
        self._given.discard(row_id)
