"""The agent's side of the firmware engine's ports (firmware/ports.py): its ``firmware`` events go into the
outbox, and Reset After Upgrade wipes the agent's tables. The engine's transactions are the agent's own
store's (the daemon hands the engine that store), so each is passed back as the agent's type."""

from __future__ import annotations

from typing import Any, cast

from agent.outbox import Outbox
from agent.outbox.events import NewEvent
from agent.store.database import Transaction
from agent.store.reset import reset_after_upgrade
from firmware import ports


class FirmwareEvents:
    """:class:`firmware.ports.Events` on the outbox: each event typed ``firmware``, from the ``firmware`` source."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def add_in(self, tx: ports.Transaction, kind: str, data: dict[str, Any], at: float) -> None:
        await self._outbox.add_in(cast(Transaction, tx), [NewEvent("firmware", kind, "firmware", data, at)])

    async def add(self, kind: str, data: dict[str, Any], at: float) -> None:
        await self._outbox.add(NewEvent("firmware", kind, "firmware", data, at))


class ResetAfterUpgrade:
    """The engine's ``reset`` port: the agent's wipe (agent/store/reset.py), in the commit's transaction."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def __call__(self, tx: ports.Transaction) -> dict[str, int]:
        return await reset_after_upgrade(cast(Transaction, tx), self._outbox)
