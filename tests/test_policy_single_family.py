"""Single-family houses: App, Additional App, Third Party Lock, Premium Plan, call alerts (seed 000)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.entitlements.policy import decide
from tests.support.documents import DAY, T0, holdings, svc

HOUSE = {"id": "h-3", "type": "single_family", "created": "2025-09-10", "free_apps": 1}

# (why, services, days after T0, action, subject, allowed, reason)
SCENARIOS: list[tuple[str, list[dict[str, Any]], float, str, Any, bool, str]] = [
    ("no door billing: access methods may be issued", [], 0, "issue_access", "door:front", True, "not_billed"),
    ("no door billing: alarms go out", [], 0, "report_alarm", None, True, "not_billed"),
    ("master app", [svc("app", "account:owner")], 0, "app_call", "account:owner", True, "active"),
    ("additional app", [svc("additional_app", "account:kid")], 0, "app_call", "account:kid", True, "active"),
    ("app never activated", [], 0, "app_call", "account:owner", False, "not_activated"),
    ("app expired", [svc("app", "account:owner", days=10)], 10, "app_call", "account:owner", False, "expired"),
    ("landline", [svc("landline")], 0, "landline", None, True, "active"),
    ("landline for an account", [svc("landline", "account:owner")], 0, "landline", "account:owner", True, "active"),
    ("third-party camera", [svc("third_party_camera")], 0, "third_party_camera", None, True, "active"),
    ("dynamic QR", [svc("dynamic_qr")], 0, "dynamic_qr", None, True, "active"),
    ("video storage", [svc("video_storage")], 0, "video_storage", None, True, "active"),
    ("video storage expired", [svc("video_storage", days=-1)], 0, "video_storage", None, False, "expired"),
    ("third-party lock", [svc("third_party_lock")], 0, "third_party_lock", None, True, "active"),
    ("sensor call alert never activated", [], 0, "sensor_call_alert", None, False, "not_activated"),
    ("sensor call alert active", [svc("sensor_call_alert")], 0, "sensor_call_alert", None, True, "active"),
    (
        "document expired: apps",
        [svc("app", "account:owner")],
        30,
        "app_call",
        "account:owner",
        False,
        "document_expired",
    ),
    ("document expired: doors stay unbilled", [], 30, "issue_access", None, True, "not_billed"),
]


@pytest.mark.parametrize(
    ("services", "days", "action", "subject", "allowed", "reason"),
    [row[1:] for row in SCENARIOS],
    ids=[row[0] for row in SCENARIOS],
)
def test_single_family_scenario(
    services: list[dict[str, Any]], days: float, action: str, subject: Any, allowed: bool, reason: str
) -> None:
    """The decision for this house, at this instant, has this outcome and reason."""
    decision = decide(holdings(HOUSE, services), T0 + days * DAY, action, subject)
    assert (decision.allowed, decision.reason) == (allowed, reason), decision.detail
