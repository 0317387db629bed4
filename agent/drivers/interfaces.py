"""What the agent needs from the hardware, as typing Protocols (docs/drivers.md).

Two directions. *Inputs* (door contact, exit button, fire release, access reader, call panel,
alarm inputs, MR01 sensor) turn into :class:`~agent.stimuli.Stimulus` values handed to the daemon;
they have no methods the agent calls, only a source of stimuli. *Outputs* (door relay, indoor
monitor, elevator controller and the premium-feature integrations) are called by the daemon with
what :mod:`agent.reactions` decided. Every output call is one :class:`Action`, so what the device
did can be printed, logged and compared in tests the same way, whichever implementation runs.

Output calls are coroutines: a real relay module or reader is I/O (a Modbus write, an OSDP command),
and the door's decision waits for the relay, not the other way round. Which implementation runs is
chosen by ``[drivers] kind`` from ``agent/drivers/registry.py``; the daemon (the composition root)
builds it, nothing deeper does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from agent.local.stimuli import Stimulus


class Action(NamedTuple):
    """One call of an output driver: ``driver.op(**args)``."""

    driver: str
    op: str
    args: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"driver": self.driver, "op": self.op, "args": dict(self.args)}


StimulusSink = Callable[[Stimulus], None]


class DoorRelay(Protocol):
    """Releases a door's lock."""

    async def open(self, door: str, seconds: int) -> None:
        """Release ``door`` for ``seconds`` (it locks again by itself)."""


class ReaderSignal(Protocol):
    """The LED and buzzer of the access reader(s) at a door."""

    async def signal(self, door: str, pattern: str) -> None:
        """Answer a credential at ``door``: ``granted``, ``denied`` or ``limited`` (docs/drivers.md)."""


class IndoorMonitor(Protocol):
    """The screens inside apartments (and the front desk)."""

    async def ring(self, monitor: str, caller: str) -> None:
        """Ring ``monitor`` for a call or an alarm from ``caller``."""

    async def show_notice(self, monitor: str, text: str) -> None:
        """Show a notice (a parcel waiting, a sensor alarm)."""


class CallRouter(Protocol):
    """Where a visitor's call goes besides the indoor monitors: the app and the phone line."""

    async def ring_app(self, account: str, door: str) -> None:
        """Ring the app of ``account``."""

    async def forward_landline(self, target: str, door: str) -> None:
        """Forward the call to the phone of ``target`` (an account or apartment)."""


class ElevatorController(Protocol):
    async def call(self, floors: tuple[str, ...], door: str) -> None:
        """Call the lift to the door's floor with ``floors`` enabled."""


class ThirdPartyLock(Protocol):
    async def unlock(self, lock: str) -> None:
        """Open an iTec or Dormakaba lock."""


class Camera(Protocol):
    async def stream(self, camera: str, to: str) -> None:
        """Start a third-party camera's stream to ``to``."""


class VideoStorage(Protocol):
    async def upload(self, clip: str) -> None:
        """Upload a recording to the cloud's video storage."""


class Booking(Protocol):
    async def confirm(self, booking: str, door: str) -> None:
        """Let a booked amenity's holder in."""


class Outputs(Protocol):
    """Every output the daemon drives, reached by driver name (``Action.driver``)."""

    @property
    def relay(self) -> DoorRelay: ...
    @property
    def reader(self) -> ReaderSignal: ...
    @property
    def monitor(self) -> IndoorMonitor: ...
    @property
    def calls(self) -> CallRouter: ...
    @property
    def elevator(self) -> ElevatorController: ...
    @property
    def lock(self) -> ThirdPartyLock: ...
    @property
    def camera(self) -> Camera: ...
    @property
    def storage(self) -> VideoStorage: ...
    @property
    def booking(self) -> Booking: ...


async def perform(outputs: Outputs, action: Action) -> None:
    """Carry out ``action`` on ``outputs``."""
    driver = getattr(outputs, action.driver)
    await getattr(driver, action.op)(**action.args)
