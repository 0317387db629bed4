"""Modbus relay and I/O modules through pymodbus, over TCP or RTU (docs/drivers.md "Wiring").

One :class:`ModbusModuleDriver` per ``[drivers.modbus.<name>]``. It is an output (door relays and
Elevator Control's floor relays are its coils) and an input source (door contacts and exit buttons
are its discrete inputs):

* **a pulse is persisted, then acted on.** ``pulse(coil, seconds)`` writes the coil's release time to
  the pulse journal (:class:`PulseJournal`, in the data directory) before it sets the coil, and
  clears the coil, then the entry, when the time is up. A daemon that stops in the middle of a pulse
  finds the entry at its next start and clears the coil then (at once if the time has passed): a
  door is never left released by a crash. A coil that cannot be cleared (the module is offline)
  stays in the journal and is cleared when the module answers again.
* **inputs are polled** every ``poll_ms`` and **debounced**: a new level counts once it has held for
  ``debounce_ms``. A contact becomes ``door_open`` / ``door_closed``, an exit button's press
  ``exit_button``: the same stimuli as the simulated ones, so forced-open and held-open alarms come
  out of the same local logic.
* **a module that stops answering** (no answer within ``timeout_seconds``, or an error reply) is a
  ``hardware_offline`` health event naming the doors whose contacts it reads, whose state becomes
  ``unknown`` (not closed); when it answers again, ``hardware_online``, then every contact's level as
  read (so a door found open is judged as any other opening).

Requests to one module go one at a time (an RTU line is half duplex; a TCP module is often a serial
gateway): a pulse waits at most for the poll in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from agent.drivers.interfaces import StimulusSink
from agent.drivers.wiring import ModbusModule, Point
from agent.local.stimuli import Stimulus
from agent.store.durable import write_whole
from protocol.cancelling import raise_if_cancelling

log = structlog.get_logger("agent.drivers.modbus")

JOURNAL_NAME: Final = "relay-pulses.json"


class PulseJournal:
    """Coils released until a time: ``{"io-1:0": until}``, one small file written whole, fsync'd."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / JOURNAL_NAME
        self._entries: dict[str, float] = self._load()
        self._lock = asyncio.Lock()

    def _load(self) -> dict[str, float]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Unreadable: every coil of every module is cleared at start anyway (see start()).
            log.error("relay_journal_unreadable", path=str(self.path), error=str(exc))
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    def pending(self, module: str) -> dict[int, float]:
        """Coil -> release time of the pulses of ``module`` not yet cleared."""
        out = {}
        for key, until in self._entries.items():
            name, _, index = key.rpartition(":")
            if name == module and index.isdigit():
                out[int(index)] = until
        return out

    async def set(self, point: Point, until: float | None) -> None:
        """Record (``until``) or forget (None) a pulse; durable when this returns."""
        async with self._lock:
            if until is None:
                if self._entries.pop(str(point), None) is None:
                    return
            else:
                self._entries[str(point)] = until
            await asyncio.to_thread(write_whole, self.path, json.dumps(self._entries).encode())


class Debouncer:
    """One input's level, taken only once a new reading has held for ``hold`` seconds (pure)."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.level: bool | None = None  # the debounced level; None until first read
        self._candidate: bool | None = None
        self._since = 0.0

    def read(self, level: bool, at: float) -> bool | None:
        """The new debounced level if it changed with this reading, else None."""
        if self.level is None:
            self.level, self._candidate = level, None
            return level
        if level == self.level:
            self._candidate = None
            return None
        if self._candidate != level:
            self._candidate, self._since = level, at
        if at - self._since >= self.hold:
            self.level, self._candidate = level, None
            return level
        return None


class ModbusModuleDriver:
    """One relay / I/O module: pulses on its coils, stimuli from its inputs."""

    def __init__(
        self,
        name: str,
        module: ModbusModule,
        *,
        contacts: Mapping[int, str],  # input -> door
        exits: Mapping[int, str],  # input -> door
        inverted: frozenset[str],
        journal: PulseJournal,
        now: Callable[[], float],
    ) -> None:
        self.name = f"modbus:{name}"
        self.module_name, self.module = name, module
        self._contacts, self._exits, self._inverted = dict(contacts), dict(exits), inverted
        self._journal, self._now = journal, now
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._sink: StimulusSink | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None  # while run() runs
        self.online: bool | None = None  # None until the first answer or failure
        self._inputs = sorted({*self._contacts, *self._exits})
        hold = module.debounce_ms / 1000
        self._debounce = {i: Debouncer(hold) for i in self._inputs}
        self.pulses = self.polls = self.failures = 0

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def run(self, sink: StimulusSink) -> None:
        """Poll the module's inputs and finish the pulses a stop interrupted, until cancelled; then close.
        Pulses started meanwhile (:meth:`pulse`) end within this run's TaskGroup too."""
        self._open(sink)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for coil, until in self._journal.pending(self.module_name).items():  # a pulse a stop interrupted
                    group.create_task(self._clear_at(coil, until))
                group.create_task(self._poll())
        finally:
            self._group = None
            self.close()

    def _open(self, sink: StimulusSink) -> None:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its own retries and hex dumps: ours are events
        self._sink = sink
        m = self.module
        if m.transport == "tcp":
            self._client = AsyncModbusTcpClient(
                str(m.host), port=int(str(m.port)), timeout=m.timeout_seconds, retries=0, reconnect_delay=0
            )
        else:
            self._client = AsyncModbusSerialClient(
                str(m.port), baudrate=m.baudrate, timeout=m.timeout_seconds, retries=0, reconnect_delay=0
            )
        log.info("modbus_started", module=self.module_name, at=m.where(), transport=m.transport)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._client is not None:
            self._client.close()

    def stats(self) -> dict[str, Any]:
        return {
            "at": self.module.where(),
            "online": self.online,
            "pulses": self.pulses,
            "polls": self.polls,
            "failures": self.failures,
        }

    def _spawn(self, coro: Any) -> None:
        """A pulse's end: a task of the running module's TaskGroup (one kept here if it is not running)."""
        if self._group is not None:
            self._group.create_task(coro)
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests -------------------------------------------------------------------------------------------
    async def _request(self, call: Callable[[], Any]) -> Any:
        """One request, or None if the module did not answer (counted; the poller reports it)."""
        from pymodbus.exceptions import ModbusException

        async with self._lock:
            try:
                if not self._client.connected:
                    async with asyncio.timeout(self.module.timeout_seconds):
                        if not await self._client.connect():
                            raise ConnectionError("cannot connect")
                reply = await call()
            except (ModbusException, OSError, TimeoutError, ConnectionError) as exc:
                raise_if_cancelling()
                self.failures += 1
                self._fail(str(exc) or type(exc).__name__)
                return None
            raise_if_cancelling()
            if reply.isError():
                self.failures += 1
                self._fail(f"error reply {reply}")
                return None
            return reply

    async def _write(self, coil: int, on: bool) -> bool:
        unit = self.module.unit
        return await self._request(lambda: self._client.write_coil(coil, on, device_id=unit)) is not None

    # -- outputs --------------------------------------------------------------------------------------------
    async def pulse(self, coil: int, seconds: float) -> bool:
        """Set ``coil`` for ``seconds`` (persisted first); False if the module did not take it."""
        until = self._now() + seconds
        await self._journal.set(Point(self.module_name, coil), until)
        done = await self._write(coil, True)
        self.pulses += done
        self._spawn(self._clear_at(coil, until))
        return done

    async def _clear_at(self, coil: int, until: float) -> None:
        await asyncio.sleep(max(0.0, until - self._now()))
        retry = max(self.module.timeout_seconds, self.module.poll_ms / 1000)
        while True:  # until the module takes it: offline, try again (the poller reports it)
            if await self._write(coil, False):
                break
            await asyncio.sleep(retry)
        await self._journal.set(Point(self.module_name, coil), None)

    # -- inputs ---------------------------------------------------------------------------------------------
    async def _poll(self) -> None:
        period = self.module.poll_ms / 1000
        loop = asyncio.get_running_loop()
        first = min(self._inputs, default=0)
        count = max(self._inputs, default=0) - first + 1
        unit = self.module.unit
        while True:
            started = loop.time()
            if self._inputs:
                reply = await self._request(
                    lambda: self._client.read_discrete_inputs(first, count=count, device_id=unit)
                )
            else:  # relays only: still find out whether it answers
                reply = await self._request(lambda: self._client.read_coils(0, count=1, device_id=unit))
            if reply is not None:
                self.polls += 1
                if self.online is not True:
                    self._back()
                if self._inputs:
                    self._levels(list(reply.bits), first, loop.time())
            await asyncio.sleep(max(0.0, period - (loop.time() - started)))

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink(Stimulus(kind, self.name, data, self._now()))

    def _levels(self, bits: list[bool], first: int, at: float) -> None:
        for index in self._inputs:
            level = bool(bits[index - first]) if index - first < len(bits) else False
            changed = self._debounce[index].read(level, at)
            if changed is None:
                continue
            if index in self._contacts:
                door = self._contacts[index]
                is_open = changed != (door in self._inverted)
                self._emit("door_open" if is_open else "door_closed", {"door": door})
            if index in self._exits and changed:
                self._emit("exit_button", {"door": self._exits[index]})

    def _fail(self, reason: str) -> None:
        if self.online is False:
            return
        self.online = False
        for debouncer in self._debounce.values():
            debouncer.level = None  # known again from the first reading after
        doors = sorted(set(self._contacts.values()))
        log.warning("modbus_offline", module=self.module_name, reason=reason, doors=doors)
        self._emit("hardware_offline", {"device": self.name, "doors": doors, "reason": reason[:200]})

    def _back(self) -> None:
        was = self.online
        self.online = True
        if was is False:
            doors = sorted(set(self._contacts.values()))
            log.info("modbus_online", module=self.module_name)
            self._emit("hardware_online", {"device": self.name, "doors": doors})
