"""``verifying``: the image's size and SHA-256 (hashed as it streamed, by this process, or hashed again),
then wait until the job may install and reboot: inside its window, no call in progress, no door open."""

from __future__ import annotations

import asyncio

from firmware import window
from firmware.jobs import Job
from firmware.slots import sha256_file
from firmware.steps.context import Context

_LONGEST_WAIT = 30.0  # seconds between looks at a window that has not opened
_BUSY_WAIT = 1.0  # seconds between looks at a call or an open door


async def run(ctx: Context, job: Job) -> bool:
    claims = job.claims
    assert claims.size is not None
    slot = ctx.streamed_into(job)
    if slot is not None:
        stream = slot.stream(str(claims.sha256), claims.size)
        size = stream.kept(claims.size)  # how far the device holds the image, as recorded
    else:
        image = ctx.image(job)
        size = image.stat().st_size if image.exists() else -1
    if size != claims.size:
        digest = ""
    elif ctx.streamed is not None and ctx.streamed.job_id == job.job_id:
        digest = ctx.streamed.sha256  # hashed as it was written, by this process: no second pass
    elif slot is not None:
        digest = (await asyncio.to_thread(stream.prefix_digest, claims.size)).hexdigest()
    else:
        digest = await asyncio.to_thread(sha256_file, image)
    if digest != claims.sha256:
        ctx.discard(job)
        detail = f"size {size}, expected {claims.size}" if size != claims.size else "SHA-256 differs"
        await ctx.move(job, "mismatch", {"reason": "verification_failed", "detail": detail})
        return False
    if await until_ready(ctx, job):
        await ctx.move(job, "verified")
    return False


async def until_ready(ctx: Context, job: Job) -> bool:
    """Wait until ``job`` may install and reboot. Each new reason is reported once (``deferred``); busy
    past ``defer_max_seconds`` fails the job (whether it may go on)."""
    reported: str | None = None
    busy_since: float | None = None
    while True:
        now = ctx.now()
        if not window.inside(job.claims.window, now, ctx.zone()):
            reason, wait = "outside_window", min(window.opens_in(job.claims.window, now, ctx.zone()), _LONGEST_WAIT)
            busy_since = None
        elif (busy := ctx.busy()) is not None:
            reason, wait = busy, _BUSY_WAIT
            busy_since = ctx.monotonic() if busy_since is None else busy_since
            if ctx.monotonic() - busy_since > ctx.settings.defer_max_seconds:
                ctx.discard(job)
                detail = f"{busy} for more than {ctx.settings.defer_max_seconds:g} s"
                await ctx.move(job, "deferred_too_long", {"reason": "deferred_too_long", "detail": detail})
                return False
        else:
            return True
        if reason != reported:
            await ctx.deferred(job, reason)
            reported = reason
        # A plain sleep: a newer job or a cancel calls this step off (the engine supervises it). Waiting
        # on the wake event here would spin while it stays set, starving the loop.
        await ctx.sleep(wait)
