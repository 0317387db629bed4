"""Refusals coalesced (agent/intake/refusals.py): the first of a kind is reported at once, the rest of its window
as one count; every refusal is accounted for exactly once, however they come."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.intake.refusals import Coalescer

KINDS = [("entitlements", "bad_signature"), ("entitlements", "malformed"), ("command", "rollback")]


def test_a_flood_of_one_kind_is_one_report_then_one_count_per_window() -> None:
    """1,000 refusals in 25 s: reported at once, then counted per window; a window with none closes."""
    coalescer = Coalescer()
    reported, counts = 0, []
    for i in range(1000):  # the daemon's run() takes what is due as each window ends
        counts += [(s.refused, s.token_sha256) for s in coalescer.due(i * 0.025)]
        reported += coalescer.offer("entitlements", "malformed", "d", f"{i}", mono=i * 0.025, at=1000 + i)
    counts += [(s.refused, s.token_sha256) for s in coalescer.due(30.0)]
    assert reported == 1
    assert counts == [(399, "399"), (400, "799"), (200, "999")]
    assert coalescer.due(40.0) == []  # nothing came in that window: it closes
    assert coalescer.next_due() is None
    assert coalescer.offer("entitlements", "malformed", "d", "x", mono=50.0, at=0)  # a new window opens


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.floats(0, 5)), max_size=200), st.floats(0, 30))
def test_every_refusal_is_accounted_for_once(events: list[tuple[tuple[str, str], float]], stop_after: float) -> None:
    """Reported at once, or in exactly one count (due or drained at a stop): never twice, never lost."""
    coalescer = Coalescer()
    mono, accounted = 0.0, 0
    for (typ, reason), gap in events:
        mono += gap
        accounted += sum(s.refused for s in coalescer.due(mono))
        accounted += coalescer.offer(typ, reason, "d", "t", mono=mono, at=mono)
    accounted += sum(s.refused for s in coalescer.due(mono + stop_after))
    accounted += sum(s.refused for s in coalescer.drain())
    assert accounted == len(events)
    assert coalescer.drain() == []
