"""Reset After Upgrade (seed 002 "Upgrade": the device's data back to factory, its identity kept): the
agent's side of it, reached by the firmware engine through a port.

The engine commits a healthy slot and, if the job asked for it, calls :func:`reset_after_upgrade` in the
same transaction; it knows nothing of the agent's tables. Kept: the identity (configuration), the trust
roots and the signed documents in force (the cloud's entitlements hold for the new firmware too).
Wiped, each by the module that owns its table: credentials, site settings set by command, remote door
openings waiting, which command ids were answered, and the events already sent and kept for replay.
"""

from __future__ import annotations

from agent.intake import commands
from agent.local import credentials, door_actions
from agent.outbox import Outbox
from agent.store.database import Transaction


async def reset_after_upgrade(tx: Transaction, outbox: Outbox) -> dict[str, int]:
    """Wipe what a reset after upgrade wipes, in ``tx``; how many rows of each."""
    return {
        "credentials": await credentials.clear(tx),
        "settings": await commands.clear_settings(tx),
        "door_actions": await door_actions.clear(tx),
        "commands": await commands.forget_answered(tx),
        "outbox": await outbox.forget_sent_in(tx),
    }
