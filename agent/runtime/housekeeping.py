"""Following the entitlements through time, with nothing arriving: one of the daemon's tasks.

Theory of operation. As trusted time passes, a service lapses or an expiry notice falls due without
any message. Housekeeping wakes at the next expiry (at most a minute apart), or when poked (a document
was taken), and then: opens or closes the outbox's gates (alarms while doors are limited, call
alerts without their service); asks for the state report again when the mode, the document or the
gates changed; raises the expiry notices that fell due, each once (remembered in ``notices``, whose
only SQL is here); puts back the data directory's reserve if a full disk spent it; and persists the
trusted clock every minute. A full or failing disk is logged and tried again: enforcement needs no
writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

import structlog

from agent.entitlements import policy
from agent.entitlements.notices import expiry_notices
from agent.errors import OutboxFull, StoreError
from agent.outbox import Outbox
from agent.outbox.events import GATED_ACTIONS, NewEvent
from agent.ports import Held, Now
from agent.store.database import Store
from protocol.timefmt import to_rfc3339

log = structlog.get_logger("agent.housekeeping")

CLOCK_EVERY: Final = 60.0  # seconds between persisting the trusted clock (and the longest sleep)
RESERVE_EVERY: Final = 2.0  # how often a spent reserve is tried again


async def notices_raised(store: Store) -> set[str]:
    """The keys of the expiry notices raised before (each is raised once)."""
    async with store.transaction("DEFERRED") as tx:
        return {row[0] for row in await tx.fetchall("SELECT key FROM notices")}


class Housekeeping:
    """The daemon's housekeeping task; :meth:`poke` makes it look at once.

    ``held`` is the device's holdings (the entitlements and documents in force, the clock's floor).
    """

    def __init__(
        self,
        held: Held,
        store: Store,
        now: Now,
        outbox: Outbox,
        raised: set[str],
        *,
        state_changed: Callable[[], None],
    ) -> None:
        self._held, self._store, self._now, self._outbox, self._raised = held, store, now, outbox, raised
        self._state_changed = state_changed
        self._poke = asyncio.Event()
        self._watched: tuple[Any, ...] | None = None

    def poke(self) -> None:
        """Something changed (a document, a setting): look now rather than at the next expiry."""
        self._poke.set()

    async def run(self) -> None:
        """Follow the entitlements until cancelled."""
        since_clock = 0.0
        reserve = self._store.reserve
        while True:
            await self.refresh_when_possible()
            now = self._now()
            upcoming = policy.next_expiry(self._held.entitlements, now)
            wait = CLOCK_EVERY if upcoming is None else min(CLOCK_EVERY, max(0.01, upcoming - now))
            if reserve is not None and reserve.size and not await asyncio.to_thread(reserve.restore):
                wait = min(wait, RESERVE_EVERY)  # spent on a full disk: put back as soon as there is room
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for, which can swallow a stop (protocol/cancelling.py)
                    await self._poke.wait()
            self._poke.clear()
            since_clock += wait
            if since_clock >= CLOCK_EVERY:
                since_clock = 0.0
                try:
                    await self._held.save_clock()
                except StoreError as exc:
                    log.error("clock_not_saved", error=str(exc))  # the sidecar keeps a floor too

    async def refresh_when_possible(self) -> None:
        """:meth:`refresh`, carrying on through a full, locked or failing disk (enforcement needs no writes)."""
        try:
            await self.refresh()
        except (StoreError, OutboxFull) as exc:
            log.error("refresh_incomplete", error=str(exc))

    async def refresh(self) -> None:
        """Open or close the outbox's gates, ask for the state again if it changed, raise due notices."""
        ents, now = self._held.entitlements, self._now()
        denied = frozenset(g for g in GATED_ACTIONS if not policy.decide(ents, now, g).allowed)
        await self._outbox.set_denied(denied)
        watched = (policy.mode(ents, now), ents.seq if ents else None, denied, self._held.documents.get("trust"))
        if watched != self._watched:
            self._watched = watched
            self._state_changed()
        await self._raise_notices(now)

    async def _raise_notices(self, now: float) -> None:
        due = [n for n in expiry_notices(self._held.entitlements, now) if n.key not in self._raised]
        if not due:
            return
        events = [
            NewEvent(
                "entitlement",
                n.kind,
                "entitlements",
                {"service": n.service, "subject": n.subject, "expires": to_rfc3339(n.expires)},
                now,
            )
            for n in due
        ]
        async with self._store.transaction() as tx:
            await tx.executemany(
                "INSERT OR IGNORE INTO notices (key, raised_at) VALUES (?, ?)", [(n.key, now) for n in due]
            )
            await self._outbox.add_in(tx, events)
        self._raised.update(n.key for n in due)
        log.info("expiry_notices", kinds=sorted({n.kind for n in due}), count=len(due))
