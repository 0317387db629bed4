"""What a step may use (:class:`Context`), and the record of an image this process streamed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from firmware.jobs import Job
from firmware.ports import Events, Store, Transaction
from firmware.settings import Settings
from firmware.slots import Bootloader, Slot, StreamingSlot


class Streamed(NamedTuple):
    """The image this process streamed and hashed: verifying it again would be a second pass over it for
    nothing (after a restart it is hashed again, the rare path)."""

    job_id: str
    sha256: str
    read_back: str | None  # a block-device slot's SHA-256 read from the device as it was streamed into


class Context(Protocol):
    """The engine as a step sees it: the daemon's ports, and the moves the steps share."""

    settings: Settings
    store: Store
    events: Events
    bootloader: Bootloader
    connected: asyncio.Event  # set while the session is subscribed: the health check waits for it
    rng: random.Random  # spreads download retries across a fleet
    job: Job | None  # the active job as last persisted
    progress: int | None  # bytes downloaded so far, while downloading
    streamed: Streamed | None

    def now(self) -> float:
        """Trusted time."""

    def monotonic(self) -> float:
        """A monotonic clock, for deadlines."""

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Sleep (a newer job or a cancel calls a supervised step off meanwhile)."""

    async def nap(self, seconds: float) -> None:
        """Sleep until ``seconds`` pass or the engine is woken (a job admitted, replaced, cancelled)."""

    def busy(self) -> str | None:
        """Why a reboot must wait now (a call, an open door), or None."""

    def zone(self) -> str | None:
        """The site's time zone, for a job's window."""

    def crash_point(self, name: str) -> None:
        """Where a test may kill the daemon."""

    def fault_point(self, name: str) -> None:
        """Where a test may make the step fail."""

    def slot(self, name: str) -> Slot:
        """Slot ``a`` or ``b``."""

    def image(self, job: Job) -> Path:
        """Where ``job``'s image is downloaded when it is not streamed into a slot."""

    def streaming(self, target: str) -> StreamingSlot | None:
        """The slot ``target`` if downloads go straight into it (a block device), else None."""

    def streamed_into(self, job: Job) -> StreamingSlot | None:
        """The slot ``job``'s image was downloaded into, if it was streamed into one."""

    def discard(self, job: Job) -> None:
        """Drop what was downloaded for ``job``."""

    def reset(self, tx: Transaction) -> Awaitable[dict[str, int]]:
        """Reset After Upgrade: the agent's wipe, in the commit's transaction; what was wiped, by table."""

    async def move_in(self, tx: Transaction, job: Job, happened: str, data: dict[str, Any] | None = None) -> Job:
        """Persist ``job``'s transition on ``happened`` and queue its event, in ``tx``."""

    async def move(
        self,
        job: Job,
        happened: str,
        data: dict[str, Any] | None = None,
        *,
        also: Callable[[Transaction], Awaitable[Any]] | None = None,
    ) -> Job:
        """:meth:`move_in` in a transaction of its own (``also`` first, in it); tell the daemon."""

    async def deferred(self, job: Job, reason: str) -> None:
        """Report that ``job`` waits, and why (a ``deferred`` event)."""

    def changed(self) -> None:
        """Tell the daemon the job moved (its state report goes out again)."""

    def reboot(self) -> None:
        """Ask the daemon to exit for the reboot."""
