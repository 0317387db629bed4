"""Expiry notices at 15, 5, 3 and 1 days before a service expires, and once it has."""

from __future__ import annotations

import pytest

from agent.entitlements.notices import expiry_notices, stage
from tests.support.documents import DAY, T0, commercial_project, holdings, svc


@pytest.mark.parametrize(
    ("days_left", "expected"),
    [
        (30, None),
        (15.01, None),
        (15, "expiring_15d"),
        (6, "expiring_15d"),
        (5, "expiring_5d"),
        (3.5, "expiring_5d"),
        (3, "expiring_3d"),
        (1.5, "expiring_3d"),
        (1, "expiring_1d"),
        (0.01, "expiring_1d"),
        (0, "expired"),
        (-4, "expired"),
    ],
)
def test_stage_by_days_left(days_left: float, expected: str | None) -> None:
    """Each service is at the most urgent stage it has reached (DOMAIN.md: 15, 5, 3, 1 days)."""
    assert stage(days_left * DAY) == expected


def test_notices_cover_each_service_once() -> None:
    """One notice per service due, none for services far from expiry, none without a document."""
    ents = holdings(
        commercial_project(),
        [svc("door", "door:door-2", days=4), svc("app", "account:a", days=200), svc("booking", days=-1)],
    )
    notices = expiry_notices(ents, T0)
    assert [(n.kind, n.service) for n in notices] == [("expired", "booking"), ("expiring_5d", "door")]
    assert len({n.key for n in notices}) == 2
    assert expiry_notices(None, T0) == []


def test_a_renewal_changes_the_notice_key() -> None:
    """The same service at the same stage after a renewal is a new notice (keyed by its expiry)."""
    before = expiry_notices(holdings(commercial_project(), [svc("app", "account:a", days=2)]), T0)
    after = expiry_notices(holdings(commercial_project(), [svc("app", "account:a", days=2.5)]), T0)
    assert before[0].kind == after[0].kind == "expiring_3d"
    assert before[0].key != after[0].key
