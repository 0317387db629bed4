"""What devices send, taken into the ledger (PROTOCOL.md "Events", "Replies", "State"): events deduplicated
by ``event_id`` with each firmware event moving its upgrade's status for that device, replies by command
id, the last state; and what the people of a site read back (alarms and call alerts)."""

from __future__ import annotations

import re
from typing import Any, Final

from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor

# A device's firmware events -> the status the upgrade page shows (seed 002 lines 445-448, 751).
FIRMWARE_STATUS: Final = {
    "pending": "Pending",
    "downloading": "Processing",
    "verifying": "Processing",
    "installing": "Processing",
    "rebooting": "Processing",
    "committing": "Processing",
    "deferred": "Processing",
    "executed": "Executed",
    "failed": "Failed",
    "rolled_back": "Failed",
    "rejected": "Failed",
    "cancelled": "Cancelled",
}


_DEVICE: Final = re.compile(r"[0-9a-f]{12}")
_TEXT: Final = re.compile(r"[\x20-\x7e]{1,128}")
MAX_SEQ: Final = 2**63 - 1


def _device(device: str) -> str:
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"{device[:64]!r} is not a device id (12 lower-case hex digits)")
    return device


def _text(body: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key, "" if not required else None)
    if not isinstance(value, str) or (value and not _TEXT.fullmatch(value)) or (required and not value):
        raise ValueError(f"{key}: printable ASCII text of 1 to 128 characters")
    return value


def take_event(uow: UnitOfWork, device: str, body: dict[str, Any]) -> bool:
    """Keep one event; False for a duplicate (same ``event_id``). Malformed: ValueError, KeyError, TypeError."""
    seq = body.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise ValueError("seq: a whole number from 0")
    for key in ("event_id", "type", "kind"):
        _text(body, key)
    _text(body, "occurred_at", required=False)
    known = uow.sites.device(_device(device))
    fresh = uow.reports.add_event(device, None if known is None else known.project, body, uow.now)
    if fresh and body["type"] == "firmware" and isinstance(body.get("data"), dict):
        job = body["data"].get("job_id")
        status = FIRMWARE_STATUS.get(str(body["kind"]))
        if isinstance(job, str) and job and status:
            uow.upgrades.report(device, job[:64], status, str(body["kind"]), uow.now)
    return fresh


def take_reply(uow: UnitOfWork, device: str, body: dict[str, Any]) -> None:
    _text(body, "id")
    uow.reports.add_reply(_device(device), body, uow.now)


def take_state(uow: UnitOfWork, device: str, body: dict[str, Any]) -> None:
    uow.reports.set_state(_device(device), body, uow.now)


def state(uow: UnitOfWork, device: str) -> dict[str, Any] | None:
    """A device's last state report."""
    return uow.reports.state(device)


def gaps(uow: UnitOfWork, device: str) -> list[tuple[int, int]]:
    """Ranges of ``seq`` never received from ``device`` (first, last), below the highest seen."""
    found, expected = [], 1
    for seq in uow.reports.seqs(device):
        if seq > expected:
            found.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return found


def alarms(uow: UnitOfWork, actor: Actor, project: str) -> list[dict[str, Any]]:
    """Alarms and call alerts the site's devices reported, newest first."""
    return uow.reports.alarms(authority.site(uow, actor, project, read=True).id)
