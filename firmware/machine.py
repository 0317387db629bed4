"""The upgrade's state machine: one table of transitions, one table of what a persisted state does on
start (STYLE.md: h11's and mender's habit). Pure data and two functions; ``firmware/engine.py`` runs it.

Each state is persisted (with its ``firmware`` event) *before* the side effect it names: a job in
``downloading`` may have part of the image; in ``installing`` the inactive slot may be half written;
in ``rebooting`` the slot is written, verified and set to be tried once. On start, :data:`RESUME`
says where each persisted state goes on, by the slot just booted; anything else rolls back.

The bootloader is told only what a persisted state already says: ``installing`` is persisted before
the try is set, ``committing`` before the slot is marked good, and a job's end (``failed``,
``rolled_back``) before its slot is marked bad. A crash between the two is caught on start by the
same table: the act is done again (each is idempotent) or the job rolls back.
A job that makes more than :data:`MAX_TRANSITIONS` transitions fails (a loop caught).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, NamedTuple

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
    (State.VERIFYING, "deferred_too_long"): State.FAILED,  # busy past defer_max_seconds: never rebooted mid-call
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

GO_ON: Final = "go_on"  # on start: the state's step runs again (each step can be done again from its start)
ROLL_BACK: Final = "roll_back"  # on start: the job ends rolled back; its slot is marked bad, and left if booted
NOTHING: Final = "nothing"  # on start: nothing to do


class Resume(NamedTuple):
    """What a job found persisted in a state does on start, by the slot the bootloader just booted:
    the job's target (``on_target``) or any other (``on_other``). Each is an event of
    :data:`TRANSITIONS`, :data:`GO_ON`, :data:`ROLL_BACK` or :data:`NOTHING`."""

    on_target: str
    on_other: str


# The daemon may have died at any instant in a state; each state persisted says where to go on. A job has
# no target before it installs, so a state before installing never finds its target booted: were it to,
# the job rolls back, as does a state this version does not know (mender's LoadStateFromDb).
RESUME: Final[dict[State, Resume]] = {
    State.PENDING: Resume(ROLL_BACK, GO_ON),  # wait for its time again
    State.DOWNLOADING: Resume(ROLL_BACK, GO_ON),  # download again from the bytes already on disk (Range)
    State.VERIFYING: Resume(ROLL_BACK, GO_ON),  # verify the downloaded image again
    # the try was set once the slot was written: booted, it goes on to its check; otherwise install again
    State.INSTALLING: Resume("booted_new", GO_ON),
    State.REBOOTING: Resume("booted_new", "booted_old"),  # not booted: the try was spent, never committed
    State.COMMITTING: Resume(GO_ON, "booted_old"),  # the health check again (committing is idempotent)
    State.EXECUTED: Resume(NOTHING, NOTHING),
    # a slot is marked bad after the job's end is persisted: a crash between the two may boot it once more
    State.FAILED: Resume(ROLL_BACK, NOTHING),
    State.CANCELLED: Resume(NOTHING, NOTHING),
    State.ROLLED_BACK: Resume(ROLL_BACK, NOTHING),
}


def on_start(state: str, booted_target: bool) -> str:
    """What a job persisted in ``state`` does on start (:data:`RESUME`); anything else rolls back."""
    try:
        known = State(state)
    except ValueError:
        return ROLL_BACK
    rule = RESUME[known]
    return rule.on_target if booted_target else rule.on_other


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


def resume_table() -> str:
    """:data:`RESUME` as a Markdown table (docs/firmware.md)."""

    def said(action: str, state: State) -> str:
        if action == GO_ON:
            return "its step again"
        if action == ROLL_BACK:
            return "roll back: its slot marked bad, and left"
        if action == NOTHING:
            return "nothing"
        return f"`{action}` → {TRANSITIONS[(state, action)].value}"

    lines = ["| persisted | booted the job's slot | booted the other |", "| --- | --- | --- |"]
    for state, rule in RESUME.items():
        lines.append(f"| {state.value} | {said(rule.on_target, state)} | {said(rule.on_other, state)} |")
    lines.append("| anything else | roll back: its slot marked bad, and left | roll back: its slot marked bad |")
    return "\n".join(lines)
