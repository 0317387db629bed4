"""Hardware back ends, chosen by config (``[drivers]``): one name, one factory, one small module each.

The daemon (the composition root) asks this module for the outputs and the input sources the
configuration names, and hands them to the local side; nothing deeper constructs a driver. A real back
end (OSDP readers, Modbus relay and I/O modules) is a new row in :data:`OUTPUTS` or :data:`INPUTS`
and a module of its own, tested against the real other end.

* ``[drivers] kind``: the outputs (relays, monitors, elevator...): ``simulated`` records every call.
* ``[drivers] inputs``: the input sources to start, beside the control socket's ``simulate``;
  ``mr01`` (the MR01 sensors over UDP) is started whenever ``mr01_udp`` is set.
* the wiring (``[drivers.osdp]``, ``readers``, ``modbus``, ``doors``, ``elevator``): OSDP readers
  and Modbus modules (:func:`build`), each both an input source and the output of what is wired to
  it; what is not wired stays with ``kind``'s outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

from agent.config import DriversConfig
from agent.drivers.interfaces import Outputs, StimulusSink
from agent.errors import ConfigError


class Input(Protocol):
    """An input source: the local side runs it as a task of its own TaskGroup (agent/local/side.py)."""

    name: str

    async def run(self, sink: StimulusSink) -> None:
        """Deliver stimuli to ``sink`` until cancelled; what it opened is closed as it ends."""

    def stats(self) -> dict[str, Any] | None: ...


def _simulated(config: DriversConfig) -> Outputs:
    from agent.drivers.simulated import SimulatedOutputs

    return SimulatedOutputs()


def _mr01(config: DriversConfig, now: Callable[[], float]) -> Input:
    from agent.drivers.mr01 import Mr01Input, load_keys

    keys: dict[bytes, bytes] = {}
    if config.mr01_keys is not None:
        try:
            keys = load_keys(config.mr01_keys)
        except ValueError as exc:
            raise ConfigError("drivers.mr01_keys", str(exc)) from None
    if config.mr01_udp is None:
        key = "drivers.mr01_keys" if config.mr01_keys is not None else "drivers.inputs"
        raise ConfigError(key, "the MR01 input needs drivers.mr01_udp (where to listen)")
    return Mr01Input(config.mr01_udp, now, keys)


OUTPUTS: Final[Mapping[str, Callable[[DriversConfig], Outputs]]] = {"simulated": _simulated}
INPUTS: Final[Mapping[str, Callable[[DriversConfig, Callable[[], float]], Input]]] = {"mr01": _mr01}


def outputs(config: DriversConfig) -> Outputs:
    """The outputs ``[drivers] kind`` names."""
    return OUTPUTS[config.kind](config)


def inputs(config: DriversConfig, now: Callable[[], float]) -> list[Input]:
    """The input sources the configuration names (ConfigError names what cannot be set up)."""
    mr01 = config.mr01_udp is not None or config.mr01_keys is not None
    names = list(dict.fromkeys([*config.inputs, *(["mr01"] if mr01 else [])]))
    return [INPUTS[name](config, now) for name in names]


class Drivers(NamedTuple):
    outputs: Outputs
    inputs: list[Input]


def scbk_keys(config: DriversConfig) -> dict[str, bytes | None]:
    """Each reader's Secure Channel key (ConfigError names a missing or readable-by-others file)."""
    from agent.drivers.keyfile import read_scbk

    keys: dict[str, bytes | None] = {}
    for name, reader in config.readers.items():
        if reader.scbk_file is None:  # refused by the wiring check; kept for the type
            keys[name] = None
            continue
        try:
            keys[name] = read_scbk(reader.scbk_file)
        except ValueError as exc:
            raise ConfigError(f"drivers.readers.{name}.scbk_file", str(exc)) from None
    return keys


def build(config: DriversConfig, now: Callable[[], float], data_dir: Path) -> Drivers:
    """Every driver the configuration names: outputs and input sources (ConfigError if one cannot be)."""
    base, sources = outputs(config), inputs(config, now)
    wiring = config.wiring()
    if wiring.empty:
        return Drivers(base, sources)
    from agent.drivers.hardware import Hardware
    from agent.drivers.modbus import ModbusModuleDriver, PulseJournal
    from agent.drivers.osdp import OsdpReaders

    keys = scbk_keys(config)
    journal = PulseJournal(data_dir)
    modules = {
        name: ModbusModuleDriver(
            name,
            module,
            contacts={p.index: door for door, p in wiring.contacts.items() if p.module == name},
            exits={p.index: door for door, p in wiring.exits.items() if p.module == name},
            inverted=wiring.inverted,
            journal=journal,
            now=now,
        )
        for name, module in wiring.modules.items()
    }
    buses = {
        name: OsdpReaders(
            name, bus, {r: reader for r, reader in wiring.readers.items() if reader.bus == name}, keys, now
        )
        for name, bus in wiring.buses.items()
    }
    hardware = Hardware(wiring, base, modules, buses)
    return Drivers(hardware, [*sources, *modules.values(), *buses.values()])
