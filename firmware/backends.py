"""Where an image is written and who chooses the slot: chosen by config (``[firmware] slots``,
``[firmware] bootloader``), one name and one factory each.

The daemon (the composition root) asks this module for the bootloader and the slots and hands them to
the engine, which knows them only by their interfaces (``firmware/slots.py``: ``Slot``, ``Bootloader``,
as RAUC's bootchooser has them). ``file`` keeps both as files in ``data_dir/slots`` (the default, the
demo and the tests); ``uboot`` and ``grub`` run the bootloaders' own tools (``firmware/bootenv.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from firmware.slots import Bootloader, FileBootloader, FileSlot, Slot


class Backend(NamedTuple):
    """The bootloader, and the slot of each name."""

    bootloader: Bootloader
    slot: Callable[[str], Slot]


def _file_bootloader(config: Any) -> Bootloader:
    return FileBootloader(config.data_dir / "slots")


def _file_slots(config: Any) -> Callable[[str], Slot]:
    directory: Path = config.data_dir / "slots"
    return lambda name: FileSlot(directory, name)


def _uboot(config: Any) -> Bootloader:
    from firmware.bootenv import UBootBootloader, UBootEnv

    f = config.firmware
    return UBootBootloader(UBootEnv(f.uboot_env_config), f.cmdline, f.simulate_boot)


def _grub(config: Any) -> Bootloader:
    from firmware.bootenv import GrubBootloader, GrubEnv

    f = config.firmware
    return GrubBootloader(GrubEnv(f.grubenv), f.cmdline, f.simulate_boot)


def _rauc_bootloader(config: Any) -> Bootloader:
    from firmware.rauc import Rauc, RaucBootloader

    return RaucBootloader(Rauc(config.firmware.rauc_bus))


def _rauc_slots(config: Any) -> Callable[[str], Slot]:
    from firmware.rauc import Rauc, RaucSlot

    rauc, meta = Rauc(config.firmware.rauc_bus), config.data_dir / "slots"
    return lambda name: RaucSlot(rauc, meta, name)


BOOTLOADERS: Final[Mapping[str, Callable[[Any], Bootloader]]] = {
    "file": _file_bootloader,
    "uboot": _uboot,
    "grub": _grub,
    "rauc": _rauc_bootloader,
}


def _device_slots(config: Any) -> Callable[[str], Slot]:
    from firmware.slots import DeviceSlot

    devices: Mapping[str, Path] = config.firmware.slot_devices
    meta: Path = config.data_dir / "slots"
    return lambda name: DeviceSlot(devices[name], meta, name)


SLOTS: Final[Mapping[str, Callable[[Any], Callable[[str], Slot]]]] = {
    "file": _file_slots,
    "device": _device_slots,
    "rauc": _rauc_slots,
}


def backend(config: Any) -> Backend:
    """The bootloader and slots the agent's configuration names."""
    return Backend(BOOTLOADERS[config.firmware.bootloader](config), SLOTS[config.firmware.slots](config))
