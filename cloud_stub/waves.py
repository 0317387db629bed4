"""Phased rollouts: an upgrade that goes out in waves and stops itself (docs/cloud.md "Phased rollouts").

Pure: the waves of a device list, and one step of a rollout given each device's status now. The
ledger keeps the rollout's row (``cloud_stub/rollouts.py``) and the cloud service applies
:func:`advance` on every pass, before it issues the devices' jobs: only devices of released waves get
the job.

One table of what a rollout does, by its state:

running
    a released wave whose share of ``Failed`` (failed, rolled back, refused) passes ``max_failures``
    pauses it; once the last released wave finished (every device Executed, Failed or Cancelled) and
    ``wait`` seconds passed, the next wave is released; the last wave finished: completed.
paused
    nothing until an operator resumes it (the waves that paused it are then excused) or cancels it.
cancelled
    nothing more is released; devices of released waves that have not started get a cancel.
completed
    nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

RUNNING: Final = "running"
PAUSED: Final = "paused"
CANCELLED: Final = "cancelled"
COMPLETED: Final = "completed"
FINISHED: Final = frozenset({"Executed", "Failed", "Cancelled"})  # a device's upgrade statuses that are final


class Plan(NamedTuple):
    """How a rollout's devices are split: ``size`` devices a wave, or ``percent`` of them."""

    size: int | None
    percent: float | None
    wait: float  # seconds between a wave finishing and the next being released
    max_failures: float  # share (0-1) of a wave failed that pauses the rollout


class Progress(NamedTuple):
    """What the ledger keeps of a rollout between passes."""

    state: str
    released: int  # waves released so far (the first at once)
    excused: int  # waves an operator resumed past: their failures no longer pause it
    finished_at: float | None  # when the last released wave finished (the wait runs from then)
    reason: str | None = None  # why it paused


def waves(devices: Sequence[str], plan: Plan) -> list[list[str]]:
    """``devices`` (in the upgrade's order) split into waves: ``size`` each, or ``percent`` of them
    (rounded up, at least one device)."""
    if not devices:
        return []
    if plan.size is not None:
        size = plan.size
    else:
        assert plan.percent is not None
        size = max(1, math.ceil(len(devices) * plan.percent / 100))
    return [list(devices[i : i + size]) for i in range(0, len(devices), size)]


def failed_share(wave: Sequence[str], statuses: Mapping[str, str]) -> tuple[int, float]:
    """How many of ``wave`` failed, and their share of it."""
    failed = sum(1 for device in wave if statuses.get(device) == "Failed")
    return failed, failed / len(wave)


def advance(
    progress: Progress, split: Sequence[Sequence[str]], statuses: Mapping[str, str], plan: Plan, now: float
) -> Progress:
    """One pass of the table in the module docstring."""
    if progress.state != RUNNING:
        return progress
    for index in range(progress.excused, progress.released):
        failed, share = failed_share(split[index], statuses)
        if share > plan.max_failures:
            reason = (
                f"wave {index + 1}: {failed} of {len(split[index])} devices failed "
                f"({share:.0%}, more than {plan.max_failures:.0%})"
            )
            return progress._replace(state=PAUSED, reason=reason)
    last = split[progress.released - 1]
    if not all(statuses.get(device) in FINISHED for device in last):
        return progress
    if progress.released == len(split):
        return progress._replace(state=COMPLETED, finished_at=progress.finished_at or now)
    finished_at = progress.finished_at if progress.finished_at is not None else now
    if now - finished_at >= plan.wait:
        return progress._replace(released=progress.released + 1, finished_at=None)
    return progress._replace(finished_at=finished_at)


def resume(progress: Progress) -> Progress:
    """An operator resumes a paused rollout: the waves released so far are excused."""
    return progress._replace(state=RUNNING, excused=progress.released, reason=None)
