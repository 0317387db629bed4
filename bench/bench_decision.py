"""An in-process decision vs. a bare dict.get plus a datetime comparison (goal: at most 3x)."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.entitlements.policy import decide
from bench.common import Result, interleaved
from tests.support.documents import DAY, T0, commercial_project, holdings, svc


def run() -> list[Result]:
    """Warm decisions (the common case) and, for information, cold ones (a memo miss each time)."""
    project = commercial_project(("door-1", "door-2", "door-3"))
    services = [svc("door", "door:door-2"), svc("door", "door:door-3"), svc("personnel_app", "account:a-42")]
    services += [svc("personnel_app", f"account:p-{i}") for i in range(200)]
    ents = holdings(project, services)
    now = T0 + DAY

    table = {("personnel_app", "account:a-42"): datetime.fromtimestamp(T0 + 365 * DAY, UTC)}
    now_dt = datetime.fromtimestamp(now, UTC)
    key = ("personnel_app", "account:a-42")

    def floor() -> bool:
        expires = table.get(key)
        return expires is not None and now_dt < expires

    def app_call() -> object:
        return decide(ents, now, "app_call", "account:a-42")

    def door() -> object:
        return decide(ents, now, "issue_access", "door:door-2")

    def cold() -> object:
        ents.memo.clear()
        return decide(ents, now, "app_call", "account:a-42")

    floor_label = "dict.get + datetime <"
    return [
        interleaved("decision: app_call (warm)", floor_label, floor, app_call, goal="<= 3.0", number=20_000),
        interleaved("decision: issue_access, 3 doors (warm)", floor_label, floor, door, goal="<= 3.0", number=20_000),
        interleaved("decision: app_call, first ask (memo miss)", floor_label, floor, cold, goal="info", number=5_000),
    ]
