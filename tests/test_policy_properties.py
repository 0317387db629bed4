"""Property tests of the policy: it agrees with a naive reading of DOMAIN.md at every instant.

The reference below is written the slow, obvious way (no intervals, no memo), straight from DOMAIN.md
"What expiry means on the device" and "Paying"; hypothesis draws documents, instants and requests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.entitlements.index import KNOWN_SERVICES, Entitlements
from agent.entitlements.policy import ACTIONS, APP_SERVICES, decide
from protocol.claims import EntitlementsClaims, decode
from protocol.timefmt import to_rfc3339
from tests.support.documents import DAY, DEVICE_ID, T0

DOORS = ["d1", "d2", "d3", "d4"]
SUBJECTS = [
    "project",
    "door:d1",
    "door:d2",
    "door:d3",
    "door:d9",
    "account:a1",
    "account:a2",
    "apartment:p1",
    "apartment:p2",
]
PLANS = ["0-200", "201+", "gold", None]


@dataclass(frozen=True)
class Doc:
    """A drawn document, kept as plain data for the reference."""

    type: str
    created: str | None
    doors: list[str]
    exp: float
    services: list[tuple[str, str, float, str | None]]  # (service, subject, expires, plan)

    def claims(self) -> EntitlementsClaims:
        """The claims as the device would parse them from the wire."""
        project: dict[str, Any] = {"id": "p", "type": self.type, "doors": self.doors}
        if self.created is not None:
            project["created"] = self.created
        services = [
            {"service": s, "subject": sub, "expires": to_rfc3339(x), **({"plan": p} if p else {})}
            for s, sub, x, p in self.services
        ]
        raw = {
            "aud": DEVICE_ID,
            "iat": int(T0),
            "exp": int(self.exp),
            "seq": 1,
            "project": project,
            "services": services,
        }
        return decode(EntitlementsClaims, json.dumps(raw))


instants = st.integers(min_value=-5 * 24, max_value=70 * 24).map(lambda hours: T0 + hours * 3600.0)

any_service = st.tuples(
    st.sampled_from([*sorted(KNOWN_SERVICES), "hologram"]),
    st.sampled_from(SUBJECTS),
    instants,
    st.sampled_from(PLANS),
)


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    """A document whose doors usually have door services and whose accounts usually have apps,
    so that every branch of the rules is reached, plus services drawn at random."""
    doors = draw(st.lists(st.sampled_from(DOORS), max_size=4, unique=True))
    services: list[tuple[str, str, float, str | None]] = [
        ("door", f"door:{d}", draw(instants), None) for d in doors if draw(st.integers(0, 9)) > 0
    ]
    services += [
        (draw(st.sampled_from(APP_SERVICES)), account, draw(instants), None)
        for account in ("account:a1", "account:a2")
        if draw(st.booleans())
    ]
    services += draw(st.lists(any_service, max_size=8))
    return Doc(
        type=draw(st.sampled_from(["commercial", "commercial", "community", "single_family"])),
        created=draw(st.sampled_from(["2025-05-31", "2025-06-01", "2025-09-01", None])),
        doors=doors,
        exp=T0 + draw(st.integers(min_value=1, max_value=60 * 24)) * 3600.0,
        services=draw(st.permutations(services)),
    )


def _subjects_for(action: str) -> st.SearchStrategy[Any]:
    if action == "attendance":
        return st.integers(min_value=0, max_value=400)
    if action == "app_call":
        return st.sampled_from(["account:a1", "account:a2"])
    if action == "issue_access":
        return st.sampled_from([None, "door:d1", "door:d2", "door:d3", "door:d9"])
    kinds = {
        "landline": ["account:a1", "apartment:p1"],
        "landline_pm": ["account:a1"],
        "video_storage": ["apartment:p1", "apartment:p2"],
        "with_indoor_monitor": ["apartment:p1"],
    }.get(action, [])
    return st.sampled_from([None, "project", *kinds])


requests = st.sampled_from(ACTIONS).flatmap(lambda a: st.tuples(st.just(a), _subjects_for(a)))


def reference(doc: Doc, now: float, action: str, subject: Any) -> tuple[bool, str]:
    """DOMAIN.md read literally, evaluated at one instant."""

    def expiry(name: str, subj: str) -> float | None:
        found = [x for s, sub, x, _ in doc.services if s == name and sub == subj]
        return max(found) if found else None

    legacy = doc.type == "commercial" and doc.created is not None and doc.created < "2025-06-01"
    if action in ("issue_access", "report_alarm"):
        door = subject.removeprefix("door:") if isinstance(subject, str) else None
        if action == "issue_access" and doc.type == "commercial" and door is not None and door not in doc.doors:
            return False, "unknown_door"
        if doc.type != "commercial" or legacy or len(doc.doors) < 2:
            return True, "not_billed"
        if now >= doc.exp:
            return False, "document_expired"
        for door in doc.doors[1:]:
            until = expiry("door", f"door:{door}")
            if until is None or now >= until:
                return False, "doors_limited"
        return True, "active"
    if legacy:
        return True, "not_billed"
    if now >= doc.exp:
        return False, "document_expired"
    if action == "app_call":
        names, subjects = list(APP_SERVICES), [subject]
    elif action == "attendance":
        names, subjects = ["attendance"], ["project"]
    else:
        names = [action]
        subjects = ["project"] if subject in (None, "project") else [subject, "project"]
    expiries = [x for n in names for s in subjects if (x := expiry(n, s)) is not None]
    if not expiries:
        return False, "not_activated"
    if now >= max(expiries):
        return False, "expired"
    if action == "attendance":
        plans = [p for s, sub, x, p in doc.services if s == "attendance" and sub == "project" and x == max(expiries)]
        capacity = {"0-200": 200, "201+": math.inf}.get(plans[0] or "")
        if capacity is None:
            return False, "unknown_plan"
        if subject > capacity:
            return False, "plan_exceeded"
    return True, "active"


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), now=instants, request=requests)
def test_policy_agrees_with_the_reference(doc: Doc, now: float, request: tuple[str, Any]) -> None:
    """decide() gives the reference's outcome and reason for any document, instant and request."""
    action, subject = request
    decision = decide(Entitlements.from_claims(doc.claims()), now, action, subject)
    assert (decision.allowed, decision.reason) == reference(doc, now, action, subject), decision.detail


@settings(max_examples=300)
@given(doc=documents(), times=st.lists(instants, min_size=2, max_size=12), request=requests)
def test_remembered_decisions_match_fresh_ones(doc: Doc, times: list[float], request: tuple[str, Any]) -> None:
    """Asking one document at many instants, in any order, answers as a fresh document would."""
    action, subject = request
    held = Entitlements.from_claims(doc.claims())
    for now in times:
        assert decide(held, now, action, subject) == decide(
            Entitlements.from_claims(doc.claims()), now, action, subject
        )


@settings(max_examples=300)
@given(doc=documents(), now=instants, request=requests)
def test_an_allowed_decision_holds_until_its_expiry(doc: Doc, now: float, request: tuple[str, Any]) -> None:
    """An allowed decision's ``expires`` is in the future, it still holds a moment before, and not at it."""
    action, subject = request
    held = Entitlements.from_claims(doc.claims())
    decision = decide(held, now, action, subject)
    if decision.allowed and decision.expires is not None:
        assert decision.expires > now
        assert decide(Entitlements.from_claims(doc.claims()), decision.expires - 0.001, action, subject) == decision
        assert not decide(Entitlements.from_claims(doc.claims()), decision.expires, action, subject).allowed


@given(doc=documents(), request=requests)
def test_after_the_document_expires_only_unbilled_things_are_allowed(doc: Doc, request: tuple[str, Any]) -> None:
    """Past exp, every allowed decision is not_billed; every paid one is document_expired."""
    action, subject = request
    decision = decide(Entitlements.from_claims(doc.claims()), doc.exp + DAY, action, subject)
    assert decision.reason in ("not_billed", "document_expired", "unknown_door")
