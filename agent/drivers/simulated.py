"""The ``simulated`` hardware: every output driver records what it was asked to do.

Used by the demo, the tests and ``edge-agent simulate``; inputs come from the control socket
(``simulate``) or the MR01 UDP transport, so there is no simulated input driver beyond those.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from agent.drivers.interfaces import Action


class _Recorder:
    def __init__(self, name: str, log: deque[Action]) -> None:
        self._name, self._log = name, log

    def _record(self, op: str, **args: Any) -> None:
        self._log.append(Action(self._name, op, args))


class SimulatedRelay(_Recorder):
    async def open(self, door: str, seconds: int) -> None:
        self._record("open", door=door, seconds=seconds)


class SimulatedReader(_Recorder):
    async def signal(self, door: str, pattern: str) -> None:
        self._record("signal", door=door, pattern=pattern)


class SimulatedMonitor(_Recorder):
    async def ring(self, monitor: str, caller: str) -> None:
        self._record("ring", monitor=monitor, caller=caller)

    async def show_notice(self, monitor: str, text: str) -> None:
        self._record("show_notice", monitor=monitor, text=text)


class SimulatedCalls(_Recorder):
    async def ring_app(self, account: str, door: str) -> None:
        self._record("ring_app", account=account, door=door)

    async def forward_landline(self, target: str, door: str) -> None:
        self._record("forward_landline", target=target, door=door)


class SimulatedElevator(_Recorder):
    async def call(self, floors: tuple[str, ...], door: str) -> None:
        self._record("call", floors=floors, door=door)


class SimulatedLock(_Recorder):
    async def unlock(self, lock: str) -> None:
        self._record("unlock", lock=lock)


class SimulatedCamera(_Recorder):
    async def stream(self, camera: str, to: str) -> None:
        self._record("stream", camera=camera, to=to)


class SimulatedStorage(_Recorder):
    async def upload(self, clip: str) -> None:
        self._record("upload", clip=clip)


class SimulatedBooking(_Recorder):
    async def confirm(self, booking: str, door: str) -> None:
        self._record("confirm", booking=booking, door=door)


class SimulatedOutputs:
    """All output drivers; :attr:`done` holds the last 1,000 actions, oldest first."""

    def __init__(self) -> None:
        self.done: deque[Action] = deque(maxlen=1000)
        self.relay = SimulatedRelay("relay", self.done)
        self.reader = SimulatedReader("reader", self.done)
        self.monitor = SimulatedMonitor("monitor", self.done)
        self.calls = SimulatedCalls("calls", self.done)
        self.elevator = SimulatedElevator("elevator", self.done)
        self.lock = SimulatedLock("lock", self.done)
        self.camera = SimulatedCamera("camera", self.done)
        self.storage = SimulatedStorage("storage", self.done)
        self.booking = SimulatedBooking("booking", self.done)
