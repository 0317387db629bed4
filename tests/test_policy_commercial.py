"""Commercial (office) projects: DOMAIN.md "What expiry means on the device", row by row.

Doors: the first of ``project.doors`` is free; if any other door lacks an active ``door`` service,
all doors, the free one included, are limited: no access methods issued, no alarms reported.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.entitlements.policy import decide
from tests.support.documents import DAY, T0, commercial_project, holdings, svc

THREE = commercial_project(("door-1", "door-2", "door-3"))
PAID = [svc("door", "door:door-2"), svc("door", "door:door-3")]
STAFF = [svc("personnel_app", "account:a-42"), svc("admin_app", "account:adm-1", days=-1)]

# (why, project, services, days after T0, action, subject, allowed, reason)
SCENARIOS: list[tuple[str, dict[str, Any], list[dict[str, Any]], float, str, Any, bool, str]] = [
    # -- doors -----------------------------------------------------------------------------------
    ("every paid door active: the free door opens", THREE, PAID, 0, "issue_access", "door:door-1", True, "active"),
    ("every paid door active: a paid door opens", THREE, PAID, 0, "issue_access", "door:door-3", True, "active"),
    ("every paid door active: any door", THREE, PAID, 0, "issue_access", None, True, "active"),
    ("every paid door active: alarms go out", THREE, PAID, 0, "report_alarm", None, True, "active"),
    (
        "a paid door never activated limits the free door",
        THREE,
        PAID[:1],
        0,
        "issue_access",
        "door:door-1",
        False,
        "doors_limited",
    ),
    (
        "a paid door never activated limits the other paid door",
        THREE,
        PAID[:1],
        0,
        "issue_access",
        "door:door-2",
        False,
        "doors_limited",
    ),
    ("a paid door never activated holds alarms back", THREE, PAID[:1], 0, "report_alarm", None, False, "doors_limited"),
    (
        "one paid door expired limits every door",
        THREE,
        [svc("door", "door:door-2"), svc("door", "door:door-3", days=5)],
        6,
        "issue_access",
        "door:door-2",
        False,
        "doors_limited",
    ),
    (
        "one paid door expired holds alarms back",
        THREE,
        [svc("door", "door:door-2"), svc("door", "door:door-3", days=5)],
        6,
        "report_alarm",
        None,
        False,
        "doors_limited",
    ),
    (
        "a paid door expiring this very instant limits every door",
        THREE,
        [svc("door", "door:door-2"), svc("door", "door:door-3", days=5)],
        5,
        "issue_access",
        "door:door-1",
        False,
        "doors_limited",
    ),
    (
        "a second before a paid door expires",
        THREE,
        [svc("door", "door:door-2"), svc("door", "door:door-3", days=5)],
        5 - 1 / DAY,
        "issue_access",
        "door:door-1",
        True,
        "active",
    ),
    (
        "a door expiring later is still active now",
        THREE,
        [svc("door", "door:door-2"), svc("door", "door:door-3", days=5)],
        4,
        "issue_access",
        "door:door-1",
        True,
        "active",
    ),
    ("a door the project lacks", THREE, PAID, 0, "issue_access", "door:door-9", False, "unknown_door"),
    (
        "only the free door: nothing billed",
        commercial_project(("door-1",)),
        [],
        0,
        "issue_access",
        "door:door-1",
        True,
        "not_billed",
    ),
    (
        "only the free door: alarms go out",
        commercial_project(("door-1",)),
        [],
        0,
        "report_alarm",
        None,
        True,
        "not_billed",
    ),
    (
        "only the free door, document expired: still not billed",
        commercial_project(("door-1",)),
        [],
        40,
        "report_alarm",
        None,
        True,
        "not_billed",
    ),
    (
        "a door service for a door not in the project does not count",
        THREE,
        [svc("door", "door:door-9"), svc("door", "door:door-2")],
        0,
        "report_alarm",
        None,
        False,
        "doors_limited",
    ),
    (
        "an app service does not pay for a door",
        THREE,
        [svc("door", "door:door-2"), svc("personnel_app", "door:door-3")],
        0,
        "report_alarm",
        None,
        False,
        "doors_limited",
    ),
    # -- the payment date (DOMAIN.md "Paying") ----------------------------------------------------
    (
        "created before 2025-06-01: no payment required",
        commercial_project(("door-1", "door-2"), created="2025-05-31"),
        [],
        0,
        "issue_access",
        "door:door-2",
        True,
        "not_billed",
    ),
    (
        "created before 2025-06-01: apps need no payment",
        commercial_project(("door-1", "door-2"), created="2025-05-31"),
        [],
        0,
        "app_call",
        "account:a-1",
        True,
        "not_billed",
    ),
    (
        "created on 2025-06-01: billed with credits",
        commercial_project(("door-1", "door-2"), created="2025-06-01"),
        [],
        0,
        "issue_access",
        "door:door-2",
        False,
        "doors_limited",
    ),
    # -- the document's own exp ------------------------------------------------------------------
    ("document expired: doors", THREE, PAID, 31, "issue_access", "door:door-1", False, "document_expired"),
    ("document expired: alarms", THREE, PAID, 31, "report_alarm", None, False, "document_expired"),
    ("document expired: apps", THREE, PAID + STAFF, 31, "app_call", "account:a-42", False, "document_expired"),
    (
        "document expired: attendance",
        THREE,
        [svc("attendance", plan="0-200")],
        31,
        "attendance",
        10,
        False,
        "document_expired",
    ),
    ("document expired: a door never activated", THREE, PAID[:1], 31, "issue_access", None, False, "document_expired"),
    ("document expires exactly now", THREE, PAID, 30, "issue_access", "door:door-1", False, "document_expired"),
    ("a second before the document expires", THREE, PAID, 30 - 1 / DAY, "issue_access", "door:door-1", True, "active"),
    # -- apps ------------------------------------------------------------------------------------
    ("personnel app active", THREE, PAID + STAFF, 0, "app_call", "account:a-42", True, "active"),
    ("admin app expired", THREE, PAID + STAFF, 0, "app_call", "account:adm-1", False, "expired"),
    ("an account without an app service", THREE, PAID + STAFF, 0, "app_call", "account:a-43", False, "not_activated"),
    ("apps keep working while doors are limited", THREE, STAFF, 0, "app_call", "account:a-42", True, "active"),
    (
        "landline for an account, listed project-wide",
        THREE,
        [svc("landline")],
        0,
        "landline",
        "account:a-42",
        True,
        "active",
    ),
    ("landline not listed", THREE, STAFF, 0, "landline", "account:a-42", False, "not_activated"),
    # -- premium features ------------------------------------------------------------------------
    (
        "attendance within the small plan",
        THREE,
        [svc("attendance", plan="0-200")],
        0,
        "attendance",
        200,
        True,
        "active",
    ),
    (
        "attendance beyond the small plan",
        THREE,
        [svc("attendance", plan="0-200")],
        0,
        "attendance",
        201,
        False,
        "plan_exceeded",
    ),
    ("attendance on the large plan", THREE, [svc("attendance", plan="201+")], 0, "attendance", 5000, True, "active"),
    (
        "attendance count as text (the CLI)",
        THREE,
        [svc("attendance", plan="0-200")],
        0,
        "attendance",
        "150",
        True,
        "active",
    ),
    ("attendance not activated", THREE, PAID, 0, "attendance", 1, False, "not_activated"),
    ("attendance expired", THREE, [svc("attendance", plan="201+", days=-1)], 0, "attendance", 1, False, "expired"),
    (
        "attendance on a plan the device does not know",
        THREE,
        [svc("attendance", plan="gold")],
        0,
        "attendance",
        1,
        False,
        "unknown_plan",
    ),
    ("elevator control active", THREE, [svc("elevator_control")], 0, "elevator_control", None, True, "active"),
    (
        "elevator control expired",
        THREE,
        [svc("elevator_control", days=2)],
        3,
        "elevator_control",
        None,
        False,
        "expired",
    ),
    ("sensor call alert active", THREE, [svc("sensor_call_alert")], 0, "sensor_call_alert", None, True, "active"),
    ("sensor call alert never activated", THREE, PAID, 0, "sensor_call_alert", None, False, "not_activated"),
    (
        "sensor call alert expired",
        THREE,
        [svc("sensor_call_alert", days=1)],
        1,
        "sensor_call_alert",
        None,
        False,
        "expired",
    ),
]


@pytest.mark.parametrize(
    ("project", "services", "days", "action", "subject", "allowed", "reason"),
    [row[1:] for row in SCENARIOS],
    ids=[row[0] for row in SCENARIOS],
)
def test_commercial_scenario(
    project: dict[str, Any],
    services: list[dict[str, Any]],
    days: float,
    action: str,
    subject: Any,
    allowed: bool,
    reason: str,
) -> None:
    """The decision for this commercial project, at this instant, has this outcome and reason."""
    decision = decide(holdings(project, services), T0 + days * DAY, action, subject)
    assert (decision.allowed, decision.reason) == (allowed, reason), decision.detail


def test_the_limit_names_the_doors_that_lapsed() -> None:
    """A doors_limited denial says which doors lapsed and that the free door is included."""
    services = [svc("door", "door:door-2", days=1), svc("door", "door:door-3")]
    detail = decide(holdings(THREE, services), T0 + 2 * DAY, "issue_access", "door:door-1").detail
    assert "door-2" in detail
    assert "door-3" not in detail
    assert "free door door-1" in detail


def test_an_allowed_door_expires_with_the_first_paid_door() -> None:
    """issue_access is allowed until the earliest paid door expires, and says so."""
    services = [svc("door", "door:door-2", days=3), svc("door", "door:door-3", days=9)]
    decision = decide(holdings(THREE, services), T0, "issue_access", "door:door-1")
    assert decision.expires == T0 + 3 * DAY


def test_an_allowed_service_expires_no_later_than_the_document() -> None:
    """A service paid for a year is allowed only until the document's exp, 30 days on."""
    decision = decide(holdings(THREE, STAFF), T0, "app_call", "account:a-42")
    assert decision.expires == T0 + 30 * DAY


@pytest.mark.parametrize("order", [(2, 6, 12), (12, 6, 2), (6, 12, 2)], ids=["forward", "backward", "mixed"])
def test_remembered_decisions_follow_each_lapse(order: tuple[int, ...]) -> None:
    """One document asked on either side of successive door lapses, in any order, answers as a fresh one."""
    four = commercial_project(("door-1", "door-2", "door-3", "door-4"))
    services = [
        svc("door", "door:door-2", days=1),
        svc("door", "door:door-3", days=5),
        svc("door", "door:door-4", days=10),
    ]
    held = holdings(four, services)
    for days in order:
        remembered = decide(held, T0 + days * DAY, "report_alarm")
        assert remembered == decide(holdings(four, services), T0 + days * DAY, "report_alarm")
