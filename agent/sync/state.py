"""The retained state report (PROTOCOL.md "State")."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from protocol.timefmt import to_rfc3339_ms


class StateReport(NamedTuple):
    """What the state report says; equal reports need not be published again."""

    device_id: str
    model: str
    firmware_version: str
    slot: str
    seq: int | None
    exp: str | None  # RFC 3339
    mode: str
    depth: int
    held: int
    evicted: int
    inventory: dict[str, Any] | None = None  # agent/runtime/inventory.py (a field added to PROTOCOL.md's)

    def payload(self, at: float) -> bytes:
        """The JSON payload, stamped with trusted time ``at``."""
        body: dict[str, Any] = {
            "device_id": self.device_id,
            "online": True,
            "model": self.model,
            "firmware": {"version": self.firmware_version, "slot": self.slot},
            "entitlements": {
                "seq": self.seq,
                "exp": self.exp,
                "mode": self.mode,
            },
            "outbox": {"depth": self.depth, "held": self.held, "evicted": self.evicted},
            "at": to_rfc3339_ms(at),
        }
        if self.inventory is not None:
            body["inventory"] = self.inventory
        return json.dumps(body, separators=(",", ":")).encode()


def offline_payload(device_id: str) -> bytes:
    """The last will, and what a clean stop publishes: ``{"device_id": D, "online": false}``."""
    return json.dumps({"device_id": device_id, "online": False}, separators=(",", ":")).encode()
