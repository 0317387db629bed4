"""The engine's steps: what each state of ``firmware/machine.py``'s table does, one small module each.

Each step is ``async def run(ctx, job) -> bool`` (whether the daemon must reboot now) against
:class:`~firmware.steps.context.Context`: the ports the daemon handed the engine (store, events, clock,
bootloader, slots, the local side's busy and zone) and the moves every step shares (persist a transition
with its event, report a deferral, discard a download). A step persists each state before doing what it
names (``Context.move``); the engine (``firmware/engine.py``) keeps the loop, chooses the step by the
job's persisted state (``engine.STEPS``) and calls a supervised step off when the job changes.

| state | module | does |
| --- | --- | --- |
| pending | ``pending`` | waits until the job's ``at`` |
| downloading | ``download`` | fetches the image into a file or straight into the inactive slot |
| verifying | ``verify`` | checks size and SHA-256, waits for the window and for the door and calls to end |
| installing | ``install`` | writes the slot, reads it back, sets it to be tried once: reboot |
| rebooting | ``rebooting`` | the reboot has not happened yet: reboot |
| committing | ``commit`` | the health check on the new slot: commit (and reset) or roll back |
| (on start) | ``resume`` | ``machine.RESUME`` applied to what was persisted, given the slot booted |
"""
