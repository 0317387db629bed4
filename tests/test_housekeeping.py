"""Housekeeping works from what it is handed (agent/ports.py): the holdings' view, the store, ``now``.

Handed a small holder of its own rather than a device, over a real store and outbox: expiry notices are
raised once each, at the time it is handed, and the state report is asked for again only when what it
watches changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.clock import ClockSource, TrustedClock
from agent.entitlements import policy
from agent.entitlements.index import Entitlements
from agent.entitlements.policy import Decision
from agent.outbox import Outbox
from agent.runtime.housekeeping import Housekeeping, notices_raised
from agent.store.database import Store, StoredDocument
from tests.support.documents import DAY, T0, commercial_project, holdings, svc


@dataclass
class Holder:
    """What housekeeping reads of the device: entitlements, documents in force, the clock's floor."""

    entitlements: Entitlements | None
    now: float = T0
    documents: dict[str, StoredDocument] = field(default_factory=dict)
    clock_saves: int = 0

    def decide(self, action: str, subject: str | int | None = None) -> Decision:
        return policy.decide(self.entitlements, self.now, action, subject)

    async def save_clock(self) -> None:
        self.clock_saves += 1


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Store, Outbox]]:
    store = await Store.open(tmp_path)
    clock = TrustedClock(ClockSource(wall=lambda: T0, monotonic=lambda: 1_000.0, boot_id="boot-1"))
    outbox = await Outbox.open(store, "0c110512ab34", clock, data_dir=tmp_path, max_events=100)
    writer = asyncio.create_task(outbox.run())
    yield store, outbox
    await outbox.close()
    await writer
    await store.close()


async def test_notices_once_at_the_time_handed(parts: tuple[Store, Outbox]) -> None:
    store, outbox = parts
    holder = Holder(holdings(commercial_project(), [svc("door", "door:door-1"), svc("app", "account:a", days=2)]))
    changes: list[int] = []
    keeper = Housekeeping(holder, store, lambda: holder.now, outbox, set(), state_changed=lambda: changes.append(1))

    await keeper.refresh()
    await keeper.refresh()  # nothing new: no second notice, no second state report

    queued = await outbox.listing(held_only=False)
    assert [(e["type"], e["kind"], e["source"]) for e in queued] == [("entitlement", "expiring_3d", "entitlements")]
    assert len(await notices_raised(store)) == 1
    assert changes == [1]
    assert outbox.denied == {"report_alarm"}  # door-2 has no service: doors limited, alarms held

    holder.now = T0 + 1.5 * DAY  # the time it is handed moves on: the app service is at its last day
    await keeper.refresh()
    kinds = [e["kind"] for e in await outbox.listing(held_only=False)]
    assert kinds == ["expiring_3d", "expiring_1d"]
    assert len(await notices_raised(store)) == 2


async def test_state_asked_again_when_the_documents_change(parts: tuple[Store, Outbox]) -> None:
    store, outbox = parts
    holder = Holder(holdings(commercial_project(), [svc("door", "door:door-1")]))
    changes: list[int] = []
    keeper = Housekeeping(holder, store, lambda: holder.now, outbox, set(), state_changed=lambda: changes.append(1))
    await keeper.refresh()
    holder.documents = {"trust": StoredDocument("trust", 2, b"d" * 32, int(T0), int(T0 + DAY), "k1", "t", T0)}
    await keeper.refresh()
    await keeper.refresh()
    assert changes == [1, 1]
