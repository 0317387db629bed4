"""The ``firmware_jobs`` table: one row per job, the history kept; the only SQL that touches it.

A row holds the verified ``firmware-job`` claims (typed again as they are read), the state of
``firmware/machine.py``, the slot it installs into once chosen and how many transitions it made. A row
this version cannot read (a state it does not know, claims that no longer validate: written by
another version of the agent, before a rollback) is :class:`Unreadable`, never an exception: the
engine rolls it back, as mender's ``LoadStateFromDb`` does with a state it does not know.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from firmware.machine import TERMINAL, State
from firmware.ports import Transaction
from protocol.claims import FirmwareJobClaims, decode, to_json

_COLUMNS: Final = "job_id, seq, state, claims, target, transitions, reason"


class Job(NamedTuple):
    """A job as persisted."""

    job_id: str
    seq: int
    state: State
    claims: FirmwareJobClaims
    target: str | None  # the slot it installs into, once chosen
    transitions: int
    reason: str | None

    @property
    def version(self) -> str:
        return str(self.claims.version)


class Unreadable(NamedTuple):
    """A job row this version cannot resume, and why."""

    job_id: str
    seq: int
    state: str
    target: str | None
    transitions: int
    why: str


def _load(row: tuple[Any, ...]) -> Job | Unreadable:
    job_id, seq, state, claims, target, transitions, reason = row
    try:
        known = State(state)
    except ValueError:
        return Unreadable(job_id, seq, state, target, transitions, f"state {state!r} is not one this version knows")
    try:
        typed = decode(FirmwareJobClaims, claims)
    except ValueError as exc:  # protocol.claims.Invalid is one
        return Unreadable(job_id, seq, state, target, transitions, f"its claims do not read: {str(exc)[:200]}")
    return Job(job_id, seq, known, typed, target, transitions, reason)


async def active(tx: Transaction) -> Job | Unreadable | None:
    """The job under way, if any (a row in a state this version does not know counts as under way)."""
    row = await tx.fetchone(
        f"SELECT {_COLUMNS} FROM firmware_jobs WHERE state NOT IN (?, ?, ?, ?) ORDER BY seq DESC LIMIT 1",  # noqa: S608
        tuple(s.value for s in TERMINAL),
    )
    return _load(row) if row else None


async def last(tx: Transaction) -> Job | Unreadable | None:
    """The most recent job, finished or not."""
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM firmware_jobs ORDER BY seq DESC, rowid DESC LIMIT 1")  # noqa: S608
    return _load(row) if row else None


async def insert(tx: Transaction, claims: FirmwareJobClaims, now: float, *, replacing: bool) -> None:
    """Store a new pending job (``replacing``: an edit of the row with the same id)."""
    if replacing:
        await tx.execute("DELETE FROM firmware_jobs WHERE job_id = ?", (claims.job_id,))
    await tx.execute(
        f"INSERT INTO firmware_jobs ({_COLUMNS}, updated) VALUES (?, ?, ?, ?, NULL, 0, NULL, ?)",  # noqa: S608
        (claims.job_id, claims.seq, State.PENDING.value, to_json(claims), now),
    )


async def set_state(
    tx: Transaction, job_id: str, state: State, *, transitions: int, reason: str | None, target: str | None, now: float
) -> None:
    """Record a transition."""
    await tx.execute(
        "UPDATE firmware_jobs SET state = ?, transitions = ?, reason = ?, target = ?, updated = ? WHERE job_id = ?",
        (state.value, transitions, reason, target, now, job_id),
    )


async def set_target(tx: Transaction, job_id: str, target: str) -> None:
    """Record the slot a job installs into, before anything is written there."""
    await tx.execute("UPDATE firmware_jobs SET target = ? WHERE job_id = ?", (target, job_id))
