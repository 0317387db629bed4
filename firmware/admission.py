"""Whether a verified ``firmware-job`` document starts, edits, cancels or is refused: pure."""

from __future__ import annotations

from typing import NamedTuple

from firmware.jobs import Job
from firmware.machine import CANCELLABLE
from protocol.claims import FirmwareJobClaims
from protocol.version import newer


class Verdict(NamedTuple):
    """What to do with a verified job document."""

    action: str  # "new", "edit", "cancel", "reject"
    reason: str | None = None
    detail: str = ""
    replaces: Job | None = None


HEADROOM = 8 * 1024 * 1024  # left free beside an image: the database and the logs go on growing


def admit(
    claims: FirmwareJobClaims,
    *,
    model: str,
    running: str,
    max_size: int,
    free: int,
    active: Job | None,
    streaming: bool = False,
) -> Verdict:
    """Judge a verified job document against what runs and what is under way; ``free``: bytes the
    download directory can still take (what this job has already downloaded counted as free), or, when
    downloads go straight into the slot (``streaming``), the slot's size."""
    if claims.cancel:
        if active is None or active.job_id != claims.job_id:
            return Verdict("reject", "unknown_job", f"no job {claims.job_id} is under way")
        if active.state not in CANCELLABLE:
            return Verdict("reject", "too_late", f"job {claims.job_id} is already {active.state.value}")
        return Verdict("cancel", replaces=active)
    assert claims.model is not None
    assert claims.version is not None
    assert claims.size is not None
    if claims.model != model:
        return Verdict("reject", "wrong_model", f"the job is for {claims.model}; this device is a {model}")
    if not claims.allow_downgrade and not newer(claims.version, running):
        return Verdict("reject", "downgrade", f"{claims.version} is not newer than {running}, the version running")
    if claims.size > max_size:
        return Verdict("reject", "too_large", f"{claims.size} bytes is over this device's cap of {max_size}")
    if streaming and claims.size > free:
        return Verdict("reject", "no_space", f"{claims.size} bytes do not fit: the slot holds {free}")
    if not streaming and claims.size + HEADROOM > free:
        return Verdict("reject", "no_space", f"{claims.size} bytes do not fit: {free} free in the download directory")
    if active is not None:
        if active.state not in CANCELLABLE:
            return Verdict("reject", "busy", f"job {active.job_id} is {active.state.value}")
        return Verdict("edit" if active.job_id == claims.job_id else "new", replaces=active)
    return Verdict("new")
