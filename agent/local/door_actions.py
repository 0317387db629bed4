"""Remote door operations waiting for the drivers: the only SQL of ``door_actions``.

An ``open_door`` command queues one in its own transaction (``agent/intake/commands.py``); the local side
carries it out and deletes it in the transaction that queues its door log (``agent/local/side.py``), so a
daemon that dies in between opens the door again after its restart: at least once.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from agent.store.database import Transaction


class DoorAction(NamedTuple):
    """An opening to carry out."""

    id: int
    command_id: str
    door: str
    seconds: int | None  # None: the configured relay time


async def queue_open(tx: Transaction, command_id: str, door: str, body: str, now: float) -> None:
    """Queue the opening a command asked for (``body``: its arguments as JSON)."""
    await tx.execute(
        "INSERT INTO door_actions (command_id, door, action, body, created) VALUES (?, ?, 'open', ?, ?)",
        (command_id, door, body, now),
    )


async def pending(tx: Transaction) -> list[DoorAction]:
    """The openings waiting, oldest first."""
    rows = await tx.fetchall("SELECT id, command_id, door, body FROM door_actions ORDER BY id")
    found = []
    for row_id, command_id, door, body in rows:
        seconds = json.loads(body).get("seconds")
        found.append(DoorAction(row_id, command_id, door, None if seconds is None else int(seconds)))
    return found


async def done(tx: Transaction, action: DoorAction) -> None:
    """The opening was carried out."""
    await tx.execute("DELETE FROM door_actions WHERE id = ?", (action.id,))


async def clear(tx: Transaction) -> int:
    """Drop every opening waiting (a reset after upgrade); how many there were."""
    return await tx.execute("DELETE FROM door_actions")
