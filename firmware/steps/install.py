"""``installing``: write the inactive slot (or seal the image streamed into it), read it back, set it to
be tried once; then wait for a call or an open door that began meanwhile (up to the bound) and reboot."""

from __future__ import annotations

import asyncio

from firmware import jobs
from firmware.jobs import Job
from firmware.slots import Slot
from firmware.steps.context import Context

_BUSY_WAIT = 1.0  # seconds between looks at a call or an open door


async def run(ctx: Context, job: Job) -> bool:
    if not await _install(ctx, job):
        return False
    await _while_busy(ctx, job)
    return True


async def _install(ctx: Context, job: Job) -> bool:
    """Write the inactive slot, check it, set it to be tried once; whether to reboot now."""
    target = ctx.bootloader.other() if job.target is None else job.target
    if job.target is None:
        async with ctx.store.transaction() as tx:
            await jobs.set_target(tx, job.job_id, target)
        job = job._replace(target=target)
    slot, sha256 = ctx.slot(target), str(job.claims.sha256)
    streamed = ctx.streamed_into(job)
    try:
        if streamed is not None:  # already in the slot: it only needs its version
            await asyncio.to_thread(streamed.seal, job.version, sha256, int(job.claims.size or 0))
        else:
            await asyncio.to_thread(slot.write, ctx.image(job), job.version, sha256)
        ctx.crash_point("firmware:slot_written")
        written = await _written(ctx, job, slot) if ctx.settings.read_back else sha256
    except OSError as exc:
        await ctx.move(job, "install_failed", {"reason": "install_failed", "detail": str(exc)})
        return False
    if written != sha256:
        await ctx.move(job, "install_failed", {"reason": "slot_mismatch", "detail": "the slot does not read back"})
        ctx.bootloader.mark_bad(target)  # after the job's end is persisted (machine.RESUME)
        return False
    # Installing, persisted, says the try may be set; resume sees the booted slot either way.
    ctx.bootloader.try_once(target)
    ctx.crash_point("firmware:try_set")
    ctx.fault_point("firmware:try_set")  # a defect here fails the job with the try set (machine.RESUME)
    await ctx.move(job, "installed", {"slot": target})
    ctx.discard(job)
    return True


async def _written(ctx: Context, job: Job, slot: Slot) -> str:
    """The slot's SHA-256 as the device holds it: read back while it was streamed into, or now."""
    streamed = ctx.streamed
    if streamed is not None and streamed.job_id == job.job_id and streamed.read_back is not None:
        return streamed.read_back
    return await asyncio.to_thread(slot.digest)


async def _while_busy(ctx: Context, job: Job) -> None:
    """The slot is written: a call or an open door that began meanwhile is waited for (up to the bound)."""
    started = ctx.monotonic()
    busy = ctx.busy()
    if busy is not None:
        await ctx.deferred(job, busy)
    while busy is not None and ctx.monotonic() - started < ctx.settings.defer_max_seconds:
        await ctx.sleep(_BUSY_WAIT)
        busy = ctx.busy()
