"""Events the device sends (PROTOCOL.md "Events"): types, what holds each back, what goes first.

Pure data and rules; the outbox (``agent/outbox.py``) stores and sends them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any, Final, NamedTuple

import msgspec

from protocol.timefmt import to_rfc3339_ms

# PROTOCOL.md types, plus ``command`` for a refused command document ("or command likewise").
EVENT_TYPES: Final = frozenset(
    {"alarm", "sensor", "call_alert", "door_log", "firmware", "entitlement", "health", "command"}
)

# What the outbox evicts first when it is full: health and telemetry, then door logs, then the
# device's own reports; alarms, call alerts, sensor events and command replies go last.
PRIORITY: Final[Mapping[str, int]] = {
    "health": 0,
    "door_log": 1,
    "entitlement": 2,
    "firmware": 2,
    "command": 2,
    "sensor": 3,
    "call_alert": 3,
    "alarm": 3,
}
REPLY_PRIORITY: Final = 3
HIGHEST_PRIORITY: Final = 3
# What may spend the data directory's reserve on a full disk (agent/store/reserve.py): what the hardware
# reported, which nothing else records.
RESERVED_TYPES: Final = frozenset({"alarm", "sensor", "call_alert", "door_log"})

# The decision that must allow an event out; while it is denied the event is held, never dropped
# (DOMAIN.md: a device with limited doors cannot report alarms).
# An alarm raised while report_alarm is denied is held and sent, marked held_since, once it is allowed. A call
# alert is different: it is raised only while sensor_call_alert is active at the fall (agent/local/reactions.py),
# and one raised then goes out as soon as it can, even if the service lapsed meanwhile; a fall while it is not
# active raises none, and a renewal brings none afterwards (a carer told hours late of a fall is misled).
GATES: Final[Mapping[str, str]] = {"alarm": "report_alarm"}
GATED_ACTIONS: Final = frozenset(GATES.values())

_KIND = re.compile(r"[a-z0-9_]{1,64}")
_SOURCE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_DATA_BYTES: Final = 16 * 1024


class NewEvent(NamedTuple):
    """An event raised on the device, before the outbox gives it a seq."""

    type: str
    kind: str
    source: str | None
    data: Mapping[str, Any]
    occurred_at: float  # trusted time, epoch seconds


def validate(event: NewEvent) -> NewEvent:
    """Check an event raised locally; ``ValueError`` names the field that is wrong."""
    if event.type not in EVENT_TYPES:
        raise ValueError(f"type {event.type!r} is not one of {', '.join(sorted(EVENT_TYPES))}")
    if not isinstance(event.kind, str) or not _KIND.fullmatch(event.kind):
        raise ValueError("kind must be 1-64 of [a-z0-9_]")
    if event.source is not None and (not isinstance(event.source, str) or not _SOURCE.fullmatch(event.source)):
        raise ValueError("source must be 1-64 of [A-Za-z0-9_.:-]")
    if not isinstance(event.data, Mapping):
        raise ValueError("data must be a JSON object")
    if len(json.dumps(event.data, separators=(",", ":"))) > MAX_DATA_BYTES:
        raise ValueError(f"data is larger than {MAX_DATA_BYTES} bytes")
    return event


# The free-form ``data`` as compact JSON, by msgspec's encoder (0.1 µs for a small object against json's
# 0.7 with its C encoder kept: this runs for every event raised). A NaN or infinity becomes ``null``, as
# JSON has no word for them (json.dumps would write ``NaN``, which a strict reader refuses).
_encode: Final = msgspec.json.Encoder().encode


def _compact(value: Any) -> str:
    return _encode(value).decode()


def event_body(event: NewEvent, event_id: str, device_id: str) -> str:
    """The event's JSON without ``seq`` and ``held_since``, which the outbox adds when it sends.

    Assembled by hand around the one free-form part (``data``): this runs for every event raised.
    """
    data = event.data if isinstance(event.data, dict) else dict(event.data)
    source = "null" if event.source is None else encode_basestring(event.source)
    return (
        f'{{"event_id":"{event_id}","device_id":"{device_id}","type":{encode_basestring(event.type)},'
        f'"kind":{encode_basestring(event.kind)},"occurred_at":"{to_rfc3339_ms(event.occurred_at)}",'
        f'"source":{source},"data":{_compact(data)}}}'
    )


def wire_payload(body: str, seq: int | None, held_since: float | None) -> bytes:
    """The payload on the wire: the stored body with ``seq`` and ``held_since`` added (events only)."""
    if seq is None:
        return body.encode()
    held = "null" if held_since is None else f'"{to_rfc3339_ms(held_since)}"'
    return f'{body[:-1]},"seq":{seq},"held_since":{held}}}'.encode()
