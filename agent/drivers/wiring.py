"""What is wired to what: the real door hardware declared in ``[drivers]`` (docs/drivers.md "Wiring").

An installer declares the serial lines with OSDP readers (``[drivers.osdp.<bus>]``), the readers on
them (``[drivers.readers.<name>]``), the Modbus relay and I/O modules (``[drivers.modbus.<name>]``),
and for each door which relay releases it and which inputs watch it (``[drivers.doors.<door>]``);
the floor relays of Elevator Control go in ``[drivers.elevator]``. A point on a module is written
``"<module>:<n>"`` (coil or discrete input ``n``, counted from 0 as on the wire).

:func:`check` holds the rules that span tables (a reader's door must be declared, a module must
exist, no relay drives two things); the error names the key, so that a start with a bad wiring stops
with one line. Files (an SCBK) are checked when the drivers are built (``agent/drivers/registry.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal, NamedTuple

import msgspec
from msgspec import Meta

from agent.core_config import Section

NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_POINT: Final = re.compile(r"([A-Za-z0-9_-]{1,32}):(\d{1,5})")


class Point(NamedTuple):
    """Coil or discrete input ``index`` of ``module``."""

    module: str
    index: int  # type: ignore[assignment]  # the field, not tuple.index

    def __str__(self) -> str:
        return f"{self.module}:{self.index}"


def point(value: object) -> Point:
    if not isinstance(value, str) or not (m := _POINT.fullmatch(value)) or int(m[2]) > 65535:
        raise ValueError(f"must be '<module>:<n>' (n from 0 to 65535), like 'io-1:0', not {value!r}")
    return Point(m[1], int(m[2]))


class OsdpBus(Section, frozen=True, kw_only=True):
    """``[drivers.osdp.<bus>]``: one serial line (an RS-485 adapter, any tty) with readers on it."""

    port: Path  # the tty, like /dev/ttyUSB0
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 9600
    offline_retry_seconds: Annotated[float, Meta(ge=1, le=300)] = 10.0  # try an offline reader again after this


class Reader(Section, frozen=True, kw_only=True):
    """``[drivers.readers.<name>]``: an OSDP reader (peripheral device) at a door."""

    bus: str
    address: Annotated[int, Meta(ge=0, le=126)]
    door: str
    scbk_file: Path | None = None  # its Secure Channel Base Key: 32 hex digits, readable by the agent only
    install_mode: bool = False  # take a new reader on the default key and give it scbk_file's key (docs)


class ModbusModule(Section, frozen=True, kw_only=True):
    """``[drivers.modbus.<name>]``: a relay / I/O module, over TCP or RTU."""

    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None  # tcp
    port: int | str | None = None  # tcp: the port (502); rtu: the tty
    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 9600  # rtu
    unit: Annotated[int, Meta(ge=0, le=247)] = 1
    poll_ms: Annotated[int, Meta(ge=10, le=10_000)] = 50  # how often inputs are read
    debounce_ms: Annotated[int, Meta(ge=0, le=5_000)] = 100  # an input must hold its new level this long
    timeout_seconds: Annotated[float, Meta(gt=0, le=30)] = 1.0  # one request; no answer: the module is offline

    def __post_init__(self) -> None:
        if self.transport == "tcp" and isinstance(self.port, str) and self.port.isdigit():
            msgspec.structs.force_setattr(self, "port", int(self.port))  # a variable's "502"

    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.port)


class DoorWiring(Section, frozen=True, kw_only=True):
    """``[drivers.doors.<door>]``: the relay that releases the door and the inputs that watch it."""

    relay: str | None = None
    contact: str | None = None  # discrete input: on while the door is open
    exit_button: str | None = None  # discrete input: on while pressed
    contact_closed_when_on: bool = False  # a contact wired the other way round (normally closed)


class Elevator(Section, frozen=True, kw_only=True):
    """``[drivers.elevator]``: Elevator Control's floor relays (a premium feature, gated as such)."""

    floors: dict[str, str] = msgspec.field(default_factory=dict)  # floor -> relay point
    pulse_seconds: Annotated[int, Meta(ge=1, le=60)] = 5


class Wiring(NamedTuple):
    """The checked wiring, with points parsed."""

    buses: dict[str, OsdpBus]
    readers: dict[str, Reader]
    modules: dict[str, ModbusModule]
    relays: dict[str, Point]  # door -> relay
    contacts: dict[str, Point]  # door -> contact input
    exits: dict[str, Point]  # door -> exit button input
    floors: dict[str, Point]  # floor -> relay
    inverted: frozenset[str]  # doors whose contact is on while closed
    floor_seconds: int

    @property
    def empty(self) -> bool:
        return not (self.buses or self.readers or self.modules)


def check(
    buses: dict[str, OsdpBus],
    readers: dict[str, Reader],
    modules: dict[str, ModbusModule],
    doors: dict[str, DoorWiring],
    elevator: Elevator,
) -> Wiring:
    """The wiring, or ValueError naming the first key that is wrong."""
    for table, names in (("osdp", buses), ("readers", readers), ("modbus", modules), ("doors", doors)):
        for name in names:
            if not NAME.fullmatch(name):
                raise ValueError(f"{table}.{name}: a name is 1-32 of [A-Za-z0-9_-]")
    for name, module in modules.items():
        if module.transport == "tcp" and (module.host is None or not isinstance(module.port, int)):
            raise ValueError(f"modbus.{name}: a tcp module needs host and port (a number)")
        if module.transport == "rtu" and not isinstance(module.port, str):
            raise ValueError(f"modbus.{name}: an rtu module needs port, the serial line (like /dev/ttyUSB1)")
    seen: dict[tuple[str, int], str] = {}
    for name, reader in readers.items():
        if reader.bus not in buses:
            raise ValueError(
                f"readers.{name}.bus: unknown OSDP bus {reader.bus!r} (declare [drivers.osdp.{reader.bus}])"
            )
        if reader.door not in doors:
            raise ValueError(
                f"readers.{name}.door: unknown door {reader.door!r} (declare [drivers.doors.{reader.door}])"
            )
        if (reader.bus, reader.address) in seen:
            other = seen[(reader.bus, reader.address)]
            raise ValueError(f"readers.{name}.address: {reader.address} on {reader.bus} is reader {other}'s too")
        seen[(reader.bus, reader.address)] = name
        if reader.scbk_file is None:
            raise ValueError(f"readers.{name}.scbk_file: a reader needs its Secure Channel key (install mode gives it)")

    coils: dict[Point, str] = {}
    inputs: dict[Point, str] = {}

    def take(used: dict[Point, str], key: str, value: str, kind: str) -> Point:
        try:
            p = point(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        if p.module not in modules:
            raise ValueError(f"{key}: unknown Modbus module {p.module!r} (declare [drivers.modbus.{p.module}])")
        if p in used:
            raise ValueError(f"{key}: {kind} {p} is already {used[p]}")
        used[p] = key
        return p

    relays, contacts, exits = {}, {}, {}
    for door, wiring in doors.items():
        if wiring.relay is not None:
            relays[door] = take(coils, f"doors.{door}.relay", wiring.relay, "relay")
        if wiring.contact is not None:
            contacts[door] = take(inputs, f"doors.{door}.contact", wiring.contact, "input")
        if wiring.exit_button is not None:
            exits[door] = take(inputs, f"doors.{door}.exit_button", wiring.exit_button, "input")
    floors = {floor: take(coils, f"elevator.floors.{floor}", v, "relay") for floor, v in elevator.floors.items()}
    inverted = frozenset(door for door, wiring in doors.items() if wiring.contact_closed_when_on)
    return Wiring(buses, readers, modules, relays, contacts, exits, floors, inverted, elevator.pulse_seconds)
