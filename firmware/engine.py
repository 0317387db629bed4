"""The upgrade engine: firmware-job documents in, the state machine of ``firmware/machine.py`` run
against a downloader, the slots and the bootloader, every transition persisted with its event.

Theory of operation. A verified ``firmware-job`` is judged by :func:`admit` (pure) in the
transaction that stores the document: refused (``wrong_model``, ``downgrade``, ``too_large``, ``no_space``,
``busy``, ``too_late``, ``unknown_job``: a ``firmware`` ``rejected`` event), a new job (``pending``),
an edit of the pending one, or a cancel. :meth:`Engine.run` then drives the one active job through
the table: each step persists its state (and queues its event) *before* doing what the state names;
on start, :meth:`Engine.resume` applies the resume table to whatever was persisted, knowing which
slot the bootloader just booted. Installing ends with the daemon exiting with
:data:`EXIT_REBOOT`; its supervisor starts it again, which is the reboot. Upgrades are never gated
by billing (DOMAIN.md: a lapsed device still takes security fixes).

The engine keeps the loop and the choice of step (:data:`STEPS`); what each state does is a small module
of ``firmware/steps/`` working against a :class:`~firmware.steps.context.Context`: the engine is handed one
(``firmware/context.py``'s, which the daemon builds from its ports, ``firmware/ports.py``: the store, the
events, the clocks, the local side's busy and zone, the crash and fault points).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog

from firmware import jobs, machine
from firmware.admission import Verdict, admit
from firmware.backends import backend
from firmware.context import EngineContext
from firmware.jobs import Job, Unreadable
from firmware.machine import State
from firmware.ports import Store, Transaction
from firmware.slots import Bootloader, Slot
from firmware.steps import commit, download, install, pending, rebooting, resume, verify
from firmware.steps.context import Context
from protocol.claims import FirmwareJobClaims, rfc3339

log = structlog.get_logger("firmware.engine")

EXIT_REBOOT: Final = 75  # the daemon exits with this to boot the other slot; its supervisor restarts it
_FAULT_WAIT: Final = 5.0  # after a step failed and could not even be recorded

Step = Callable[[Context, Job], Awaitable[bool]]  # whether the daemon must reboot now

# What each persisted state does (firmware/steps/), and whether a cancel or a newer job may call it off.
STEPS: Final[Mapping[State, tuple[Step, bool]]] = {
    State.PENDING: (pending.run, False),
    State.DOWNLOADING: (download.run, True),
    State.VERIFYING: (verify.run, True),
    State.INSTALLING: (install.run, False),
    State.REBOOTING: (rebooting.run, False),
    State.COMMITTING: (commit.run, False),
}


class Engine:
    """Runs firmware jobs for one daemon: the loop, admission, and what the daemon asks of it."""

    def __init__(self, context: EngineContext) -> None:
        """``context``: the ports the daemon hands the engine, built into what its steps work with."""
        self._ctx = context
        self.bootloader: Bootloader = self._ctx.bootloader

    # -- what runs ---------------------------------------------------------------------------------
    @property
    def job(self) -> Job | None:
        """The active job as last persisted."""
        return self._ctx.job

    @property
    def progress(self) -> int | None:
        """Bytes downloaded so far, while downloading."""
        return self._ctx.progress

    def slot(self, name: str) -> Slot:
        return self._ctx.slot(name)

    @property
    def running_slot(self) -> str:
        return self.bootloader.booted()

    @property
    def running_version(self) -> str:
        return self.slot(self.running_slot).version() or self._ctx.settings.base_version

    def boot(self) -> str:
        """What the bootloader does at power-on: choose the slot (spending a pending try)."""
        chosen = self.bootloader.boot()
        log.info("firmware_booted", slot=chosen, version=self.running_version)
        return chosen

    # -- admission (inside the document's transaction) ---------------------------------------------
    async def admit_in(self, tx: Transaction, claims: FirmwareJobClaims) -> None:
        ctx = self._ctx
        active = await jobs.active(tx)
        if isinstance(active, Unreadable):  # rolled back as the engine starts: not left to stand for long
            verdict = Verdict("reject", "busy", f"job {active.job_id} cannot be resumed and is being rolled back")
        else:
            streaming = ctx.streaming(self.bootloader.other())
            verdict = admit(
                claims,
                model=ctx.settings.model,
                running=self.running_version,
                max_size=ctx.settings.max_size,
                free=await asyncio.to_thread(ctx.room_for, claims.job_id, streaming),
                active=active,
                streaming=streaming is not None,
            )
        data = {"job_id": claims.job_id, "version": claims.version}
        now = ctx.now()
        if verdict.action == "reject":
            log.warning("firmware_job_refused", job_id=claims.job_id, reason=verdict.reason, detail=verdict.detail)
            await ctx.events.add_in(tx, "rejected", {**data, "reason": verdict.reason, "detail": verdict.detail}, now)
            return
        if verdict.replaces is not None:
            old = verdict.replaces
            happened = "cancel" if verdict.action == "cancel" else "edited" if verdict.action == "edit" else "replaced"
            extra = {} if verdict.action == "cancel" else {"replaced_by": claims.seq}
            await ctx.move_in(tx, old, happened, extra)
        if verdict.action in ("new", "edit"):
            await jobs.insert(tx, claims, now, replacing=verdict.action == "edit")
            at = _at(claims)
            await ctx.events.add_in(tx, "pending", {**data, "at": at}, now)
            log.info("firmware_job_pending", job_id=claims.job_id, version=claims.version, at=at)

    def wake(self) -> None:
        """A job was admitted, replaced or cancelled (committed): look again."""
        self._ctx.wake.set()

    # -- start -------------------------------------------------------------------------------------
    async def resume(self) -> None:
        """Apply the resume table (``machine.RESUME``) to the latest job, given the slot just booted."""
        await resume.run(self._ctx, self.running_slot)

    async def _active(self) -> Job | None:
        ctx = self._ctx
        async with ctx.store.transaction("DEFERRED") as tx:
            found = await jobs.active(tx)
        if isinstance(found, Unreadable):  # another version's row, met after start: roll it back now
            await resume.roll_back(ctx, found, self.running_slot)
            found = None
        ctx.job = found
        return found

    # -- running -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive the active job until cancelled; after asking for a reboot, wait to be stopped.

        A step that raises unexpectedly (a defect, whatever the job said) fails that job, logged with its
        traceback (``firmware_step_failed``), rather than ending the daemon.
        """
        ctx = self._ctx
        while True:
            ctx.wake.clear()
            job = await self._active()
            if job is None:
                await ctx.wake.wait()
                continue
            try:
                await self._step(job)
            except Exception as exc:
                await self._fault(job, exc)

    async def _step(self, job: Job) -> None:
        """Do what the active job's state calls for (one step); reboot if it says so."""
        self._ctx.fault_point(f"firmware:{job.state.value}")
        step, supervised = STEPS[job.state]
        if supervised:
            await self._supervised(job, step(self._ctx, job))
        elif await step(self._ctx, job):
            self._ctx.reboot()
            await asyncio.Event().wait()  # the daemon stops us

    async def _fault(self, job: Job, exc: Exception) -> None:
        ctx = self._ctx
        log.exception("firmware_step_failed", job_id=job.job_id, state=job.state.value, error=repr(exc)[:200])
        data = {"reason": "internal_error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            current = await self._active()  # as persisted: the step may have moved it or chosen its slot
            if current is None or current.job_id != job.job_id:
                return  # it ended or was replaced meanwhile: nothing left to fail
            job = current
            if (job.state, "fault") in machine.TRANSITIONS:
                ctx.discard(job)
                moved = await ctx.move(job, "fault", data)
                if job.state in (State.INSTALLING, State.COMMITTING) and job.target is not None:
                    self.bootloader.mark_bad(job.target)  # never boot a slot whose install or check failed
                if moved.state is State.ROLLED_BACK:
                    ctx.reboot()
                    await asyncio.Event().wait()  # the daemon stops us
                return
        except Exception:
            log.exception("firmware_fault_not_recorded", job_id=job.job_id)
        await ctx.sleep(_FAULT_WAIT)  # not a hot loop on a job that keeps failing

    async def _supervised(self, job: Job, work: Awaitable[bool]) -> None:
        """Run a step that a cancel or a newer job may call off (it is cancelled when the job changes)."""
        ctx = self._ctx
        task = asyncio.ensure_future(work)
        while not task.done():
            waker = asyncio.ensure_future(ctx.wake.wait())
            await asyncio.wait([task, waker], return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if not task.done():
                ctx.wake.clear()
                current = await self._active()
                if current is None or current.job_id != job.job_id or current.state is not job.state:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    log.info("firmware_step_called_off", job_id=job.job_id, state=job.state.value)
                    return
        task.result()

    async def status(self) -> dict[str, Any]:
        """For ``edge-agent status``."""
        return await firmware_status(self._ctx.store, self.bootloader, self.running_version, self._ctx.progress)


def _at(claims: FirmwareJobClaims) -> str | None:
    """The job's ``at`` as the document wrote it (RFC 3339), for events and the status."""
    return None if claims.at is None else rfc3339(claims.at)


async def firmware_status(
    store: Store, bootloader: Bootloader, running_version: str, downloaded: int | None = None
) -> dict[str, Any]:
    """The slot and version running and the latest job (read-only: works beside a running daemon)."""
    async with store.transaction("DEFERRED") as tx:
        job = await jobs.last(tx)
    shown: dict[str, Any] | None = None
    if isinstance(job, Unreadable):
        shown = {"job_id": job.job_id, "version": None, "state": job.state, "reason": job.why, "at": None,
                 "target_slot": job.target, "downloaded": None}  # fmt: skip
    elif job is not None:
        shown = {
            "job_id": job.job_id,
            "version": job.version,
            "state": job.state.value,
            "reason": job.reason,
            "at": _at(job.claims),
            "target_slot": job.target,
            "downloaded": downloaded,
        }
    return {"version": running_version, "slot": bootloader.booted(), "job": shown}


async def offline_status(config: Any, store: Store) -> dict[str, Any]:
    """:func:`firmware_status` without an engine (``edge-agent status``)."""
    bootloader, slot = backend(config)
    version = slot(bootloader.booted()).version() or config.firmware_version
    return await firmware_status(store, bootloader, version)
