"""OSDP readers (SIA OSDP v2 / IEC 60839-11-5) through libosdp in control-panel mode (docs/drivers.md).

One :class:`OsdpReaders` per serial line (``[drivers.osdp.<bus>]``) drives the readers declared on it
(``[drivers.readers.<name>]``). libosdp polls them from a thread of its own (every 20 ms); what a
reader reports arrives in that thread and is handed to the event loop, where it becomes a stimulus:

* a card read: ``card`` with ``value`` the upper-case hex of the bytes read (raw Wiegand bits as the
  reader sent them, left-aligned; ASCII formats as their bytes), so a card issued as ``"04A1B2"``
  opens when a reader reads those bytes;
* keypad presses: digits gathered until ``#`` (or 0x0D) into one ``pin``; ``*`` (or 0x7F) clears;
  more than :data:`PIN_GAP` seconds between keys starts over; at most :data:`PIN_MAX` digits;
* a local status report (tamper, power): ``tamper`` / ``power_loss`` alarms on the rising edge;
* the reader going offline / online: ``hardware_offline`` / ``hardware_online`` health events; an
  offline reader is tried again every ``offline_retry_seconds`` (libosdp alone would wait 300 s);
* the Secure Channel failing before the reader came online (a wrong key, or a reader not set up for
  it): ``reader_refused``, raised once per streak of failures.

The reader answers each decision with its LED and buzzer (:data:`PATTERNS`). Secure Channel is
always enforced with the reader's own key (SCBK); ``install_mode`` lets a new reader on the default
key in once, gives it its key (KEYSET) and says so in the log: it is refused unless configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
import tty
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import structlog

from agent.drivers.interfaces import StimulusSink
from agent.drivers.wiring import OsdpBus, Reader
from agent.local.stimuli import Stimulus

log = structlog.get_logger("agent.drivers.osdp")

PIN_MAX: Final = 12
PIN_GAP: Final = 5.0  # seconds between two keys before the entry starts over
_ENTER: Final = frozenset(b"#\r")
_CLEAR: Final = frozenset(b"*\x7f")

# LED colours (OSDP): 0 none, 1 red, 2 green, 3 amber.
_RED, _GREEN, _AMBER, _NONE = 1, 2, 3, 0


class Pattern(NamedTuple):
    """How a reader answers: a temporary LED flash (units of 100 ms) and buzzer beeps."""

    on_color: int
    off_color: int
    on_count: int  # LED on time per flash, 100 ms units
    off_count: int
    timer: int  # how long the temporary LED state lasts, 100 ms units
    beeps: int
    beep_on: int  # 100 ms units
    beep_off: int


PATTERNS: Final[Mapping[str, Pattern]] = {
    # granted: steady green for 2 s, one short beep
    "granted": Pattern(_GREEN, _NONE, 20, 0, 20, 1, 2, 0),
    # denied: red flashing for 2 s, three short beeps
    "denied": Pattern(_RED, _NONE, 2, 2, 20, 3, 1, 1),
    # limited (the door opens, but the site's doors are limited: renew): green and amber alternating 3 s, two beeps
    "limited": Pattern(_GREEN, _AMBER, 3, 3, 30, 2, 2, 2),
}


def led_command(pattern: Pattern) -> dict[str, Any]:
    return {
        "command": 2,  # osdp.Command.LED
        "reader": 0,
        "led_number": 0,
        "control_code": 2,  # temporary: set and start the timer
        "on_color": pattern.on_color,
        "off_color": pattern.off_color,
        "on_count": pattern.on_count,
        "off_count": pattern.off_count,
        "timer_count": pattern.timer,
        "temporary": True,
    }


def buzzer_command(pattern: Pattern) -> dict[str, Any]:
    return {
        "command": 3,  # osdp.Command.Buzzer
        "reader": 0,
        "control_code": 2,  # the default tone
        "on_count": pattern.beep_on,
        "off_count": pattern.beep_off,
        "rep_count": pattern.beeps,
    }


class Keypad:
    """Keys pressed at one reader, gathered into a PIN (pure: time is passed in)."""

    def __init__(self) -> None:
        self.digits = ""
        self.last = 0.0

    def press(self, keys: bytes, at: float) -> list[str]:
        """The PINs completed by ``keys``."""
        if at - self.last > PIN_GAP:
            self.digits = ""
        self.last = at
        done = []
        for key in keys:
            if key in _ENTER:
                if self.digits:
                    done.append(self.digits)
                self.digits = ""
            elif key in _CLEAR:
                self.digits = ""
            elif 0x30 <= key <= 0x39 and len(self.digits) < PIN_MAX:
                self.digits += chr(key)
        return done


class FdChannel:
    """libosdp's channel over a tty file descriptor (non-blocking); the tests' reader uses it too."""

    def __init__(self, fd: int) -> None:
        self.id = fd
        self.fd = fd
        os.set_blocking(fd, False)  # libosdp's refresh must never wait on the line

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self) -> None:
        return None


_BAUD: Final = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
    230400: termios.B230400,
}


def open_tty(path: str, baudrate: int) -> int:
    """``path`` opened raw and non-blocking at ``baudrate``, 8N1."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[4] = attrs[5] = _BAUD[baudrate]
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:
        pass  # not every tty (a pseudo-terminal) takes a speed; the line is raw either way
    return fd


class _ReaderState:
    def __init__(self, name: str, reader: Reader) -> None:
        self.name, self.reader = name, reader
        self.online = False
        self.reported_offline = False
        self.refused = False  # reader_refused raised for the current streak
        self.offline_since = time.monotonic()
        self.tamper = False
        self.power = False
        self.keypad = Keypad()


class OsdpReaders:
    """The readers on one serial line: an input source (stimuli) and their LED and buzzer."""

    def __init__(
        self,
        name: str,
        bus: OsdpBus,
        readers: Mapping[str, Reader],
        keys: Mapping[str, bytes | None],
        now: Callable[[], float],
    ) -> None:
        self.name = f"osdp:{name}"
        self._bus, self._now = bus, now
        self._readers = [_ReaderState(n, r) for n, r in sorted(readers.items())]
        self._keys = keys
        self._by_door: dict[str, list[int]] = {}
        for index, state in enumerate(self._readers):
            self._by_door.setdefault(state.reader.door, []).append(index)
        self._cp: Any = None
        self._fd: int | None = None
        self._sink: StimulusSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cards = self.pins = self.signals = 0

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self, sink: StimulusSink) -> None:
        import osdp

        self._sink, self._loop = sink, asyncio.get_running_loop()
        self._fd = open_tty(str(self._bus.port), self._bus.baudrate)
        infos = []
        for state in self._readers:
            flags = [osdp.LibFlag.EnableNotification]
            key = self._keys.get(state.name)
            if state.reader.install_mode:
                flags.append(osdp.LibFlag.InstallMode)
            else:
                flags.append(osdp.LibFlag.EnforceSecure)
            infos.append(osdp.PDInfo(state.reader.address, FdChannel(self._fd), scbk=key, name=state.name, flags=flags))
        self._cp = _panel_class(osdp)(infos, log_level=osdp.LogLevel.Emergency, event_handler=self._from_thread)
        self._cp.start()
        log.info("osdp_started", bus=self.name, port=str(self._bus.port), readers=[s.name for s in self._readers])

    async def run(self, sink: StimulusSink) -> None:
        """Open the bus (:meth:`start`) and watch its readers until cancelled; then close it."""
        await self.start(sink)
        try:
            await self._watchdog()
        finally:
            self.close()

    def close(self) -> None:
        if self._cp is not None:
            with contextlib.suppress(RuntimeError):  # its thread had not started
                self._cp.teardown()
            self._cp = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def stats(self) -> dict[str, Any]:
        return {
            "readers": {
                s.name: {"door": s.reader.door, "address": s.reader.address, "online": s.online} for s in self._readers
            },
            "cards": self.cards,
            "pins": self.pins,
            "signals": self.signals,
        }

    def serves(self, door: str) -> bool:
        return door in self._by_door

    def online(self) -> dict[str, bool]:
        return {s.name: s.online for s in self._readers}

    # -- the reader's answer --------------------------------------------------------------------------------
    async def signal(self, door: str, pattern: str) -> None:
        """LED and buzzer of each online reader at ``door``."""
        p = PATTERNS[pattern]
        for index in self._by_door.get(door, ()):
            state = self._readers[index]
            if self._cp is None or not state.online:
                continue
            address = state.reader.address
            self._cp.submit_command(address, led_command(p))
            self._cp.submit_command(address, buzzer_command(p))
            self.signals += 1

    # -- what the readers report ----------------------------------------------------------------------------
    def _from_thread(self, index: int, event: dict[str, Any]) -> int:
        """libosdp's thread: hand the event to the loop (never touch the panel here: it holds its lock)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._event, index, event)
        return 0

    def _emit(self, kind: str, state: _ReaderState, data: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink(Stimulus(kind, state.name, data, self._now()))

    def _event(self, index: int, event: dict[str, Any]) -> None:
        if not 0 <= index < len(self._readers):
            return
        state = self._readers[index]
        door = state.reader.door
        kind = event.get("event")
        if kind == 1:  # card read
            data = bytes(event.get("data", b""))[:64]
            if data:
                self.cards += 1
                self._emit("card", state, {"door": door, "value": data.hex().upper()})
        elif kind == 2:  # keypress
            for pin in state.keypad.press(bytes(event.get("data", b""))[:64], time.monotonic()):
                self.pins += 1
                self._emit("pin", state, {"door": door, "value": pin})
        elif kind == 4 and event.get("type") == 2:  # local status: tamper, power
            report = bytes(event.get("report", b""))
            tamper, power = bool(report[:1] and report[0]), bool(report[1:2] and report[1])
            if tamper and not state.tamper:
                self._emit("tamper", state, {"door": door, "device": state.name})
            if power and not state.power:
                self._emit("power_loss", state, {"door": door, "device": state.name})
            state.tamper, state.power = tamper, power
        elif kind == 5:
            self._notification(state, int(event.get("type", -1)), int(event.get("arg0", 0)))

    def _notification(self, state: _ReaderState, typ: int, arg0: int) -> None:
        if typ == 2 and arg0:  # the reader is online (and in Secure Channel, as enforced)
            state.online, state.refused = True, False
            log.info("osdp_reader_online", reader=state.name, door=state.reader.door)
            if state.reported_offline:
                state.reported_offline = False
                self._emit("hardware_online", state, {"device": state.name})
            if state.reader.install_mode:
                self._install(state)
        elif typ == 2:  # offline
            if state.online:
                state.online = False
                state.offline_since = time.monotonic()
                log.warning("osdp_reader_offline", reader=state.name, door=state.reader.door)
                self._offline(state, "the reader stopped answering")
        elif typ == 1 and not arg0 and not state.online and not state.refused:
            state.refused = True
            reason = "its Secure Channel failed (a wrong key, or a reader not set up for it)"
            log.error("osdp_reader_refused", reader=state.name, door=state.reader.door, reason=reason)
            self._emit("reader_refused", state, {"door": state.reader.door, "device": state.name, "reason": reason})

    def _offline(self, state: _ReaderState, reason: str) -> None:
        if not state.reported_offline:
            state.reported_offline = True
            self._emit("hardware_offline", state, {"device": state.name, "reason": reason})

    def _install(self, state: _ReaderState) -> None:
        """In install mode libosdp took the reader on the default key and has sent it its own (KEYSET)."""
        log.warning(
            "osdp_reader_installed",
            reader=state.name,
            door=state.reader.door,
            next="set install_mode = false and restart: a reader on the default key must not be taken again",
        )

    async def _watchdog(self) -> None:
        """Report a reader that never answered; try offline readers again sooner than libosdp would."""
        retry = self._bus.offline_retry_seconds
        while True:
            await asyncio.sleep(retry)
            for state in self._readers:
                if state.online or time.monotonic() - state.offline_since < retry or self._cp is None:
                    continue
                if not state.refused:
                    self._offline(state, "the reader does not answer")
                address = state.reader.address
                self._cp.disable_pd(address)
                await asyncio.sleep(0.1)  # one refresh of the panel between: then it starts over at once
                if self._cp is not None:
                    self._cp.enable_pd(address)
                state.offline_since = time.monotonic()


def _panel_class(osdp: Any) -> Any:
    """libosdp's ControlPanel without its own event queue: the wrapper keeps every event for a
    ``get_event()`` we never call (an unbounded queue on a door that reads cards all day)."""

    class Panel(osdp.ControlPanel):  # type: ignore[misc]
        def _internal_event_handler(self, pd: int, event: dict[str, Any]) -> int:
            handler = self.user_event_handler
            return int(handler(pd, event)) if handler is not None else 0

    return Panel
