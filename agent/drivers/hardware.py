"""The wired hardware as the agent's outputs: door relays and floor relays on Modbus modules, the LED and
buzzer of OSDP readers; what is not wired (indoor monitors, app calls, integrations) stays with the
base outputs (``[drivers] kind``).
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from agent.drivers.interfaces import (
    Booking,
    CallRouter,
    Camera,
    IndoorMonitor,
    Outputs,
    ThirdPartyLock,
    VideoStorage,
)
from agent.drivers.modbus import ModbusModuleDriver
from agent.drivers.osdp import OsdpReaders
from agent.drivers.wiring import Point, Wiring

log = structlog.get_logger("agent.drivers")


class WiredRelays:
    def __init__(self, relays: Mapping[str, Point], modules: Mapping[str, ModbusModuleDriver], base: Outputs) -> None:
        self._relays, self._modules, self._base = relays, modules, base

    async def open(self, door: str, seconds: int) -> None:
        point = self._relays.get(door)
        if point is None:  # a door of the project no relay of ours releases (another controller's)
            log.warning("relay_not_wired", door=door)
            await self._base.relay.open(door, seconds)
            return
        if not await self._modules[point.module].pulse(point.index, seconds):
            log.error("relay_not_set", door=door, relay=str(point))


class WiredReaders:
    def __init__(self, buses: Mapping[str, OsdpReaders], base: Outputs) -> None:
        self._buses, self._base = buses, base

    async def signal(self, door: str, pattern: str) -> None:
        buses = [bus for bus in self._buses.values() if bus.serves(door)]
        for bus in buses:
            await bus.signal(door, pattern)
        if not buses:  # no reader of ours at that door (a credential from edge-agent simulate)
            await self._base.reader.signal(door, pattern)


class WiredElevator:
    def __init__(
        self, floors: Mapping[str, Point], seconds: int, modules: Mapping[str, ModbusModuleDriver], base: Outputs
    ) -> None:
        self._floors, self._seconds, self._modules, self._base = floors, seconds, modules, base

    async def call(self, floors: tuple[str, ...], door: str) -> None:
        for floor in floors:
            point = self._floors.get(floor)
            if point is None:
                log.warning("floor_not_wired", floor=floor, door=door)
            elif not await self._modules[point.module].pulse(point.index, self._seconds):
                log.error("relay_not_set", floor=floor, relay=str(point))


class Hardware:
    """Outputs: the wired ones, and the base's for the rest."""

    def __init__(
        self,
        wiring: Wiring,
        base: Outputs,
        modules: Mapping[str, ModbusModuleDriver],
        buses: Mapping[str, OsdpReaders],
    ) -> None:
        self.relay = WiredRelays(wiring.relays, modules, base)
        self.reader = WiredReaders(buses, base)
        self.elevator = WiredElevator(wiring.floors, wiring.floor_seconds, modules, base)
        self.monitor: IndoorMonitor = base.monitor
        self.calls: CallRouter = base.calls
        self.lock: ThirdPartyLock = base.lock
        self.camera: Camera = base.camera
        self.storage: VideoStorage = base.storage
        self.booking: Booking = base.booking
