"""The engine's :class:`~firmware.steps.context.Context`: the ports the daemon handed it, the active job
as last persisted, and the moves every step shares (a transition persisted with its event, a deferral
reported, a download discarded)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from firmware import jobs, machine
from firmware.backends import Backend
from firmware.jobs import Job
from firmware.machine import State
from firmware.ports import Events, Faults, NoFaults, Store, Transaction
from firmware.settings import Settings
from firmware.slots import Slot, StreamingSlot
from firmware.steps.context import Streamed

log = structlog.get_logger("firmware.engine")


class EngineContext:
    """What the steps work with (:class:`~firmware.steps.context.Context`), built by the daemon from its
    ports and handed to the engine."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        events: Events,
        now: Callable[[], float],
        data_dir: Path,
        *,
        backend: Backend,
        connected: asyncio.Event,
        on_change: Callable[[], None],
        on_reboot: Callable[[], None],
        reset: Callable[[Transaction], Awaitable[dict[str, int]]],
        busy: Callable[[], str | None],
        zone: Callable[[], str | None],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.settings, self.store, self.events = settings, store, events
        self.now, self.monotonic, self.sleep = now, monotonic, sleep  # injected, as trusted time is
        self.rng = rng or random.Random()  # noqa: S311 -- spreading retries, not secrets
        self.reset = reset  # Reset After Upgrade: the agent's wipe, in the commit's transaction
        self.busy, self.zone = busy, zone  # ports to the local side: why not reboot now; the site's time zone
        self.bootloader, self._slot = backend.bootloader, backend.slot
        self.connected = connected
        self.changed, self.reboot = on_change, on_reboot  # tell the daemon the job moved; ask it to reboot
        faults = faults or NoFaults()
        self.crash_point, self.fault_point = faults.crash_point, faults.fault_point
        self.dir = data_dir / "firmware"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wake = asyncio.Event()  # a job was admitted, replaced or cancelled: look again
        self.job: Job | None = None
        self.progress: int | None = None
        self.streamed: Streamed | None = None

    # -- slots and images --------------------------------------------------------------------------
    def slot(self, name: str) -> Slot:
        return self._slot(name)

    def image(self, job: Job) -> Path:
        return self.dir / f"{job.job_id}.img"

    def streaming(self, target: str) -> StreamingSlot | None:
        slot = self.slot(target)
        return slot if isinstance(slot, StreamingSlot) else None

    def streamed_into(self, job: Job) -> StreamingSlot | None:
        return self.streaming(job.target) if job.target is not None else None

    def room_for(self, job_id: str, streaming: StreamingSlot | None) -> int:
        """Bytes the image can take where it will be downloaded: the slot's size, or the download directory's
        free space (a slot that cannot be opened takes nothing)."""
        if streaming is None:
            return self._free_for(job_id)
        try:
            return streaming.capacity()
        except OSError as exc:
            log.error("firmware_slot_unreadable", error=str(exc))
            return 0

    def _free_for(self, job_id: str) -> int:
        """Bytes the download directory can take for ``job_id`` (its partial download counts as free)."""
        directory = self.dir if self.dir.exists() else self.dir.parent
        partial = self.dir / f"{job_id}.img"
        return shutil.disk_usage(directory).free + (partial.stat().st_size if partial.exists() else 0)

    def discard(self, job: Job) -> None:
        """Drop what was downloaded for ``job`` (a file; for a streamed slot, the record of how far it got)."""
        self.image(job).unlink(missing_ok=True)
        slot = self.streamed_into(job)
        if slot is not None and job.claims.size is not None:
            slot.stream(str(job.claims.sha256), job.claims.size).clear()

    # -- waiting -----------------------------------------------------------------------------------
    async def nap(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    # -- transitions -------------------------------------------------------------------------------
    async def move_in(self, tx: Transaction, job: Job, happened: str, data: dict[str, Any] | None = None) -> Job:
        state = machine.step(job.state, happened)
        transitions = job.transitions + 1
        reason = (data or {}).get("reason")
        if transitions > machine.MAX_TRANSITIONS:
            state, reason = State.FAILED, "transition_loop"
        await jobs.set_state(
            tx, job.job_id, state, transitions=transitions, reason=reason, target=job.target, now=self.now()
        )
        event = {"job_id": job.job_id, "version": job.version, **(data or {})}
        if reason is not None:
            event["reason"] = reason
        await self.events.add_in(tx, state.value, event, self.now())
        log.info("firmware_transition", job_id=job.job_id, state=state.value, happened=happened, reason=reason)
        return job._replace(state=state, transitions=transitions, reason=reason)

    async def move(
        self,
        job: Job,
        happened: str,
        data: dict[str, Any] | None = None,
        *,
        also: Callable[[Transaction], Awaitable[Any]] | None = None,
    ) -> Job:
        async with self.store.transaction() as tx:
            if also is not None:
                await also(tx)  # first: what it does may be told in the event (data is shared)
            moved = await self.move_in(tx, job, happened, data)
        self.job = moved
        self.changed()
        self.crash_point(f"firmware:{moved.state.value}")  # persisted, its side effect not yet done
        return moved

    async def deferred(self, job: Job, reason: str) -> None:
        data: dict[str, Any] = {"job_id": job.job_id, "version": job.version, "reason": reason}
        if job.claims.window is not None:
            data["window"] = {"start": job.claims.window.start, "end": job.claims.window.end, "zone": self.zone()}
        log.info("firmware_deferred", job_id=job.job_id, reason=reason)
        await self.events.add("deferred", data, self.now())
