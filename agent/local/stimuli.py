"""Stimuli: what the hardware reports, as data (docs/drivers.md has the table).

A :class:`Stimulus` is what an input driver (or ``edge-agent simulate``) hands the daemon: a kind,
the source that reported it, a small JSON object of data and the trusted time it happened.
:func:`parse` checks one against :data:`KINDS` and names the field that is wrong; it is the only
gate between a driver (or a local user with the control socket) and the local logic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from agent.errors import BadRequest

_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_LIST: Final = 64


class Stimulus(NamedTuple):
    """One thing that happened at the hardware."""

    kind: str
    source: str | None
    data: Mapping[str, Any]
    at: float  # trusted time, epoch seconds


# field -> (type, required); "id" is a short identifier, "ids" a list of them, "text" free text.
_Fields = Mapping[str, tuple[str, bool]]
_ACCESS: Final[_Fields] = {"door": ("id", True), "value": ("text", True)}
_DOOR: Final[_Fields] = {"door": ("id", True)}
_SENSOR: Final[_Fields] = {"monitor": ("id", False)}

KINDS: Final[Mapping[str, _Fields]] = {
    # access reader: a credential presented at a door ("value" is what the reader read)
    "card": _ACCESS,
    "pin": _ACCESS,
    "face": _ACCESS,
    "qr": _ACCESS,
    "ble": _ACCESS,
    # egress: always opens
    "exit_button": _DOOR,
    "fire_release": {"door": ("id", False)},  # no door: every door
    # door contact
    "door_open": _DOOR,
    "door_closed": _DOOR,
    # alarm inputs
    "tamper": {"door": ("id", False), "device": ("id", False)},
    "emergency": {"door": ("id", False)},
    "power_loss": {"door": ("id", False), "device": ("id", False)},  # a reader or module reports its power failing
    # real hardware (agent/drivers/osdp.py, modbus.py; source: the reader or module)
    "reader_refused": {"door": ("id", True), "device": ("id", True), "reason": ("text", True)},
    "hardware_offline": {"device": ("id", True), "doors": ("ids", False), "reason": ("text", False)},
    "hardware_online": {"device": ("id", True), "doors": ("ids", False)},
    # call panel: a visitor calls an apartment, accounts or the front desk
    "call": {
        "door": ("id", True),
        "apartment": ("id", False),
        "accounts": ("ids", False),
        "monitors": ("ids", False),
        "landline": ("bool", False),
        "opened": ("bool", False),
    },
    "call_ended": {"door": ("id", True)},  # the call at that door was hung up
    # MR01 sensor (source: the sensor)
    "fall": _SENSOR,
    "bed_exit": _SENSOR,
    "presence": {"present": ("bool", True)},
    "battery": {"percent": ("int", True)},
    "sensor_offline": {},
    "heartbeat": {},
    # premium features, each gated by its service
    "elevator": {"door": ("id", True), "floors": ("ids", True)},
    "package": {"monitor": ("id", True), "apartment": ("id", False)},
    "camera": {"camera": ("id", True), "to": ("id", True)},
    "recording": {"clip": ("id", True), "apartment": ("id", False)},
    "booking": {"booking": ("id", True), "door": ("id", True)},
    "lock": {"lock": ("id", True)},
    "attendance": {"count": ("int", True)},
}
# Raised by the daemon's own timers, never by a driver or simulate.
INTERNAL: Final[Mapping[str, _Fields]] = {
    "held_open_check": {"door": ("id", True), "opened_at": ("float", True)},
    "silence_check": {},
}
SENSOR_KINDS: Final = frozenset({"fall", "bed_exit", "presence", "battery", "sensor_offline", "heartbeat"})


def _check(kind: str, name: str, typ: str, value: object) -> None:
    where = f"{kind}: data.{name}"
    if typ == "id":
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise BadRequest(f"{where} must be 1-64 of [A-Za-z0-9_.:-]")
    elif typ == "text":
        if not isinstance(value, str) or not 1 <= len(value) <= 256:
            raise BadRequest(f"{where} must be a string of 1-256 characters")
    elif typ == "ids":
        if not isinstance(value, list) or len(value) > _MAX_LIST:
            raise BadRequest(f"{where} must be a list of at most {_MAX_LIST} ids")
        for item in value:
            _check(kind, name + "[]", "id", item)
    elif typ == "bool":
        if not isinstance(value, bool):
            raise BadRequest(f"{where} must be true or false")
    elif typ == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
            raise BadRequest(f"{where} must be a whole number from 0 to 1000000")
    elif typ == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise BadRequest(f"{where} must be a number")


def parse(kind: object, source: object, data: object, at: float, *, internal: bool = False) -> Stimulus:
    """A checked :class:`Stimulus`; :class:`BadRequest` names what is wrong."""
    table = {**KINDS, **INTERNAL} if internal else KINDS
    if not isinstance(kind, str) or kind not in table:
        raise BadRequest(f"unknown stimulus kind {str(kind)[:40]!r}; known: {', '.join(sorted(KINDS))}")
    if source is not None and (not isinstance(source, str) or not _ID.fullmatch(source)):
        raise BadRequest("source must be 1-64 of [A-Za-z0-9_.:-]")
    if kind in SENSOR_KINDS and source is None:
        raise BadRequest(f"{kind} needs --source: the sensor that reported it")
    if not isinstance(data, Mapping):
        raise BadRequest("data must be a JSON object")
    fields = table[kind]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(f"{kind}: unknown field {unknown[0]!r}; known: {', '.join(fields) or 'none'}")
    for name, (typ, required) in fields.items():
        if name in data:
            _check(kind, name, typ, data[name])
        elif required:
            raise BadRequest(f"{kind} needs data.{name}")
    return Stimulus(kind, source, dict(data), at)
