"""The entitlement policy: (document, trusted now, request) → Decision. Pure; no I/O, no clock.

Theory of operation. Every rule below is DOMAIN.md "What expiry means on the device" written as a
function of the document, an instant ``t`` and the request's subject. Each returns the decision at
``t`` *and* the interval ``[lo, hi)`` of instants over which that same decision holds: a decision
only changes when some expiry in the document passes, and each rule knows which expiries it read.
:func:`decide` memoizes the last answer per request on the document, so the common call is one dict
lookup and two comparisons (bench/bench_decision.py); there is no second, faster copy of the rules
to drift from this one.

The rules, in the order they apply:

* no document: everything denied, ``unprovisioned``;
* a request for a door the commercial project does not have: ``unknown_door``;
* nothing to pay for (community or single-family door rules, a commercial project created before
  2025-06-01, a commercial project with only its free door): allowed, ``not_billed``; this outlives
  the document, since there is nothing whose lapse a device could dodge by staying offline;
* the document past its ``exp``: every paid service denied, ``document_expired``;
* commercial doors: the first of ``project.doors`` is free; if any other door lacks an active
  ``door`` service, all doors are limited, and ``issue_access`` and ``report_alarm`` are denied with
  ``doors_limited``;
* a service is ``active`` while trusted time is before its ``expires``, ``expired`` after, and
  ``not_activated`` when the document does not list it; apartment- and account-level services also
  count when the document lists them for the whole ``project``;
* ``attendance N`` is denied with ``plan_exceeded`` when the active plan's bound is below ``N``.

What is never gated is in docs/entitlements.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Final, NamedTuple

from agent.entitlements.index import Entitlements, Service
from agent.errors import BadRequest
from protocol.names import ID_PATTERN
from protocol.timefmt import to_rfc3339, to_rfc3339_or_none

# -- decision reasons (the wire and the CLI carry these strings: never rename one) --------------
ACTIVE: Final = "active"
NOT_BILLED: Final = "not_billed"
EXPIRED: Final = "expired"
NOT_ACTIVATED: Final = "not_activated"
DOORS_LIMITED: Final = "doors_limited"
DOCUMENT_EXPIRED: Final = "document_expired"
UNPROVISIONED: Final = "unprovisioned"
PLAN_EXCEEDED: Final = "plan_exceeded"
UNKNOWN_DOOR: Final = "unknown_door"
UNKNOWN_PLAN: Final = "unknown_plan"

# DOMAIN.md "Project types": the accounts that can take intercom calls through the app.
APP_SERVICES: Final = ("app", "additional_app", "pm_app", "personnel_app", "admin_app")
# DOMAIN.md "Attendance": the plan bounds how many personnel can be scheduled.
PLAN_CAPACITY: Final[dict[str, float]] = {"0-200": 200, "201+": math.inf}

_INF: Final = math.inf
_MEMO_LIMIT: Final = 4096  # requests remembered per document; beyond it, decisions are computed afresh


class Decision(NamedTuple):
    """The answer to one request.

    ``expires`` is, for an allowed decision, the instant it stops holding unless a newer document
    arrives (``None`` when nothing bounds it); for a denial it is ``None``.
    """

    allowed: bool
    reason: str
    expires: float | None
    detail: str

    def as_json(self, action: str, subject: str | int | None) -> dict[str, object]:
        """The ``edge-agent check --json`` object."""
        return {
            "action": action,
            "subject": subject,
            "allowed": self.allowed,
            "reason": self.reason,
            "expires": to_rfc3339_or_none(self.expires),
            "detail": self.detail,
        }


_Timed = tuple[float, float, Decision]  # (lo, hi, decision): the decision holds for lo <= t < hi


def _allow(reason: str, expires: float | None, detail: str) -> Decision:
    return Decision(True, reason, None if expires is None or math.isinf(expires) else expires, detail)


def _deny(reason: str, detail: str) -> Decision:
    return Decision(False, reason, None, detail)


_UNPROVISIONED: Final = _deny(UNPROVISIONED, "no entitlements document has been accepted yet")


def _document_expired(e: Entitlements) -> _Timed:
    detail = f"the entitlements document (seq {e.seq}) expired at {to_rfc3339(e.exp)} and nothing newer arrived"
    return e.exp, _INF, _deny(DOCUMENT_EXPIRED, detail)


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


# -- subjects ------------------------------------------------------------------------------------
_SubjectParser = Callable[[str | int | None], object]
_ID: Final = re.compile(ID_PATTERN)


def _shown(value: object) -> str:
    """``repr`` of a caller's value, cut short: an error message must not echo megabytes back."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _subject_of(action: str, kinds: frozenset[str], required: bool) -> Callable[[str | int | None], str]:
    """A parser accepting ``project`` (or nothing, unless required) and ``<kind>:<id>`` for ``kinds``."""
    forms = sorted(f"{k}:<id>" for k in kinds) + ([] if required else ["project"])

    def parse(subject: str | int | None) -> str:
        if subject is None or subject == "project":
            if required:
                raise BadRequest(f"{action} needs a subject: {' or '.join(forms)}")
            return "project"
        if isinstance(subject, str):
            kind, sep, ident = subject.partition(":")
            if sep and kind in kinds and _ID.fullmatch(ident):
                return subject
        raise BadRequest(f"{action}: subject {_shown(subject)} is not {' or '.join(forms)}")

    return parse


def _count_of(action: str) -> Callable[[str | int | None], int]:
    def parse(subject: str | int | None) -> int:
        if isinstance(subject, bool):
            raise BadRequest(f"{action} needs a count of personnel, not {_shown(subject)}")
        if isinstance(subject, int):
            count = subject
        elif isinstance(subject, str) and subject.isascii() and subject.isdigit() and len(subject) <= 9:
            count = int(subject)  # bounded: int() refuses very long digit strings with a ValueError
        else:
            raise BadRequest(f"{action} needs a count of personnel (0 or more), not {_shown(subject)}")
        if count < 0:
            raise BadRequest(f"{action} needs a count of personnel (0 or more), not {count}")
        return count

    return parse


# -- rules ---------------------------------------------------------------------------------------
def _commercial_doors(e: Entitlements, t: float) -> _Timed:
    """DOMAIN.md: if doors expire or are not activated, all doors, the free one included, are limited."""
    if e.project_type != "commercial":
        return -_INF, _INF, _allow(NOT_BILLED, None, f"{e.project_type} projects have no door billing")
    if not e.payment_required:
        return -_INF, _INF, _allow(NOT_BILLED, None, "a commercial project created before 2025-06-01 needs no payment")
    if len(e.doors) < 2:
        only = f"only its free door {e.doors[0]}" if e.doors else "no doors"
        return -_INF, _INF, _allow(NOT_BILLED, None, f"the project has {only}: no door is billed")
    free, paid = e.doors[0], e.doors[1:]
    if t >= e.exp:
        return _document_expired(e)
    missing = [d for d in paid if e.service("door", f"door:{d}") is None]
    if missing:
        detail = f"no door service for {_listing(missing)}: all doors are limited, the free door {free} included"
        return -_INF, e.exp, _deny(DOORS_LIMITED, detail)
    expiries = {d: s.expires for d in paid if (s := e.service("door", f"door:{d}")) is not None}
    first = min(expiries.values())
    if t < first:
        hi = min(first, e.exp)
        return (
            -_INF,
            hi,
            _allow(ACTIVE, hi, f"every paid door ({_listing(list(paid))}) is active until {to_rfc3339(first)}"),
        )
    lapsed = sorted(d for d, x in expiries.items() if x <= t)
    lo = max(x for x in expiries.values() if x <= t)
    hi = min([x for x in expiries.values() if x > t] + [e.exp])
    detail = f"the door service of {_listing(lapsed)} expired: all doors are limited, the free door {free} included"
    return lo, hi, _deny(DOORS_LIMITED, detail)


def _issue_access(e: Entitlements, t: float, subject: object) -> _Timed:
    door = str(subject).partition(":")[2]
    if e.project_type == "commercial" and subject != "project" and door not in e.doors:
        return -_INF, _INF, _deny(UNKNOWN_DOOR, f"{subject} is not one of the project's doors")
    return _commercial_doors(e, t)


def _report_alarm(e: Entitlements, t: float, _subject: object) -> _Timed:
    return _commercial_doors(e, t)


def _paid(e: Entitlements, t: float, names: tuple[str, ...], subjects: tuple[str, ...], what: str) -> _Timed:
    """A paid service: active until its latest listed expiry among ``names`` x ``subjects``."""
    if not e.payment_required:
        return -_INF, _INF, _allow(NOT_BILLED, None, "a commercial project created before 2025-06-01 needs no payment")
    if t >= e.exp:
        return _document_expired(e)
    entries = [s for n in names for sub in subjects if (s := e.service(n, sub)) is not None]
    if not entries:
        return -_INF, e.exp, _deny(NOT_ACTIVATED, f"no {what} service is listed for {subjects[0]}")
    best: Service = max(entries, key=lambda s: s.expires)
    if t < best.expires:
        hi = min(best.expires, e.exp)
        detail = f"{best.service} for {best.subject} until {to_rfc3339(best.expires)}"
        if best.expires > e.exp:
            detail += f"; this document is in force until {to_rfc3339(e.exp)}"
        return -_INF, hi, _allow(ACTIVE, hi, detail)
    return (
        best.expires,
        e.exp,
        _deny(EXPIRED, f"{best.service} for {best.subject} expired at {to_rfc3339(best.expires)}"),
    )


def _service(name: str) -> Callable[[Entitlements, float, object], _Timed]:
    """A service gated on itself, for the subject asked about or for the whole project."""

    def rule(e: Entitlements, t: float, subject: object) -> _Timed:
        subjects = ("project",) if subject == "project" else (str(subject), "project")
        return _paid(e, t, (name,), subjects, name)

    return rule


def _app_call(e: Entitlements, t: float, account: object) -> _Timed:
    return _paid(e, t, APP_SERVICES, (str(account),), "app")


def _attendance(e: Entitlements, t: float, count: object) -> _Timed:
    timed = _paid(e, t, ("attendance",), ("project",), "attendance")
    lo, hi, decision = timed
    if decision.reason != ACTIVE or not isinstance(count, int):
        return timed
    entry = e.service("attendance", "project")
    plan = entry.plan if entry is not None else None
    capacity = PLAN_CAPACITY.get(plan or "")
    if capacity is None:
        return lo, hi, _deny(UNKNOWN_PLAN, f"attendance plan {plan!r} is not one of {', '.join(PLAN_CAPACITY)}")
    if count > capacity:
        return lo, hi, _deny(PLAN_EXCEEDED, f"{count} personnel exceed plan {plan} (at most {capacity:.0f})")
    return lo, hi, _allow(ACTIVE, decision.expires, f"plan {plan} allows {count} personnel; {decision.detail}")


class _Rule(NamedTuple):
    subject: _SubjectParser
    evaluate: Callable[[Entitlements, float, object], _Timed]


_PROJECT: Final = frozenset[str]()


def _rules() -> dict[str, _Rule]:
    rules = {
        "issue_access": _Rule(_subject_of("issue_access", frozenset({"door"}), False), _issue_access),
        "report_alarm": _Rule(_subject_of("report_alarm", _PROJECT, False), _report_alarm),
        "app_call": _Rule(_subject_of("app_call", frozenset({"account"}), True), _app_call),
        "attendance": _Rule(_count_of("attendance"), _attendance),
    }
    # DOMAIN.md: landline (residents), video storage and with-indoor-monitor are also set per apartment.
    per_subject = {
        "landline": frozenset({"account", "apartment"}),
        "landline_pm": frozenset({"account"}),
        "video_storage": frozenset({"apartment"}),
        "with_indoor_monitor": frozenset({"apartment"}),
        "third_party_lock": _PROJECT,
        "elevator_control": _PROJECT,
        "dynamic_qr": _PROJECT,
        "package_room": _PROJECT,
        "third_party_camera": _PROJECT,
        "booking": _PROJECT,
        "smart_parking": _PROJECT,
        "sensor_call_alert": _PROJECT,
    }
    for name, kinds in per_subject.items():
        rules[name] = _Rule(_subject_of(name, kinds, False), _service(name))
    return rules


_RULES: Final = _rules()
ACTIONS: Final = tuple(sorted(_RULES))


def _rule(action: str) -> _Rule:
    rule = _RULES.get(action)
    if rule is None:
        raise BadRequest(f"unknown action {_shown(action)}; known: {', '.join(ACTIONS)}")
    return rule


def decide(entitlements: Entitlements | None, now: float, action: str, subject: str | int | None = None) -> Decision:
    """Whether ``action`` on ``subject`` is allowed at trusted time ``now`` under ``entitlements``.

    ``subject`` is ``door:<id>``, ``account:<id>``, ``apartment:<id>``, ``project`` or ``None``, or a
    count for ``attendance``. Raises :class:`BadRequest` for an unknown action or a wrong subject.
    """
    key = (action, subject)
    if entitlements is not None:
        hit = entitlements.memo.get(key)
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[2]  # type: ignore[no-any-return]
    rule = _rule(action)
    parsed = rule.subject(subject)
    if entitlements is None:
        return _UNPROVISIONED
    timed = rule.evaluate(entitlements, now, parsed)
    if len(entitlements.memo) < _MEMO_LIMIT or key in entitlements.memo:
        entitlements.memo[key] = timed
    return timed[2]


# -- summaries -----------------------------------------------------------------------------------
UNPROVISIONED_MODE: Final = "unprovisioned"
NORMAL_MODE: Final = "normal"
LIMITED_MODE: Final = "limited"
DOCUMENT_EXPIRED_MODE: Final = "document_expired"


def mode(entitlements: Entitlements | None, now: float) -> str:
    """The device's mode: ``unprovisioned``, ``document_expired``, ``limited`` (doors) or ``normal``."""
    if entitlements is None:
        return UNPROVISIONED_MODE
    if now >= entitlements.exp:
        return DOCUMENT_EXPIRED_MODE
    if not decide(entitlements, now, "report_alarm").allowed:
        return LIMITED_MODE
    return NORMAL_MODE


def next_expiry(entitlements: Entitlements | None, now: float) -> float | None:
    """The next instant after ``now`` at which a service or the document expires, if any."""
    if entitlements is None:
        return None
    upcoming = [s.expires for s in entitlements.effective_services if s.expires > now]
    if entitlements.exp > now:
        upcoming.append(entitlements.exp)
    return min(upcoming, default=None)
