"""``committing``: running from the new slot, the health check decides: the broker reached within the
deadline and the local health command (if any) exits 0. Healthy: the slot is marked good and the job
executed (with Reset After Upgrade, in the same transaction, when the job asks); unhealthy: the job rolls
back, the slot is marked bad, and the daemon reboots into the old one."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from firmware.jobs import Job
from firmware.ports import Transaction
from firmware.steps.context import Context

log = structlog.get_logger("firmware.engine")


async def run(ctx: Context, job: Job) -> bool:
    assert job.target is not None
    healthy, detail = await _health(ctx)
    if not healthy:
        await ctx.move(job, "unhealthy", {"reason": "health_check_failed", "detail": detail})
        ctx.bootloader.mark_bad(job.target)  # after the job's end is persisted (machine.RESUME)
        return True
    ctx.bootloader.mark_good(job.target)  # committing, persisted, says so; done again if we die here
    reset: dict[str, int] = {}

    async def wipe(tx: Transaction) -> None:
        if job.claims.reset_after_upgrade:
            reset.update(await ctx.reset(tx))  # the agent's tables, through its port

    data: dict[str, Any] = {"slot": job.target}
    if job.claims.reset_after_upgrade:
        data["reset"] = reset  # filled by wipe() in the same transaction: what was wiped, by table
    await ctx.move(job, "healthy", data, also=wipe)
    if reset:
        log.warning("firmware_reset_after_upgrade", wiped=reset, kept=["identity", "trust roots", "documents"])
    return False


async def _health(ctx: Context) -> tuple[bool, str]:
    s = ctx.settings
    try:
        async with asyncio.timeout(s.health_deadline_seconds):
            await ctx.connected.wait()
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
