"""Community projects: service-based charging, no door billing (DOMAIN.md, seeds 000 and 003)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.entitlements.policy import decide
from tests.support.documents import DAY, T0, holdings, svc

COMMUNITY = {"id": "c-7", "type": "community", "created": "2024-03-01", "free_apps": 2}

# (why, services, days after T0, action, subject, allowed, reason)
SCENARIOS: list[tuple[str, list[dict[str, Any]], float, str, Any, bool, str]] = [
    ("no door billing: access methods may be issued", [], 0, "issue_access", "door:gate", True, "not_billed"),
    ("no door billing: alarms go out", [], 0, "report_alarm", None, True, "not_billed"),
    ("no door billing outlives the document", [], 45, "report_alarm", None, True, "not_billed"),
    ("master app", [svc("app", "account:r-101")], 0, "app_call", "account:r-101", True, "active"),
    (
        "additional app (family member)",
        [svc("additional_app", "account:r-101b")],
        0,
        "app_call",
        "account:r-101b",
        True,
        "active",
    ),
    (
        "free-number family member, listed by the cloud",
        [svc("app", "account:r-101c", days=3650)],
        0,
        "app_call",
        "account:r-101c",
        True,
        "active",
    ),
    ("PM app", [svc("pm_app", "account:pm-1")], 0, "app_call", "account:pm-1", True, "active"),
    ("app expired", [svc("app", "account:r-101", days=-2)], 0, "app_call", "account:r-101", False, "expired"),
    (
        "another account's app does not count",
        [svc("app", "account:r-101")],
        0,
        "app_call",
        "account:r-102",
        False,
        "not_activated",
    ),
    (
        "the longest of an account's app services counts",
        [svc("app", "account:r-1", days=1), svc("additional_app", "account:r-1", days=9)],
        5,
        "app_call",
        "account:r-1",
        True,
        "active",
    ),
    ("landline for an apartment", [svc("landline", "apartment:101")], 0, "landline", "apartment:101", True, "active"),
    ("landline for the whole community", [svc("landline")], 0, "landline", "apartment:102", True, "active"),
    (
        "landline for another apartment",
        [svc("landline", "apartment:101")],
        0,
        "landline",
        "apartment:102",
        False,
        "not_activated",
    ),
    ("landline expired", [svc("landline", "apartment:101", days=-1)], 0, "landline", "apartment:101", False, "expired"),
    ("landline for PM", [svc("landline_pm", "account:pm-1")], 0, "landline_pm", "account:pm-1", True, "active"),
    ("landline for PM not activated", [], 0, "landline_pm", "account:pm-1", False, "not_activated"),
    (
        "video storage per apartment",
        [svc("video_storage", "apartment:101")],
        0,
        "video_storage",
        "apartment:101",
        True,
        "active",
    ),
    ("video storage community-wide", [svc("video_storage")], 0, "video_storage", "apartment:207", True, "active"),
    (
        "video storage for another apartment only",
        [svc("video_storage", "apartment:101")],
        0,
        "video_storage",
        "apartment:207",
        False,
        "not_activated",
    ),
    (
        "video storage for the project, asked without subject",
        [svc("video_storage", "apartment:101")],
        0,
        "video_storage",
        None,
        False,
        "not_activated",
    ),
    (
        "with indoor monitor",
        [svc("with_indoor_monitor", "apartment:101")],
        0,
        "with_indoor_monitor",
        "apartment:101",
        True,
        "active",
    ),
    ("package room", [svc("package_room")], 0, "package_room", None, True, "active"),
    ("package room expired", [svc("package_room", days=1)], 2, "package_room", None, False, "expired"),
    (
        "package room expiring this very instant",
        [svc("package_room", days=1)],
        1,
        "package_room",
        None,
        False,
        "expired",
    ),
    ("third-party camera", [svc("third_party_camera")], 0, "third_party_camera", None, True, "active"),
    ("bookings", [svc("booking")], 0, "booking", "project", True, "active"),
    ("smart parking not activated", [], 0, "smart_parking", None, False, "not_activated"),
    ("elevator control", [svc("elevator_control")], 0, "elevator_control", None, True, "active"),
    ("dynamic QR", [svc("dynamic_qr")], 0, "dynamic_qr", None, True, "active"),
    ("dynamic QR expired", [svc("dynamic_qr", days=-1)], 0, "dynamic_qr", None, False, "expired"),
    ("third-party lock", [svc("third_party_lock")], 0, "third_party_lock", None, True, "active"),
    ("sensor call alert", [svc("sensor_call_alert")], 0, "sensor_call_alert", None, True, "active"),
    ("sensor call alert expired", [svc("sensor_call_alert", days=-1)], 0, "sensor_call_alert", None, False, "expired"),
    (
        "document expired: apps",
        [svc("app", "account:r-101")],
        31,
        "app_call",
        "account:r-101",
        False,
        "document_expired",
    ),
    ("document expired: premium features", [svc("package_room")], 31, "package_room", None, False, "document_expired"),
    (
        "document expired: call alerts",
        [svc("sensor_call_alert")],
        31,
        "sensor_call_alert",
        None,
        False,
        "document_expired",
    ),
]


@pytest.mark.parametrize(
    ("services", "days", "action", "subject", "allowed", "reason"),
    [row[1:] for row in SCENARIOS],
    ids=[row[0] for row in SCENARIOS],
)
def test_community_scenario(
    services: list[dict[str, Any]], days: float, action: str, subject: Any, allowed: bool, reason: str
) -> None:
    """The decision for this community project, at this instant, has this outcome and reason."""
    decision = decide(holdings(COMMUNITY, services), T0 + days * DAY, action, subject)
    assert (decision.allowed, decision.reason) == (allowed, reason), decision.detail
