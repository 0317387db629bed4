"""On start: ``machine.RESUME`` applied to the latest job as persisted, given the slot the bootloader just
booted; a job the table cannot go on with rolls back (:func:`roll_back`)."""

from __future__ import annotations

import structlog

from firmware import jobs, machine
from firmware.jobs import Job, Unreadable
from firmware.machine import TERMINAL, State
from firmware.steps.context import Context

log = structlog.get_logger("firmware.engine")


async def run(ctx: Context, booted: str) -> None:
    async with ctx.store.transaction("DEFERRED") as tx:
        found = await jobs.active(tx) or await jobs.last(tx)
    if found is None:
        return
    action = machine.on_start(found.state, found.target is not None and found.target == booted)
    if isinstance(found, Unreadable) or action == machine.ROLL_BACK:
        await roll_back(ctx, found, booted)
    elif action == "booted_old":  # the try was spent and the bootloader went back: never committed
        assert isinstance(found, Job)
        await ctx.move(found, action, {"slot": booted, "reason": "not_committed"})
    elif action not in (machine.GO_ON, machine.NOTHING):
        assert isinstance(found, Job)
        await ctx.move(found, action, {"slot": booted})


async def roll_back(ctx: Context, found: Job | Unreadable, booted: str) -> None:
    """A job the resume table cannot go on with: it ends rolled back (persisted first), its slot is
    marked bad, and a device running that slot reboots into the other."""
    why = found.why if isinstance(found, Unreadable) else f"{found.state.value} on the slot it installed"
    log.warning("firmware_job_unresumable", job_id=found.job_id, state=str(found.state), slot=booted, why=why)
    if found.state not in TERMINAL:
        data = {"job_id": found.job_id, "reason": "unresumable", "detail": why, "slot": booted}
        if isinstance(found, Job):
            data["version"] = found.version
        async with ctx.store.transaction() as tx:
            await jobs.set_state(
                tx, found.job_id, State.ROLLED_BACK, transitions=found.transitions + 1, reason="unresumable",
                target=found.target, now=ctx.now(),
            )  # fmt: skip
            await ctx.events.add_in(tx, "rolled_back", data, ctx.now())
        ctx.changed()
    if found.target is not None:
        ctx.bootloader.mark_bad(found.target)
        if found.target == booted:
            ctx.reboot()
