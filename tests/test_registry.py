"""Back ends are chosen by config from registries: every name the configuration accepts has a factory,
and the defaults build what the demo and the tests run."""

from __future__ import annotations

import typing
from pathlib import Path

from agent.config import Config, DriversConfig, FirmwareConfig
from agent.drivers import registry
from agent.drivers.simulated import SimulatedOutputs
from firmware import backends
from firmware.slots import FileBootloader


def _names(model: type, field: str) -> set[str]:
    annotation = typing.get_type_hints(model)[field]
    while typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    return set(typing.get_args(annotation))


def test_every_driver_name_the_config_accepts_has_a_factory() -> None:
    """[drivers] kind and inputs accept exactly the names the registry builds."""
    assert _names(DriversConfig, "kind") == set(registry.OUTPUTS)
    assert _names(DriversConfig, "inputs") == set(registry.INPUTS)


def test_every_firmware_back_end_the_config_accepts_has_a_factory() -> None:
    """[firmware] bootloader and slots accept exactly the names the registry builds."""
    assert _names(FirmwareConfig, "bootloader") == set(backends.BOOTLOADERS)
    assert _names(FirmwareConfig, "slots") == set(backends.SLOTS)


def test_the_defaults_are_the_simulated_outputs_and_the_file_backed_slots(config: Config, tmp_path: Path) -> None:
    """No [drivers] or [firmware] table: simulated outputs, no input source, file-backed bootloader and slots."""
    assert isinstance(registry.outputs(config.drivers), SimulatedOutputs)
    assert registry.inputs(config.drivers, lambda: 0.0) == []
    chosen = backends.backend(config)
    assert isinstance(chosen.bootloader, FileBootloader)
    assert chosen.slot("b").name == "b"
