"""Hardware back ends, chosen by config (``[drivers]``): one name, one factory, one small module each.

The daemon (the composition root) asks this module for the outputs and the input sources the
configuration names, and hands them to the local side; nothing deeper constructs a driver. A real back
end (OSDP readers, Modbus relay and I/O modules) is a new row in :data:`OUTPUTS` or :data:`INPUTS`
and a module of its own, tested against the real other end.

* ``[drivers] kind``: the outputs (relays, monitors, elevator...): ``simulated`` records every call.
* ``[drivers] inputs``: the input sources to start, beside the control socket's ``simulate``;
  ``mr01`` (the MR01 sensors over UDP) is started whenever ``mr01_udp`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from agent.config import DriversConfig
from agent.drivers.interfaces import Outputs, StimulusSink
from agent.errors import ConfigError


class Input(Protocol):
    """An input source the local side starts and closes."""

    name: str

    async def start(self, sink: StimulusSink) -> None: ...
    def close(self) -> None: ...
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
