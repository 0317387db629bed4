"""The local logic as tables: entitlements x stimulus -> driver actions and events, per project type
(DOMAIN.md "What expiry means on the device"; agent/local/reactions.py). End to end: test_drivers_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import DriversConfig
from agent.entitlements.policy import decide
from agent.local.reactions import Context, LocalState, Reaction, react
from agent.local.stimuli import Stimulus, parse
from tests.support.access import CREDENTIALS, PAID
from tests.support.documents import DAY, T0, commercial_project, holdings, svc

COMMERCIAL = commercial_project(("door-1", "door-2"))
COMMUNITY = {"id": "c-7", "type": "community", "created": "2024-03-01", "free_apps": 2}
SINGLE = {"id": "h-1", "type": "single_family", "created": "2024-03-01", "free_apps": 0}

LIMITED = [svc("door", "door:door-2", days=-1), *PAID[1:]]  # door-2 lapsed: every door limited
RESIDENTS = [
    svc("app", "account:r-1"),
    svc("app", "account:r-2", days=-3),
    svc("with_indoor_monitor", "apartment:101"),
    svc("landline", "apartment:101"),
    svc("package_room"),
    svc("video_storage", "apartment:101"),
]

CARD = ("door-1", "card", "04A1B2")

DOCUMENT_EXPIRED = 45.0  # days after T0: past the document's exp (30 days)


def run(
    project: dict[str, Any] | None,
    services: list[dict[str, Any]],
    kind: str,
    data: dict[str, Any],
    *,
    source: str | None = None,
    days: float = 0,
    settings: dict[str, Any] | None = None,
    state: LocalState | None = None,
) -> Reaction:
    ents = holdings(project, services) if project is not None else None
    now = T0 + days * DAY
    ctx = Context(
        decide=lambda action, subject: decide(ents, now, action, subject),
        credentials=CREDENTIALS,
        settings=settings if settings is not None else {"visitor_call_door_log": True},
        project_type=ents.project_type if ents else None,
        doors=ents.doors if ents else (),
        timing=DriversConfig(),
    )
    return react(parse(kind, source, data, now, internal=True), ctx, state or LocalState())


def did(reaction: Reaction) -> list[str]:
    """The actions but the reader's answer (that one is signals())."""
    return [f"{a.driver}.{a.op}" for a in reaction.actions if a.driver != "reader"]


def signals(reaction: Reaction) -> list[str]:
    return [a.args["pattern"] for a in reaction.actions if a.driver == "reader"]


def raised(reaction: Reaction) -> list[str]:
    return [f"{e.type}:{e.kind}" for e in reaction.events]


OPEN = ["relay.open"]
DOOR = {"door": "door-1"}
CALL = {"door": "door-1", "apartment": "101", "accounts": ["r-1", "r-2"], "monitors": ["im-101"], "landline": True}

# (why, project, services, days, kind, data, source, actions, events); the project-type tables leave out project
Row = tuple[str, list[dict[str, Any]], float, str, dict[str, Any], str | None, list[str], list[str]]
# fmt: off
SCENARIOS: list[tuple[str, Any, list[dict[str, Any]], float, str, dict[str, Any], str | None, list[str], list[str]]] = [
    # -- commercial: access -----------------------------------------------------------------------------
    ("card held for the door opens it", COMMERCIAL, PAID, 0, "card", {"door": "door-1", "value": "04A1B2"}, None,
     OPEN, ["door_log:granted"]),
    ("a card the device does not hold", COMMERCIAL, PAID, 0, "card", {"door": "door-1", "value": "FFFF"}, None,
     [], ["door_log:denied"]),
    ("a card held for another door", COMMERCIAL, PAID, 0, "card", {"door": "door-2", "value": "04A1B2"}, None,
     [], ["door_log:denied"]),
    ("a PIN past its validity", COMMERCIAL, PAID, 0, "pin", {"door": "door-1", "value": "2468"}, None,
     [], ["door_log:denied"]),
    ("held credentials keep working while doors are limited", COMMERCIAL, LIMITED, 0, "card",
     {"door": "door-1", "value": "04A1B2"}, None, OPEN, ["door_log:granted"]),
    ("held credentials keep working past the document's exp", COMMERCIAL, PAID, DOCUMENT_EXPIRED, "card",
     {"door": "door-1", "value": "04A1B2"}, None, OPEN, ["door_log:granted"]),
    ("held credentials work on an unprovisioned device", None, [], 0, "card",
     {"door": "door-1", "value": "04A1B2"}, None, OPEN, ["door_log:granted"]),
    ("dynamic QR while dynamic_qr is active", COMMERCIAL, PAID, 0, "qr", {"door": "door-1", "value": "dyn-qr"}, None,
     OPEN, ["door_log:granted"]),
    ("dynamic QR refused once dynamic_qr lapsed", COMMERCIAL, [svc("door", "door:door-2")], 0, "qr",
     {"door": "door-1", "value": "dyn-qr"}, None, [], ["door_log:denied"]),
    ("dynamic QR refused past the document's exp", COMMERCIAL, PAID, DOCUMENT_EXPIRED, "qr",
     {"door": "door-1", "value": "dyn-qr"}, None, [], ["door_log:denied"]),
    ("a face with floors calls the elevator", COMMERCIAL, PAID, 0, "face", {"door": "door-2", "value": "face-7"}, None,
     ["relay.open", "elevator.call"], ["door_log:granted"]),
    ("no elevator call once elevator_control lapsed", COMMERCIAL, PAID[:1], 0, "face",
     {"door": "door-2", "value": "face-7"}, None, OPEN, ["door_log:granted"]),
    # -- egress: never gated ------------------------------------------------------------------------------
    ("exit button", COMMERCIAL, PAID, 0, "exit_button", DOOR, None, OPEN, ["door_log:egress"]),
    ("exit button while doors are limited", COMMERCIAL, LIMITED, 0, "exit_button", DOOR, None, OPEN,
     ["door_log:egress"]),
    ("exit button past the document's exp", COMMERCIAL, PAID, DOCUMENT_EXPIRED, "exit_button", DOOR, None, OPEN,
     ["door_log:egress"]),
    ("exit button on an unprovisioned device", None, [], 0, "exit_button", DOOR, None, OPEN, ["door_log:egress"]),
    ("fire release opens every door, limited or not", COMMERCIAL, LIMITED, 0, "fire_release", {}, None,
     ["relay.open", "relay.open"], ["door_log:egress", "door_log:egress"]),
    # -- alarms: always raised; the outbox holds them while report_alarm is denied --------------------------
    ("a door opened without a release", COMMERCIAL, PAID, 0, "door_open", DOOR, None, [], ["alarm:forced_open"]),
    ("forced open while limited (held by the outbox)", COMMERCIAL, LIMITED, 0, "door_open", DOOR, None, [],
     ["alarm:forced_open"]),
    ("tamper", COMMERCIAL, PAID, 0, "tamper", DOOR, None, [], ["alarm:tamper"]),
    ("tamper while limited (held by the outbox)", COMMERCIAL, LIMITED, 0, "tamper", DOOR, None, [], ["alarm:tamper"]),
    ("emergency past the document's exp (held)", COMMERCIAL, PAID, DOCUMENT_EXPIRED, "emergency", {}, None, [],
     ["alarm:emergency"]),
    ("emergency on an unprovisioned device (held)", None, [], 0, "emergency", {}, None, [], ["alarm:emergency"]),
    # -- calls -----------------------------------------------------------------------------------------------
    ("personnel app rings", COMMERCIAL, PAID, 0, "call", {"door": "door-1", "accounts": ["a-1"]}, None,
     ["calls.ring_app"], ["door_log:call_not_opened"]),
    ("a lapsed app gets no call", COMMERCIAL, [*PAID[:1], svc("personnel_app", "account:a-1", days=-1)], 0, "call",
     {"door": "door-1", "accounts": ["a-1"]}, None, [], ["door_log:call_not_opened"]),
    ("no app rings past the document's exp", COMMERCIAL, PAID, DOCUMENT_EXPIRED, "call",
     {"door": "door-1", "accounts": ["a-1"]}, None, [], ["door_log:call_not_opened"]),
    ("an answered call that opened the door", COMMERCIAL, PAID, 0, "call",
     {"door": "door-1", "accounts": ["a-1"], "opened": True}, None, ["calls.ring_app", "relay.open"],
     ["door_log:granted"]),
    # -- MR01 --------------------------------------------------------------------------------------------------
    ("a fall with sensor_call_alert", COMMERCIAL, PAID, 0, "fall", {}, "mr01-a", ["monitor.ring"],
     ["sensor:fall_detected", "call_alert:fall_detected"]),
    ("a fall without sensor_call_alert: no call alert", COMMERCIAL, PAID[:1], 0, "fall", {}, "mr01-a",
     ["monitor.ring"], ["sensor:fall_detected"]),
    ("a fall past the document's exp: monitor rung, no call alert", COMMERCIAL, PAID, DOCUMENT_EXPIRED, "fall", {},
     "mr01-a", ["monitor.ring"], ["sensor:fall_detected"]),
    ("a fall on an unprovisioned device", None, [], 0, "fall", {}, "mr01-a", ["monitor.ring"],
     ["sensor:fall_detected"]),
    ("bed exit", COMMERCIAL, PAID, 0, "bed_exit", {}, "mr01-a", ["monitor.ring"],
     ["sensor:bed_exit", "call_alert:bed_exit"]),
    ("presence", COMMERCIAL, PAID, 0, "presence", {"present": True}, "mr01-a", [], ["sensor:presence"]),
    ("a low battery", COMMERCIAL, PAID, 0, "battery", {"percent": 9}, "mr01-a", [], ["health:battery_low"]),
    ("a sensor reported offline", COMMERCIAL, PAID, 0, "sensor_offline", {}, "mr01-a", [], ["health:sensor_offline"]),
    # -- premium features --------------------------------------------------------------------------------------
    ("elevator control", COMMERCIAL, PAID, 0, "elevator", {"door": "door-1", "floors": ["5"]}, None,
     ["elevator.call"], []),
    ("elevator control lapsed", COMMERCIAL, PAID[:1], 0, "elevator", {"door": "door-1", "floors": ["5"]}, None, [], []),
    ("attendance within the plan", COMMERCIAL, [svc("attendance", plan="0-200")], 0, "attendance", {"count": 150},
     None, [], []),
]

COMMUNITY_SCENARIOS: list[Row] = [
    ("no door billing: a tamper goes out", RESIDENTS, 0, "tamper", DOOR, None, [], ["alarm:tamper"]),
    ("a call rings the active app, the monitor and the landline", RESIDENTS, 0, "call", CALL, None,
     ["calls.ring_app", "monitor.ring", "calls.forward_landline"], ["door_log:call_not_opened"]),
    ("without indoor monitor the monitor is not rung", [s for s in RESIDENTS if s["service"] != "with_indoor_monitor"],
     0, "call", CALL, None, ["calls.ring_app", "calls.forward_landline"], ["door_log:call_not_opened"]),
    ("landline lapsed", [s for s in RESIDENTS if s["service"] != "landline"], 0, "call", CALL, None,
     ["calls.ring_app", "monitor.ring"], ["door_log:call_not_opened"]),
    ("past the document's exp no paid target rings", RESIDENTS, DOCUMENT_EXPIRED, "call", CALL, None, [],
     ["door_log:call_not_opened"]),
    ("package room notice", RESIDENTS, 0, "package", {"monitor": "im-101"}, None, ["monitor.show_notice"], []),
    ("package room lapsed", RESIDENTS[:4], 0, "package", {"monitor": "im-101"}, None, [], []),
    ("video storage for the apartment", RESIDENTS, 0, "recording", {"clip": "clip-1", "apartment": "101"}, None,
     ["storage.upload"], []),
    ("third-party camera not activated", RESIDENTS, 0, "camera", {"camera": "cam-1", "to": "im-101"}, None, [], []),
    ("booking", [svc("booking")], 0, "booking", {"booking": "b-1", "door": "door-1"}, None, ["booking.confirm"], []),
    ("third-party lock", [svc("third_party_lock")], 0, "lock", {"lock": "itec-1"}, None, ["lock.unlock"], []),
    ("a fall without the alert service", RESIDENTS, 0, "fall", {}, "mr01-b", ["monitor.ring"],
     ["sensor:fall_detected"]),
]

SINGLE_SCENARIOS: list[Row] = [
    ("the house's app rings", [svc("app", "account:h-1")], 0, "call", {"door": "door-1", "accounts": ["h-1"],
     "monitors": ["im-1"]}, None, ["calls.ring_app", "monitor.ring"], ["door_log:call_not_opened"]),
    ("monitors are not gated outside communities", [], 0, "call", {"door": "door-1", "monitors": ["im-1"]}, None,
     ["monitor.ring"], ["door_log:call_not_opened"]),
    ("sensor call alert active", [svc("sensor_call_alert")], 0, "bed_exit", {}, "mr01-c", ["monitor.ring"],
     ["sensor:bed_exit", "call_alert:bed_exit"]),
    ("sensor call alert expired", [svc("sensor_call_alert", days=-1)], 0, "bed_exit", {}, "mr01-c", ["monitor.ring"],
     ["sensor:bed_exit"]),
    ("dynamic QR without the feature", [], 0, "qr", {"door": "door-1", "value": "dyn-qr"}, None, [],
     ["door_log:denied"]),
]
# fmt: on


@pytest.mark.parametrize(
    ("project", "services", "days", "kind", "data", "source", "actions", "events"),
    [pytest.param(*row[1:], id=row[0]) for row in SCENARIOS]
    + [pytest.param(COMMUNITY, *row[1:], id=f"community: {row[0]}") for row in COMMUNITY_SCENARIOS]
    + [pytest.param(SINGLE, *row[1:], id=f"single family: {row[0]}") for row in SINGLE_SCENARIOS],
)
def test_scenario(
    project: Any,
    services: list[dict[str, Any]],
    days: float,
    kind: str,
    data: dict[str, Any],
    source: str | None,
    actions: list[str],
    events: list[str],
) -> None:
    reaction = run(project, services, kind, data, source=source, days=days)
    assert (did(reaction), raised(reaction)) == (actions, events), reaction.notes


def test_a_denied_attempt_names_its_reason_and_never_the_value() -> None:
    reaction = run(COMMERCIAL, PAID, "pin", {"door": "door-1", "value": "2468"})
    [event] = reaction.events
    assert event.data == {"door": "door-1", "method": "pin", "credential": "p-1", "reason": "credential_expired"}
    assert "2468" not in repr(reaction)


def test_a_lapsed_dynamic_qr_names_the_feature() -> None:
    reaction = run(COMMERCIAL, [svc("door", "door:door-2")], "qr", {"door": "door-1", "value": "dyn-qr"})
    assert reaction.events[0].data["reason"] == "dynamic_qr_inactive"
    assert reaction.decisions == [
        {
            "action": "dynamic_qr",
            "subject": None,
            "allowed": False,
            "reason": "not_activated",
            "expires": None,
            "detail": "no dynamic_qr service is listed for project",
        }
    ]


def test_a_door_opened_after_a_grant_is_no_alarm_but_held_open_is() -> None:
    state = LocalState()
    run(COMMERCIAL, PAID, "card", {"door": "door-1", "value": "04A1B2"}, state=state)
    opened = run(COMMERCIAL, PAID, "door_open", DOOR, days=2 / DAY, state=state)
    assert raised(opened) == []
    [timer] = opened.timers
    assert timer.delay == DriversConfig().held_open_seconds
    check = timer.stimulus
    later = run(COMMERCIAL, PAID, check.kind, dict(check.data), days=40 / DAY, state=state)
    assert raised(later) == ["alarm:held_open"]


def test_a_door_closed_in_time_raises_no_held_open() -> None:
    state = LocalState()
    run(COMMERCIAL, PAID, "exit_button", DOOR, state=state)
    check = run(COMMERCIAL, PAID, "door_open", DOOR, days=1 / DAY, state=state).timers[0].stimulus
    run(COMMERCIAL, PAID, "door_closed", DOOR, days=5 / DAY, state=state)
    assert raised(run(COMMERCIAL, PAID, check.kind, dict(check.data), days=40 / DAY, state=state)) == []


def test_the_fire_release_suppresses_held_open_until_the_door_closes() -> None:
    state = LocalState()
    run(COMMERCIAL, PAID, "fire_release", {}, state=state)
    check = run(COMMERCIAL, PAID, "door_open", DOOR, days=1 / DAY, state=state).timers[0].stimulus
    assert raised(run(COMMERCIAL, PAID, check.kind, dict(check.data), days=600 / DAY, state=state)) == []


def test_repeated_sensor_alarms_are_debounced_per_sensor_and_kind() -> None:
    state = LocalState()
    first = run(COMMERCIAL, PAID, "fall", {}, source="mr01-a", state=state)
    again = run(COMMERCIAL, PAID, "fall", {}, source="mr01-a", days=5 / DAY, state=state)
    other = run(COMMERCIAL, PAID, "fall", {}, source="mr01-b", days=6 / DAY, state=state)
    bed = run(COMMERCIAL, PAID, "bed_exit", {}, source="mr01-a", days=7 / DAY, state=state)
    later = run(COMMERCIAL, PAID, "fall", {}, source="mr01-a", days=40 / DAY, state=state)
    assert [len(r.events) for r in (first, again, other, bed, later)] == [2, 0, 2, 2, 2]
    assert state.debounced == 1


def test_a_silent_sensor_is_reported_once_and_again_when_it_returns() -> None:
    state = LocalState()
    run(COMMERCIAL, PAID, "heartbeat", {}, source="mr01-a", state=state)
    silence = DriversConfig().sensor_silence_seconds
    assert raised(run(COMMERCIAL, PAID, "silence_check", {}, days=(silence - 1) / DAY, state=state)) == []
    assert raised(run(COMMERCIAL, PAID, "silence_check", {}, days=(silence + 1) / DAY, state=state)) == [
        "health:sensor_offline"
    ]
    assert raised(run(COMMERCIAL, PAID, "silence_check", {}, days=(silence * 2) / DAY, state=state)) == []
    back = run(COMMERCIAL, PAID, "heartbeat", {}, source="mr01-a", days=(silence * 3) / DAY, state=state)
    assert raised(back) == ["health:sensor_online"]


def test_presence_is_reported_on_change_only() -> None:
    state = LocalState()
    seen = [
        run(COMMERCIAL, PAID, "presence", {"present": p}, source="mr01-a", state=state) for p in (True, True, False)
    ]
    assert [raised(r) for r in seen] == [["sensor:presence"], [], ["sensor:presence"]]


def test_a_call_that_did_not_open_makes_no_door_log_when_the_setting_is_off() -> None:
    ents = holdings(COMMERCIAL, PAID)
    settings = {"visitor_call_door_log": False}
    ctx = Context(lambda a, s: decide(ents, T0, a, s), CREDENTIALS, settings, "commercial", ents.doors, DriversConfig())
    reaction = react(Stimulus("call", None, {"door": "door-1", "accounts": ["a-1"]}, T0), ctx, LocalState())
    assert (did(reaction), raised(reaction)) == (["calls.ring_app"], [])


def test_the_attendance_plan_bounds_personnel() -> None:
    reaction = run(COMMERCIAL, [svc("attendance", plan="0-200")], "attendance", {"count": 201})
    assert reaction.decisions[0]["reason"] == "plan_exceeded"


@pytest.mark.parametrize(
    ("kind", "source", "data", "message"),
    [
        ("retina", None, {}, "unknown stimulus kind 'retina'"),
        ("card", None, {"door": "door-1"}, "card needs data.value"),
        ("card", None, {"door": "door 1", "value": "x"}, "card: data.door must be"),
        ("fall", None, {}, "fall needs --source"),
        ("presence", "mr01-a", {"present": "yes"}, "data.present must be true or false"),
        ("battery", "mr01-a", {"percent": -1}, "data.percent must be a whole number"),
        ("call", None, {"door": "door-1", "accounts": "a-1"}, "data.accounts must be a list"),
        ("tamper", None, {"door": "door-1", "evil": 1}, "unknown field 'evil'"),
        ("tamper", None, [], "data must be a JSON object"),
        ("held_open_check", None, {"door": "door-1", "opened_at": 1.0}, "unknown stimulus kind"),
    ],
)
def test_bad_stimuli_are_refused_with_the_field_named(kind: str, source: str | None, data: Any, message: str) -> None:
    from agent.errors import BadRequest

    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        parse(kind, source, data, T0)


def test_every_kind_has_a_handler() -> None:
    from agent.local.reactions import HANDLERS
    from agent.local.stimuli import INTERNAL, KINDS

    assert set(HANDLERS) == set(KINDS) | set(INTERNAL)


@pytest.mark.parametrize(
    ("why", "services", "days", "value", "pattern"),
    [
        ("a held card", PAID, 0, "04A1B2", "granted"),
        ("an unknown card", PAID, 0, "FFFF", "denied"),
        ("a held card while doors are limited: it opens, and says so", LIMITED, 0, "04A1B2", "limited"),
        ("an unknown card while doors are limited", LIMITED, 0, "FFFF", "denied"),
        ("a held card past the document's exp", PAID, DOCUMENT_EXPIRED, "04A1B2", "granted"),
    ],
)
def test_the_reader_answers_each_credential_after_the_relay(
    why: str, services: list[dict[str, Any]], days: float, value: str, pattern: str
) -> None:
    """Exactly one reader answer per credential, after the relay (a person waits for the door first)."""
    reaction = run(COMMERCIAL, services, "card", {"door": "door-1", "value": value}, days=days)
    assert signals(reaction) == [pattern], why
    assert reaction.actions[-1].driver == "reader"
    assert reaction.actions[-1].args["door"] == "door-1"
