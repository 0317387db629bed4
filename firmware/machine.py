"""The upgrade's state machine: one table of transitions, one table of what a persisted state does on
start (STYLE.md: h11's and mender's habit). Pure data and two functions; ``firmware/engine.py`` runs it.

Each state is persisted (with its ``firmware`` event) *before* the side effect it names: a job in
``downloading`` may have part of the image; in ``installing`` the inactive slot may be half written;
in ``rebooting`` the slot is written, verified and set to be tried once. On start, :data:`RESUME`
says where each persisted state goes on; a state it does not name cannot be persisted mid-way.
A job that makes more than :data:`MAX_TRANSITIONS` transitions fails (a loop caught).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from agent.errors import IllegalTransition


class State(StrEnum):
    PENDING = "pending"  # accepted, waiting for its time
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"  # writing the inactive slot
    REBOOTING = "rebooting"  # slot written, verified, to be tried once; the daemon exits to boot it
    COMMITTING = "committing"  # running from the new slot: the health check decides
    EXECUTED = "executed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


TERMINAL: Final = frozenset({State.EXECUTED, State.FAILED, State.CANCELLED, State.ROLLED_BACK})
CANCELLABLE: Final = frozenset({State.PENDING, State.DOWNLOADING, State.VERIFYING})  # before installing

# (state, what happened) -> next state
TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (State.PENDING, "due"): State.DOWNLOADING,
    (State.PENDING, "cancel"): State.CANCELLED,
    (State.PENDING, "replaced"): State.CANCELLED,
    (State.DOWNLOADING, "downloaded"): State.VERIFYING,
    (State.DOWNLOADING, "download_failed"): State.FAILED,
    (State.DOWNLOADING, "cancel"): State.CANCELLED,
    (State.DOWNLOADING, "replaced"): State.CANCELLED,
    (State.VERIFYING, "verified"): State.INSTALLING,
    (State.VERIFYING, "mismatch"): State.FAILED,
    (State.VERIFYING, "cancel"): State.CANCELLED,
    (State.VERIFYING, "replaced"): State.CANCELLED,
    (State.PENDING, "edited"): State.PENDING,
    (State.DOWNLOADING, "edited"): State.PENDING,
    (State.VERIFYING, "edited"): State.PENDING,
    (State.INSTALLING, "installed"): State.REBOOTING,
    (State.INSTALLING, "booted_new"): State.COMMITTING,
    (State.INSTALLING, "install_failed"): State.FAILED,
    (State.REBOOTING, "booted_new"): State.COMMITTING,
    (State.REBOOTING, "booted_old"): State.ROLLED_BACK,
    (State.COMMITTING, "healthy"): State.EXECUTED,
    (State.COMMITTING, "unhealthy"): State.ROLLED_BACK,
    (State.COMMITTING, "booted_old"): State.ROLLED_BACK,
    # A step that raised unexpectedly (a defect): the job fails rather than the daemon (issue 12);
    # while committing, the new slot is rolled back as an unhealthy one would be.
    (State.PENDING, "fault"): State.FAILED,
    (State.DOWNLOADING, "fault"): State.FAILED,
    (State.VERIFYING, "fault"): State.FAILED,
    (State.INSTALLING, "fault"): State.FAILED,
    (State.COMMITTING, "fault"): State.ROLLED_BACK,
}

# What a state found persisted on start means (the daemon may have died at any instant in it).
RESUME: Final[dict[State, str]] = {
    State.PENDING: "wait for its time again",
    State.DOWNLOADING: "download again from the bytes already on disk (Range)",
    State.VERIFYING: "verify the downloaded image again",
    State.INSTALLING: "if the new slot booted, its try was set: commit it; otherwise install again",
    State.REBOOTING: "if the new slot booted: commit it; otherwise its try was spent: roll back",
    State.COMMITTING: "if the new slot booted: run the health check; otherwise roll back",
    State.EXECUTED: "nothing",
    State.FAILED: "nothing",
    State.CANCELLED: "nothing",
    State.ROLLED_BACK: "nothing",
}

MAX_TRANSITIONS: Final = 32


def step(state: State, happened: str) -> State:
    """The state after ``happened`` in ``state``."""
    try:
        return TRANSITIONS[(state, happened)]
    except KeyError:
        raise IllegalTransition(f"{happened!r} cannot happen in {state.value}") from None


def diagram() -> str:
    """The table as a Mermaid state diagram (docs/firmware.md)."""
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    for (state, happened), target in TRANSITIONS.items():
        lines.append(f"    {state.value} --> {target.value}: {happened}")
    for state in sorted(TERMINAL, key=lambda s: s.value):
        lines.append(f"    {state.value} --> [*]")
    return "\n".join(lines)
