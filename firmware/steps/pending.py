"""``pending``: wait until the job's ``at`` (a nap the engine's wake cuts short), then go on."""

from __future__ import annotations

from firmware.jobs import Job
from firmware.steps.context import Context
from protocol.timefmt import epoch_of

_LONGEST_NAP = 60.0  # seconds: trusted time is read again at least this often


async def run(ctx: Context, job: Job) -> bool:
    ctx.crash_point("firmware:pending")
    due = epoch_of(job.claims.at) if job.claims.at is not None else None
    if due is not None and ctx.now() < due:
        await ctx.nap(min(due - ctx.now(), _LONGEST_NAP))
        return False
    await ctx.move(job, "due")
    return False
