"""Devices opened as successive runs of the agent would open them (the ``devices`` fixture)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import Config, load_trust_roots
from agent.device import Device
from tests.support.documents import SettableClock


@dataclass
class DeviceFactory:
    """Opens devices on the same config and clock, as successive runs of the agent would."""

    config: Config
    clock: SettableClock
    opened: list[Device]

    async def open(self) -> Device:
        """A device as a fresh process would load it from the store."""
        device = await Device.open(self.config, load_trust_roots(self.config), self.clock.source())
        self.opened.append(device)
        return device

    async def restart(self, device: Device) -> Device:
        """Close ``device`` and open it again from the store."""
        self.opened.remove(device)
        await device.close()
        return await self.open()
