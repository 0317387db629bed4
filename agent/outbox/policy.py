"""What the outbox admits, evicts and holds back: pure decisions over priorities and gates.

No I/O and no state: the outbox (``agent/outbox/__init__.py``) asks, the rows module (``rows.py``)
carries the answer out in SQL. Held-ness is decided here and nowhere else: an event is *held* while the
decision that must allow it out (its gate: ``report_alarm`` for alarms; call alerts have none, see
``events.GATES``) is denied; the SQL that selects sendable or held rows is built from the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from agent.outbox.events import GATES, PRIORITY, RESERVED_TYPES


def gate_of(event_type: str) -> str | None:
    """The decision that must allow an event of this type out, if any."""
    return GATES.get(event_type)


def is_held(gate: str | None, denied: Iterable[str]) -> bool:
    """Whether a row behind ``gate`` waits now (its decision is denied)."""
    return gate is not None and gate in denied


def entitled_to_reserve(event_type: str) -> bool:
    """Whether an event may spend the data directory's reserve on a full disk (``agent/store/reserve.py``)."""
    return event_type in RESERVED_TYPES


class Admission(NamedTuple):
    """Which new events go in (their indexes), which queued rows make room, which events are refused."""

    admitted: frozenset[int]
    victims: tuple[tuple[int, str], ...]  # (row id, type) to evict
    refused: tuple[int, ...]


def admit(types: Sequence[str], room: int, candidates: Sequence[tuple[int, int, str]]) -> Admission:
    """Admit new events of ``types`` into ``room`` free places, evicting from ``candidates``.

    ``candidates`` are queued rows ``(id, priority, type)``, lowest priority then oldest first (as many
    as there are events that do not fit). The highest-priority events take the free places; each of the
    others evicts the next candidate unless that candidate outranks it, and is refused otherwise.
    """
    if room >= len(types):  # the common case: everything fits
        return Admission(frozenset(range(len(types))), (), ())
    by_priority = sorted(range(len(types)), key=lambda i: -PRIORITY[types[i]])
    admitted = set(by_priority[: max(room, 0)])
    waiting = [i for i in by_priority if i not in admitted]
    victims = []
    for i, (row_id, priority, typ) in zip(waiting, candidates, strict=False):
        if priority > PRIORITY[types[i]]:
            break
        victims.append((row_id, typ))
        admitted.add(i)
    refused = tuple(i for i in waiting if i not in admitted)
    return Admission(frozenset(admitted), tuple(victims), refused)


def runs(ordered: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted ids: [1, 2, 3, 7, 8] -> [(1, 3), (7, 8)] (acknowledgements come nearly in order)."""
    found: list[tuple[int, int]] = []
    for value in ordered:
        if found and found[-1][1] == value - 1:
            found[-1] = (found[-1][0], value)
        else:
            found.append((value, value))
    return found


PRUNE_MAX: Final = 5_000  # sent rows pruned per acknowledgement commit: the end of a drain holds no one up


def prune_excess(sent: int, adding: int, keep: int, *, queued_after: int = 0, slack: int = 0) -> int:
    """How many kept sent rows to prune now (in blocks, not on every batch); 0 for none.

    While rows are still queued after this batch (a drain), the sent ones may exceed ``keep`` by ``slack``
    (the queue's own bound: they are rows that were queued, so the disk holds nothing it did not hold
    before): pruning is ~1.1 µs per row plus a larger commit, and inside a drain it made every event
    dearer the longer the backlog (docs/performance.md). Once the queue is empty they are pruned down to
    ``keep``, at most :data:`PRUNE_MAX` per commit (a full disk prunes with ``keep=0`` and no slack)."""
    excess = sent + adding - keep
    if queued_after > 0:
        if excess <= slack:
            return 0
        excess -= slack
    if excess <= 0 or (keep and excess < max(64, keep // 20)):
        return 0
    return min(excess, PRUNE_MAX) if keep else excess
