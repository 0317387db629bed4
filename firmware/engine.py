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
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, NamedTuple

import structlog

from agent.errors import DownloadError, Transient
from agent.runtime.faults import crash_point, fault_point
from firmware import jobs, machine, window
from firmware.admission import Verdict, admit
from firmware.backends import Backend, backend
from firmware.download import Sink, fetch
from firmware.jobs import Job, Unreadable
from firmware.machine import TERMINAL, State
from firmware.ports import Events, Store, Transaction
from firmware.slots import Bootloader, DeviceStream, Slot, StreamingSlot, sha256_file
from protocol.backoff import Backoff
from protocol.claims import FirmwareJobClaims
from protocol.timefmt import epoch_of

log = structlog.get_logger("firmware.engine")

EXIT_REBOOT: Final = 75  # the daemon exits with this to boot the other slot; its supervisor restarts it
_FAULT_WAIT: Final = 5.0  # after a step failed and could not even be recorded
_DOWNLOAD_RETRY: Final = Backoff(1.0, 10.0)  # with jitter: a fleet given one job must not retry in step


class Settings(NamedTuple):
    """What the engine needs of the agent's config (``[firmware]``)."""

    model: str
    base_version: str  # the version of slot a before any upgrade (the config's firmware_version)
    max_size: int
    stall_seconds: float
    deadline_seconds: float
    attempts: int
    health_deadline_seconds: float
    health_command: tuple[str, ...] | None
    ca_file: Path | None
    defer_max_seconds: float = 3600.0  # busy (a call, an open door) this long before installing: the job fails
    read_back: bool = True  # read the written slot back and check it (one more pass over the image)


class Engine:
    """Runs firmware jobs for one daemon."""

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
        busy: Callable[[], str | None] = lambda: None,
        zone: Callable[[], str | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._settings, self._store, self._events, self._now = settings, store, events, now
        self._monotonic, self._sleep_for = monotonic, sleep  # injected, as trusted time is
        self._rng = rng or random.Random()  # noqa: S311 -- spreading retries, not secrets
        self._reset = reset  # Reset After Upgrade: the agent's wipe, in the commit's transaction
        self._busy, self._zone = busy, zone  # ports to the local side: why not reboot now; the site's time zone
        self._dir = data_dir / "firmware"
        self._dir.mkdir(parents=True, exist_ok=True)
        self.bootloader = backend.bootloader
        self._slot = backend.slot
        self._connected, self._on_change, self._on_reboot = connected, on_change, on_reboot
        self._wake = asyncio.Event()
        self.job: Job | None = None
        self.progress: int | None = None
        # (job id, SHA-256, read back) of the image this process streamed and hashed: verifying it again would be
        # a second pass over it for nothing (after a restart it is hashed again, the rare path); read back: the
        # block-device slot's SHA-256 read from the device as it was streamed into, or None.
        self._streamed: tuple[str, str, str | None] | None = None

    # -- what runs ---------------------------------------------------------------------------------
    def slot(self, name: str) -> Slot:
        return self._slot(name)

    @property
    def running_slot(self) -> str:
        return self.bootloader.booted()

    @property
    def running_version(self) -> str:
        return self.slot(self.running_slot).version() or self._settings.base_version

    def boot(self) -> str:
        """What the bootloader does at power-on: choose the slot (spending a pending try)."""
        chosen = self.bootloader.boot()
        log.info("firmware_booted", slot=chosen, version=self.running_version)
        return chosen

    # -- admission (inside the document's transaction) ---------------------------------------------
    async def admit_in(self, tx: Transaction, claims: FirmwareJobClaims) -> None:
        active = await jobs.active(tx)
        if isinstance(active, Unreadable):  # rolled back as the engine starts: not left to stand for long
            verdict = Verdict("reject", "busy", f"job {active.job_id} cannot be resumed and is being rolled back")
        else:
            streaming = self._streaming(self.bootloader.other())
            verdict = admit(
                claims,
                model=self._settings.model,
                running=self.running_version,
                max_size=self._settings.max_size,
                free=await asyncio.to_thread(self._room_for, claims.job_id, streaming),
                active=active,
                streaming=streaming is not None,
            )
        data = {"job_id": claims.job_id, "version": claims.version}
        now = self._now()
        if verdict.action == "reject":
            log.warning("firmware_job_refused", job_id=claims.job_id, reason=verdict.reason, detail=verdict.detail)
            await self._events.add_in(tx, "rejected", {**data, "reason": verdict.reason, "detail": verdict.detail}, now)
            return
        if verdict.replaces is not None:
            old = verdict.replaces
            happened = "cancel" if verdict.action == "cancel" else "edited" if verdict.action == "edit" else "replaced"
            extra = {} if verdict.action == "cancel" else {"replaced_by": claims.seq}
            await self._move_in(tx, old, happened, extra)
        if verdict.action in ("new", "edit"):
            await jobs.insert(tx, claims, now, replacing=verdict.action == "edit")
            at = _at(claims)
            await self._events.add_in(tx, "pending", {**data, "at": at}, now)
            log.info("firmware_job_pending", job_id=claims.job_id, version=claims.version, at=at)

    def wake(self) -> None:
        """A job was admitted, replaced or cancelled (committed): look again."""
        self._wake.set()

    # -- transitions -------------------------------------------------------------------------------
    async def _move_in(self, tx: Transaction, job: Job, happened: str, data: dict[str, Any] | None = None) -> Job:
        state = machine.step(job.state, happened)
        transitions = job.transitions + 1
        reason = (data or {}).get("reason")
        if transitions > machine.MAX_TRANSITIONS:
            state, reason = State.FAILED, "transition_loop"
        await jobs.set_state(
            tx, job.job_id, state, transitions=transitions, reason=reason, target=job.target, now=self._now()
        )
        event = {"job_id": job.job_id, "version": job.version, **(data or {})}
        if reason is not None:
            event["reason"] = reason
        await self._events.add_in(tx, state.value, event, self._now())
        log.info("firmware_transition", job_id=job.job_id, state=state.value, happened=happened, reason=reason)
        return job._replace(state=state, transitions=transitions, reason=reason)

    async def _move(
        self,
        job: Job,
        happened: str,
        data: dict[str, Any] | None = None,
        *,
        also: Callable[[Transaction], Any] | None = None,
    ) -> Job:
        async with self._store.transaction() as tx:
            if also is not None:
                await also(tx)  # first: what it does may be told in the event (data is shared)
            moved = await self._move_in(tx, job, happened, data)
        self.job = moved
        self._on_change()
        crash_point(f"firmware:{moved.state.value}")  # persisted, its side effect not yet done
        return moved

    async def _active(self) -> Job | None:
        async with self._store.transaction("DEFERRED") as tx:
            found = await jobs.active(tx)
        if isinstance(found, Unreadable):  # another version's row, met after start: roll it back now
            await self._roll_back(found, self.running_slot)
            found = None
        self.job = found
        return self.job

    # -- start -------------------------------------------------------------------------------------
    async def resume(self) -> None:
        """Apply the resume table (``machine.RESUME``) to the latest job, given the slot just booted."""
        async with self._store.transaction("DEFERRED") as tx:
            found = await jobs.active(tx) or await jobs.last(tx)
        if found is None:
            return
        booted = self.running_slot
        action = machine.on_start(found.state, found.target is not None and found.target == booted)
        if isinstance(found, Unreadable) or action == machine.ROLL_BACK:
            await self._roll_back(found, booted)
        elif action == "booted_old":  # the try was spent and the bootloader went back: never committed
            assert isinstance(found, Job)
            await self._move(found, action, {"slot": booted, "reason": "not_committed"})
        elif action not in (machine.GO_ON, machine.NOTHING):
            assert isinstance(found, Job)
            await self._move(found, action, {"slot": booted})

    async def _roll_back(self, found: Job | Unreadable, booted: str) -> None:
        """A job the resume table cannot go on with: it ends rolled back (persisted first), its slot is
        marked bad, and a device running that slot reboots into the other."""
        why = found.why if isinstance(found, Unreadable) else f"{found.state.value} on the slot it installed"
        log.warning("firmware_job_unresumable", job_id=found.job_id, state=str(found.state), slot=booted, why=why)
        if found.state not in TERMINAL:
            data = {"job_id": found.job_id, "reason": "unresumable", "detail": why, "slot": booted}
            if isinstance(found, Job):
                data["version"] = found.version
            async with self._store.transaction() as tx:
                await jobs.set_state(
                    tx, found.job_id, State.ROLLED_BACK, transitions=found.transitions + 1, reason="unresumable",
                    target=found.target, now=self._now(),
                )  # fmt: skip
                await self._events.add_in(tx, "rolled_back", data, self._now())
            self._on_change()
        if found.target is not None:
            self.bootloader.mark_bad(found.target)
            if found.target == booted:
                self._on_reboot()

    # -- running -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive the active job until cancelled; after asking for a reboot, wait to be stopped.

        A step that raises unexpectedly (a defect, whatever the job said) fails that job, logged with its
        traceback (``firmware_step_failed``), rather than ending the daemon.
        """
        while True:
            self._wake.clear()
            job = await self._active()
            if job is None:
                await self._wake.wait()
                continue
            try:
                await self._step(job)
            except Exception as exc:
                await self._fault(job, exc)

    async def _fault(self, job: Job, exc: Exception) -> None:
        log.exception("firmware_step_failed", job_id=job.job_id, state=job.state.value, error=repr(exc)[:200])
        data = {"reason": "internal_error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            current = await self._active()  # as persisted: the step may have moved it or chosen its slot
            if current is None or current.job_id != job.job_id:
                return  # it ended or was replaced meanwhile: nothing left to fail
            job = current
            if (job.state, "fault") in machine.TRANSITIONS:
                self._discard(job)
                moved = await self._move(job, "fault", data)
                if job.state in (State.INSTALLING, State.COMMITTING) and job.target is not None:
                    self.bootloader.mark_bad(job.target)  # never boot a slot whose install or check failed
                if moved.state is State.ROLLED_BACK:
                    self._on_reboot()
                    await asyncio.Event().wait()  # the daemon stops us
                return
        except Exception:
            log.exception("firmware_fault_not_recorded", job_id=job.job_id)
        await self._sleep_for(_FAULT_WAIT)  # not a hot loop on a job that keeps failing

    async def _step(self, job: Job) -> None:
        """Do what the active job's state calls for (one step)."""
        fault_point(f"firmware:{job.state.value}")
        if job.state is State.PENDING:
            crash_point("firmware:pending")
            due = epoch_of(job.claims.at) if job.claims.at is not None else None
            if due is not None and self._now() < due:
                await self._sleep(min(due - self._now(), 60.0))
                return
            await self._move(job, "due")
        elif job.state is State.DOWNLOADING:
            await self._supervised(job, self._download(job))
        elif job.state is State.VERIFYING:
            await self._supervised(job, self._verify(job))
        elif job.state is State.INSTALLING:
            if await self._install(job):
                await self._while_busy(job)
                self._on_reboot()
                await asyncio.Event().wait()  # the daemon stops us
        elif job.state is State.COMMITTING:
            if not await self._commit(job):
                self._on_reboot()
                await asyncio.Event().wait()
        else:  # REBOOTING found by run(): the reboot has not happened yet
            self._on_reboot()
            await asyncio.Event().wait()

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _supervised(self, job: Job, work: Any) -> None:
        """Run a step that a cancel or a newer job may call off (it is cancelled when the job changes)."""
        task = asyncio.ensure_future(work)
        while not task.done():
            waker = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait([task, waker], return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if not task.done():
                self._wake.clear()
                current = await self._active()
                if current is None or current.job_id != job.job_id or current.state is not job.state:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    log.info("firmware_step_called_off", job_id=job.job_id, state=job.state.value)
                    return
        task.result()

    def _image(self, job: Job) -> Path:
        return self._dir / f"{job.job_id}.img"

    def _streaming(self, target: str) -> StreamingSlot | None:
        """The slot ``target`` if downloads go straight into it (a block device), else None."""
        slot = self.slot(target)
        return slot if isinstance(slot, StreamingSlot) else None

    async def _destination(self, job: Job) -> tuple[Job, Sink | Path]:
        """Where ``job``'s image is downloaded: a file in the data directory, or straight into the inactive
        slot when it is a block device. That slot is recorded as the job's target and marked bad before
        its first byte is overwritten (its bootloader must never fall back onto a half-written image)."""
        claims = job.claims
        assert claims.size is not None
        target = job.target or self.bootloader.other()
        streaming = self._streaming(target)
        if streaming is None:
            return job, self._image(job)
        if job.target is None:
            async with self._store.transaction() as tx:
                await jobs.set_target(tx, job.job_id, target)
            job = job._replace(target=target)
        await asyncio.to_thread(self.bootloader.mark_bad, target)
        return job, streaming.stream(str(claims.sha256), claims.size)

    def _streamed_into(self, job: Job) -> StreamingSlot | None:
        """The slot ``job``'s image was downloaded into, if it was streamed into one."""
        return self._streaming(job.target) if job.target is not None else None

    def _room_for(self, job_id: str, streaming: StreamingSlot | None) -> int:
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
        directory = self._dir if self._dir.exists() else self._dir.parent
        partial = self._dir / f"{job_id}.img"
        return shutil.disk_usage(directory).free + (partial.stat().st_size if partial.exists() else 0)

    async def _download(self, job: Job) -> None:
        s, claims = self._settings, job.claims
        assert claims.url is not None
        assert claims.size is not None
        started, last_error = self._monotonic(), None
        job, destination = await self._destination(job)
        for attempt in range(s.attempts):
            left = s.deadline_seconds - (self._monotonic() - started)
            if left <= 0:
                break
            try:
                digest = await fetch(
                    claims.url,
                    destination,
                    claims.size,
                    stall=s.stall_seconds,
                    deadline=left,
                    ca_file=s.ca_file,
                    monotonic=self._monotonic,
                    progress=self._progress,
                )
            except DownloadError as exc:
                last_error = exc
                log.warning(
                    "firmware_download_attempt_failed",
                    job_id=job.job_id,
                    attempt=attempt,
                    reason=exc.reason,
                    error=str(exc),
                )
                if not isinstance(exc, Transient):
                    break
                await self._sleep_for(_DOWNLOAD_RETRY.delay(attempt, self._rng))
                continue
            self.progress = None
            if digest != claims.sha256:
                log.warning("firmware_digest_mismatch_while_streaming", job_id=job.job_id)
            read_back = destination.read_back if isinstance(destination, DeviceStream) else None
            self._streamed = (job.job_id, digest, read_back)
            await self._move(job, "downloaded", {"bytes": claims.size})
            return
        self._discard(job)
        reason = last_error.reason if last_error else "deadline"
        await self._move(job, "download_failed", {"reason": reason, "detail": str(last_error or "out of time")})

    def _progress(self, written: int) -> None:
        size = (self.job.claims.size or 0) if self.job is not None else 0
        if self.progress is not None and written * 2 >= size > self.progress * 2:
            crash_point("firmware:downloading:half")  # the first chunk past half the image
        self.progress = written

    async def _verify(self, job: Job) -> None:
        claims = job.claims
        assert claims.size is not None
        slot = self._streamed_into(job)
        if slot is not None:
            stream = slot.stream(str(claims.sha256), claims.size)
            size = stream.kept(claims.size)  # how far the device holds the image, as recorded
        else:
            image = self._image(job)
            size = image.stat().st_size if image.exists() else -1
        if size != claims.size:
            digest = ""
        elif self._streamed is not None and self._streamed[0] == job.job_id:
            digest = self._streamed[1]  # hashed as it was written, by this process: no second pass
        elif slot is not None:
            digest = (await asyncio.to_thread(stream.prefix_digest, claims.size)).hexdigest()
        else:
            digest = await asyncio.to_thread(sha256_file, image)
        if digest != claims.sha256:
            self._discard(job)
            detail = f"size {size}, expected {claims.size}" if size != claims.size else "SHA-256 differs"
            await self._move(job, "mismatch", {"reason": "verification_failed", "detail": detail})
            return
        if await self._until_ready(job):
            await self._move(job, "verified")

    async def _until_ready(self, job: Job) -> bool:
        """Wait until ``job`` may install and reboot: inside its window, no call in progress, no door open.
        Each new reason is reported once (``deferred``); busy past ``defer_max_seconds`` fails the job."""
        reported: str | None = None
        busy_since: float | None = None
        while True:
            now = self._now()
            if not window.inside(job.claims.window, now, self._zone()):
                reason, wait = "outside_window", min(window.opens_in(job.claims.window, now, self._zone()), 30.0)
                busy_since = None
            elif (busy := self._busy()) is not None:
                reason, wait = busy, 1.0
                busy_since = self._monotonic() if busy_since is None else busy_since
                if self._monotonic() - busy_since > self._settings.defer_max_seconds:
                    self._discard(job)
                    detail = f"{busy} for more than {self._settings.defer_max_seconds:g} s"
                    await self._move(job, "deferred_too_long", {"reason": "deferred_too_long", "detail": detail})
                    return False
            else:
                return True
            if reason != reported:
                await self._deferred(job, reason)
                reported = reason
            # A plain sleep: a newer job or a cancel calls this step off (_supervised). Waiting on the wake
            # event here would spin while it stays set, starving the loop.
            await self._sleep_for(wait)

    async def _while_busy(self, job: Job) -> None:
        """The slot is written: a call or an open door that began meanwhile is waited for (up to the bound)."""
        started = self._monotonic()
        busy = self._busy()
        if busy is not None:
            await self._deferred(job, busy)
        while busy is not None and self._monotonic() - started < self._settings.defer_max_seconds:
            await self._sleep_for(1.0)
            busy = self._busy()

    async def _deferred(self, job: Job, reason: str) -> None:
        data: dict[str, Any] = {"job_id": job.job_id, "version": job.version, "reason": reason}
        if job.claims.window is not None:
            data["window"] = {"start": job.claims.window.start, "end": job.claims.window.end, "zone": self._zone()}
        log.info("firmware_deferred", job_id=job.job_id, reason=reason)
        await self._events.add("deferred", data, self._now())

    async def _install(self, job: Job) -> bool:
        """Write the inactive slot, check it, set it to be tried once; whether to reboot now."""
        target = self.bootloader.other() if job.target is None else job.target
        if job.target is None:
            async with self._store.transaction() as tx:
                await jobs.set_target(tx, job.job_id, target)
            job = job._replace(target=target)
        slot, sha256 = self.slot(target), str(job.claims.sha256)
        streamed = self._streamed_into(job)
        try:
            if streamed is not None:  # already in the slot: it only needs its version
                await asyncio.to_thread(streamed.seal, job.version, sha256, int(job.claims.size or 0))
            else:
                await asyncio.to_thread(slot.write, self._image(job), job.version, sha256)
            crash_point("firmware:slot_written")
            written = await self._written(job, slot) if self._settings.read_back else sha256
        except OSError as exc:
            await self._move(job, "install_failed", {"reason": "install_failed", "detail": str(exc)})
            return False
        if written != sha256:
            await self._move(
                job, "install_failed", {"reason": "slot_mismatch", "detail": "the slot does not read back"}
            )
            self.bootloader.mark_bad(target)  # after the job's end is persisted (machine.RESUME)
            return False
        # Installing, persisted, says the try may be set; resume() sees the booted slot either way.
        self.bootloader.try_once(target)
        crash_point("firmware:try_set")
        fault_point("firmware:try_set")  # a defect here fails the job with the try set (machine.RESUME)
        await self._move(job, "installed", {"slot": target})
        self._discard(job)
        return True

    async def _written(self, job: Job, slot: Slot) -> str:
        """The slot's SHA-256 as the device holds it: read back while it was streamed into, or now."""
        if self._streamed is not None and self._streamed[0] == job.job_id and self._streamed[2] is not None:
            return self._streamed[2]
        return await asyncio.to_thread(slot.digest)

    async def _commit(self, job: Job) -> bool:
        """The health check on the new slot: commit it (and reset if asked), or roll back. Whether healthy."""
        assert job.target is not None
        healthy, detail = await self._health()
        if not healthy:
            await self._move(job, "unhealthy", {"reason": "health_check_failed", "detail": detail})
            self.bootloader.mark_bad(job.target)  # after the job's end is persisted (machine.RESUME)
            return False
        self.bootloader.mark_good(job.target)  # committing, persisted, says so; done again if we die here
        reset: dict[str, int] = {}

        async def wipe(tx: Transaction) -> None:
            if job.claims.reset_after_upgrade:
                reset.update(await self._reset(tx))  # the agent's tables, through its port

        data: dict[str, Any] = {"slot": job.target}
        if job.claims.reset_after_upgrade:
            data["reset"] = reset  # filled by wipe() in the same transaction: what was wiped, by table
        await self._move(job, "healthy", data, also=wipe)
        if reset:
            log.warning("firmware_reset_after_upgrade", wiped=reset, kept=["identity", "trust roots", "documents"])
        return True

    async def _health(self) -> tuple[bool, str]:
        s = self._settings
        try:
            async with asyncio.timeout(s.health_deadline_seconds):
                await self._connected.wait()
        except TimeoutError:
            return False, f"the broker was not reached within {s.health_deadline_seconds:g} s"
        if s.health_command:
            try:
                process = await asyncio.create_subprocess_exec(
                    *s.health_command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
                async with asyncio.timeout(s.health_deadline_seconds):
                    code = await process.wait()
            except (OSError, TimeoutError) as exc:
                return False, f"the local health check could not run: {exc}"
            if code != 0:
                return False, f"the local health check exited {code}"
        return True, ""

    def _discard(self, job: Job) -> None:
        """Drop what was downloaded for ``job`` (a file; for a streamed slot, the record of how far it got)."""
        self._image(job).unlink(missing_ok=True)
        slot = self._streamed_into(job)
        if slot is not None and job.claims.size is not None:
            slot.stream(str(job.claims.sha256), job.claims.size).clear()

    async def status(self) -> dict[str, Any]:
        """For ``edge-agent status``."""
        return await firmware_status(self._store, self.bootloader, self.running_version, self.progress)


def _at(claims: FirmwareJobClaims) -> str | None:
    """The job's ``at`` as the document wrote it (RFC 3339), for events and the status."""
    return claims.model_dump(mode="json", include={"at"}).get("at")


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


def firmware_settings(config: Any) -> Settings:
    """The engine's settings from the agent's config."""
    f = config.firmware
    return Settings(
        model=config.model,
        base_version=config.firmware_version,
        max_size=f.max_size,
        stall_seconds=f.stall_seconds,
        deadline_seconds=f.deadline_seconds,
        attempts=f.attempts,
        health_deadline_seconds=f.health_deadline_seconds,
        health_command=f.health_command,
        ca_file=f.ca_file,
        defer_max_seconds=f.defer_max_seconds,
        read_back=f.read_back,
    )
