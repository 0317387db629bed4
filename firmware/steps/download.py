"""``downloading``: fetch the image, retried with jitter until the attempts or the deadline run out.

Into a file in the data directory, or straight into the inactive slot when it is a block device: that
slot is recorded as the job's target and marked bad before its first byte is overwritten (its bootloader
must never fall back onto a half-written image)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import structlog

from agent.errors import DownloadError, Transient
from firmware import jobs
from firmware.download import Sink, fetch
from firmware.jobs import Job
from firmware.slots import DeviceStream
from firmware.steps.context import Context, Streamed
from protocol.backoff import Backoff

log = structlog.get_logger("firmware.engine")

RETRY: Final = Backoff(1.0, 10.0)  # with jitter: a fleet given one job must not retry in step


async def run(ctx: Context, job: Job) -> bool:
    s, claims = ctx.settings, job.claims
    assert claims.url is not None
    assert claims.size is not None
    started, last_error = ctx.monotonic(), None
    job, destination = await _destination(ctx, job)

    def progress(written: int) -> None:
        size = (ctx.job.claims.size or 0) if ctx.job is not None else 0
        if ctx.progress is not None and written * 2 >= size > ctx.progress * 2:
            ctx.crash_point("firmware:downloading:half")  # the first chunk past half the image
        ctx.progress = written

    for attempt in range(s.attempts):
        left = s.deadline_seconds - (ctx.monotonic() - started)
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
                monotonic=ctx.monotonic,
                progress=progress,
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
            await ctx.sleep(RETRY.delay(attempt, ctx.rng))
            continue
        ctx.progress = None
        if digest != claims.sha256:
            log.warning("firmware_digest_mismatch_while_streaming", job_id=job.job_id)
        read_back = destination.read_back if isinstance(destination, DeviceStream) else None
        ctx.streamed = Streamed(job.job_id, digest, read_back)
        await ctx.move(job, "downloaded", {"bytes": claims.size})
        return False
    ctx.discard(job)
    reason = last_error.reason if last_error else "deadline"
    await ctx.move(job, "download_failed", {"reason": reason, "detail": str(last_error or "out of time")})
    return False


async def _destination(ctx: Context, job: Job) -> tuple[Job, Sink | Path]:
    """Where ``job``'s image is downloaded: a file, or a stream into the inactive slot (its target)."""
    claims = job.claims
    assert claims.size is not None
    target = job.target or ctx.bootloader.other()
    streaming = ctx.streaming(target)
    if streaming is None:
        return job, ctx.image(job)
    if job.target is None:
        async with ctx.store.transaction() as tx:
            await jobs.set_target(tx, job.job_id, target)
        job = job._replace(target=target)
    await asyncio.to_thread(ctx.bootloader.mark_bad, target)
    return job, streaming.stream(str(claims.sha256), claims.size)
