"""The local logic: a stimulus at the hardware -> what the device does and reports (docs/drivers.md).

Theory of operation. :func:`react` looks the stimulus's kind up in one table (:data:`HANDLERS`) and
returns a :class:`Reaction`: the output-driver :class:`~agent.drivers.interfaces.Action` s to carry
out, the events to queue, the decisions taken on the way (each with its reason, as ``edge-agent
check`` gives it) and the timers to set (a door left open is checked again later). It does no I/O
and reads no clock: time is the stimulus's, entitlements come in as a ``decide`` function, and the
little memory the hardware needs (is a door released or open, when did each sensor last speak,
what alarms were just raised) is a :class:`LocalState` the handlers update. The daemon
(``agent/local/side.py``) performs the actions, queues the events and keeps the state.

The rules (DOMAIN.md "What expiry means on the device"):

* a presented credential opens its door if the device holds it for that door and it is valid now;
  credentials already held keep working while doors are limited (only *issuing* is refused); a
  dynamic QR code only while ``dynamic_qr`` is active; every attempt is a ``door_log``;
* egress (exit button, fire release) always opens, whatever the entitlements say;
* a door opened without a release is ``forced_open``; one open past ``held_open_seconds`` is
  ``held_open``; with tamper and emergency these are ``alarm`` events, which the outbox holds while
  ``report_alarm`` is denied and sends once allowed;
* a visitor call rings the app of each account ``app_call`` allows, the indoor monitors (in a
  community, while ``with_indoor_monitor`` is on for the apartment), and the phone while
  ``landline`` is active and the site setting allows it; a call that did not open the door makes a
  ``door_log`` when the site setting ``visitor_call_door_log`` says so;
* MR01 fall and bed exit always make a ``sensor`` event and ring the indoor monitor; a ``call_alert``
  is raised only while ``sensor_call_alert`` is active; the same alarm from the same sensor within
  ``debounce_seconds`` is one; a sensor silent for ``sensor_silence_seconds`` makes a ``health``
  event, as does a low battery;
* each premium feature (elevator, package room, third-party camera, video storage, booking,
  third-party lock, attendance) is one driver call gated by its service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from agent.config import DriversConfig
from agent.drivers.interfaces import Action
from agent.entitlements.policy import DOORS_LIMITED, Decision
from agent.local.credentials import CredentialIndex
from agent.local.stimuli import Stimulus
from agent.outbox.events import NewEvent

Decide = Callable[[str, str | int | None], Decision]


class Context(NamedTuple):
    """What a reaction may read besides the stimulus."""

    decide: Decide
    credentials: CredentialIndex
    settings: Mapping[str, Any]
    project_type: str | None
    doors: tuple[str, ...]  # the project's doors (a fire release without a door opens all)
    timing: DriversConfig


@dataclass
class DoorState:
    released_until: float = 0.0  # a release (grant, egress) lets the door open until then
    open_since: float | None = None
    fire: bool = False  # released by the fire alarm: open until closed, no held_open
    unknown: bool = False  # its contact cannot be read (the module is offline): neither open nor closed

    @property
    def state(self) -> str:
        return "unknown" if self.unknown else ("open" if self.open_since is not None else "closed")


@dataclass
class SensorState:
    last_seen: float
    present: bool | None = None
    battery_low: bool = False
    offline: bool = False
    alarms: dict[str, float] = field(default_factory=dict)  # kind -> when last raised (debounce)


@dataclass
class LocalState:
    """The hardware's short memory; lost on restart, which costs at most a repeated alarm."""

    doors: dict[str, DoorState] = field(default_factory=dict)
    sensors: dict[str, SensorState] = field(default_factory=dict)
    debounced: int = 0
    calls: dict[str, float] = field(default_factory=dict)  # door -> when its call started (until call_ended)

    def door(self, door: str) -> DoorState:
        return self.doors.setdefault(door, DoorState())


class Timer(NamedTuple):
    """Feed ``stimulus`` back to :func:`react` after ``delay`` seconds."""

    delay: float
    stimulus: Stimulus


class Reaction(NamedTuple):
    actions: list[Action]
    events: list[NewEvent]
    decisions: list[dict[str, Any]]
    timers: list[Timer]
    notes: list[str]


def _reaction() -> Reaction:
    return Reaction([], [], [], [], [])


def _ask(ctx: Context, out: Reaction, action: str, subject: str | int | None = None) -> Decision:
    decision = ctx.decide(action, subject)
    out.decisions.append(decision.as_json(action, subject))
    return decision


def _event(out: Reaction, s: Stimulus, typ: str, kind: str, data: dict[str, Any]) -> None:
    out.events.append(NewEvent(typ, kind, s.source, data, s.at))


def _release(ctx: Context, state: LocalState, out: Reaction, door: str, at: float, seconds: int | None = None) -> None:
    seconds = seconds or ctx.timing.relay_seconds
    out.actions.append(Action("relay", "open", {"door": door, "seconds": seconds}))
    state.door(door).released_until = max(state.door(door).released_until, at + seconds)


# -- access ----------------------------------------------------------------------------------------
def _access(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out, door = _reaction(), s.data["door"]
    held = ctx.credentials.find(door, s.kind, s.data["value"])
    reason = None
    if held is None:
        reason = "unknown_credential"
    elif held.valid_from is not None and s.at < held.valid_from:
        reason = "not_yet_valid"
    elif held.valid_until is not None and s.at >= held.valid_until:
        reason = "credential_expired"
    elif held.dynamic and not _ask(ctx, out, "dynamic_qr").allowed:
        reason = "dynamic_qr_inactive"
    credential = held.id if held is not None else None
    if reason is not None:
        out.actions.append(Action("reader", "signal", {"door": door, "pattern": "denied"}))
        out.notes.append(f"{s.kind} at {door} denied: {reason}")
        _event(
            out, s, "door_log", "denied", {"door": door, "method": s.kind, "credential": credential, "reason": reason}
        )
        return out
    assert held is not None
    _release(ctx, state, out, door, s.at)
    # The relay first, then the reader's answer; "limited" tells the installer the doors are limited.
    limited = ctx.decide("report_alarm", None).reason == DOORS_LIMITED
    out.actions.append(Action("reader", "signal", {"door": door, "pattern": "limited" if limited else "granted"}))
    _event(out, s, "door_log", "granted", {"door": door, "method": s.kind, "credential": credential})
    out.notes.append(f"{s.kind} {credential} opens {door}")
    if held.floors:
        if _ask(ctx, out, "elevator_control").allowed:
            out.actions.append(Action("elevator", "call", {"floors": held.floors, "door": door}))
        else:
            out.notes.append("no elevator call: elevator_control is not active")
    return out


# -- egress and the door contact --------------------------------------------------------------------
def _exit_button(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out, door = _reaction(), s.data["door"]
    _release(ctx, state, out, door, s.at)
    _event(out, s, "door_log", "egress", {"door": door, "method": "exit_button"})
    out.notes.append(f"exit button opens {door} (egress is never gated)")
    return out


def _fire_release(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    doors = (s.data["door"],) if "door" in s.data else ctx.doors
    for door in doors:
        _release(ctx, state, out, door, s.at, ctx.timing.held_open_seconds)
        state.door(door).fire = True
        _event(out, s, "door_log", "egress", {"door": door, "method": "fire_release"})
    out.notes.append(f"fire release opens {', '.join(doors) or 'no door'} (egress is never gated)")
    return out


def _door_open(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out, door = _reaction(), s.data["door"]
    ds = state.door(door)
    ds.unknown = False
    if ds.open_since is not None:
        return out  # a repeated contact report
    ds.open_since = s.at
    if not ds.fire and s.at > ds.released_until:
        _event(out, s, "alarm", "forced_open", {"door": door})
        out.notes.append(f"{door} opened without a release: forced_open")
    check = Stimulus("held_open_check", s.source, {"door": door, "opened_at": s.at}, s.at)
    out.timers.append(Timer(ctx.timing.held_open_seconds, check))
    return out


def _door_closed(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    ds = state.door(s.data["door"])
    ds.open_since, ds.fire, ds.unknown = None, False, False
    return _reaction()


def _held_open_check(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out, door = _reaction(), s.data["door"]
    ds = state.door(door)
    if ds.open_since is not None and ds.open_since == s.data["opened_at"] and not ds.fire:
        seconds = round(s.at - ds.open_since)
        _event(out, s, "alarm", "held_open", {"door": door, "open_seconds": seconds})
        out.notes.append(f"{door} held open {seconds} s: held_open")
    return out


# -- alarm inputs ------------------------------------------------------------------------------------
def _alarm(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    _event(out, s, "alarm", s.kind, {k: v for k, v in s.data.items() if k in ("door", "device")})
    if not _ask(ctx, out, "report_alarm").allowed:
        out.notes.append(f"{s.kind} alarm recorded and held: report_alarm is denied")
    return out


def _reader_refused(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    _event(out, s, "alarm", "reader_refused", dict(s.data))
    out.notes.append(f"reader {s.data['device']} at {s.data['door']} refused: {s.data['reason']}")
    if not _ask(ctx, out, "report_alarm").allowed:
        out.notes.append("reader_refused alarm recorded and held: report_alarm is denied")
    return out


# -- real hardware reachable or not ---------------------------------------------------------------------
def _hardware(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    offline = s.kind == "hardware_offline"
    doors = list(s.data.get("doors", []))
    for door in doors:
        state.door(door).unknown = offline
        if offline:
            state.door(door).open_since = None  # known again from the next reading, which raises what it finds
    data: dict[str, Any] = {"device": s.data["device"], "doors": doors}
    if "reason" in s.data:
        data["reason"] = s.data["reason"]
    _event(out, s, "health", s.kind, data)
    what = f"; the state of {', '.join(doors)} is unknown" if offline and doors else ""
    out.notes.append(f"{s.data['device']} {'offline' if offline else 'online'}{what}")
    return out


# -- the call panel ----------------------------------------------------------------------------------
def _call(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out, door = _reaction(), s.data["door"]
    state.calls[door] = s.at  # in progress until call_ended, or call_seconds (busy(): no reboot meanwhile)
    apartment = s.data.get("apartment")
    rang: list[str] = []
    skipped: list[dict[str, str]] = []
    for account in s.data.get("accounts", []):
        decision = _ask(ctx, out, "app_call", f"account:{account}")
        if decision.allowed:
            out.actions.append(Action("calls", "ring_app", {"account": account, "door": door}))
            rang.append(f"app:{account}")
        else:
            skipped.append({"target": f"app:{account}", "reason": decision.reason})
    monitors = s.data.get("monitors", [])
    if monitors:
        allowed, reason = True, ""
        if ctx.project_type == "community" and apartment is not None:
            decision = _ask(ctx, out, "with_indoor_monitor", f"apartment:{apartment}")
            allowed, reason = decision.allowed, decision.reason
        for monitor in monitors:
            if allowed:
                out.actions.append(Action("monitor", "ring", {"monitor": monitor, "caller": door}))
                rang.append(f"monitor:{monitor}")
            else:
                skipped.append({"target": f"monitor:{monitor}", "reason": reason})
    if s.data.get("landline"):
        accounts = s.data.get("accounts", [])
        target = f"apartment:{apartment}" if apartment else (f"account:{accounts[0]}" if accounts else "project")
        if ctx.settings.get("landline") is False:
            skipped.append({"target": f"landline:{target}", "reason": "landline_off"})
        elif (decision := _ask(ctx, out, "landline", target)).allowed:
            out.actions.append(Action("calls", "forward_landline", {"target": target, "door": door}))
            rang.append(f"landline:{target}")
        else:
            skipped.append({"target": f"landline:{target}", "reason": decision.reason})
    out.notes.append(f"call from {door} rings {', '.join(rang) or 'nobody'}")
    for skip in skipped:
        out.notes.append(f"not rung: {skip['target']} ({skip['reason']})")
    if s.data.get("opened"):
        _release(ctx, state, out, door, s.at)
        _event(out, s, "door_log", "granted", {"door": door, "method": "call", "rang": rang, "skipped": skipped})
    elif ctx.settings.get("visitor_call_door_log", True):  # on unless the site turns it off
        _event(out, s, "door_log", "call_not_opened", {"door": door, "rang": rang, "skipped": skipped})
    return out


def _call_ended(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    state.calls.pop(s.data["door"], None)
    return _reaction()


def busy(state: LocalState, now: float, timing: DriversConfig) -> str | None:
    """Why the device must not reboot now, if it must not: a call in progress, a door it released still open."""
    if any(now - started < timing.call_seconds for started in state.calls.values()):
        return "call_in_progress"
    for ds in state.doors.values():
        if ds.open_since is not None and not ds.unknown:
            return "door_open"
    return None


# -- MR01 ----------------------------------------------------------------------------------------------
def _seen(s: Stimulus, state: LocalState, out: Reaction) -> SensorState:
    assert s.source is not None
    sensor = state.sensors.get(s.source)
    if sensor is None:
        sensor = state.sensors[s.source] = SensorState(last_seen=s.at)
    sensor.last_seen = max(sensor.last_seen, s.at)
    if sensor.offline and s.kind != "sensor_offline":
        sensor.offline = False
        _event(out, s, "health", "sensor_online", {"sensor": s.source})
    return sensor


_SENSOR_KIND: Final = {"fall": "fall_detected", "bed_exit": "bed_exit"}


def _sensor_alarm(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    sensor = _seen(s, state, out)
    last = sensor.alarms.get(s.kind)
    if last is not None and 0 <= s.at - last < ctx.timing.debounce_seconds:
        state.debounced += 1
        out.notes.append(f"{s.kind} from {s.source} again within {ctx.timing.debounce_seconds:g} s: debounced")
        return out
    sensor.alarms[s.kind] = s.at
    kind = _SENSOR_KIND[s.kind]
    monitor = s.data.get("monitor", "local")
    _event(out, s, "sensor", kind, {"sensor": s.source})
    out.actions.append(Action("monitor", "ring", {"monitor": monitor, "caller": str(s.source)}))
    if _ask(ctx, out, "sensor_call_alert").allowed:
        _event(out, s, "call_alert", kind, {"sensor": s.source})
        out.notes.append(f"{kind} from {s.source}: monitor rung, call alert raised")
    else:
        out.notes.append(f"{kind} from {s.source}: monitor rung; no call alert (sensor_call_alert is not active)")
    return out


def _presence(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    sensor = _seen(s, state, out)
    present = bool(s.data["present"])
    if sensor.present != present:
        sensor.present = present
        _event(out, s, "sensor", "presence", {"sensor": s.source, "present": present})
    return out


def _battery(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    sensor = _seen(s, state, out)
    percent, low = s.data["percent"], ctx.timing.battery_low_percent
    if percent < low and not sensor.battery_low:
        sensor.battery_low = True
        _event(out, s, "health", "battery_low", {"sensor": s.source, "percent": percent})
    elif percent >= low + 5:
        sensor.battery_low = False
    return out


def _sensor_offline(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    sensor = _seen(s, state, out)
    if not sensor.offline:
        sensor.offline = True
        _event(out, s, "health", "sensor_offline", {"sensor": s.source})
    return out


def _heartbeat(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    _seen(s, state, out)
    return out


def _silence_check(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    limit = ctx.timing.sensor_silence_seconds
    for name, sensor in sorted(state.sensors.items()):
        if not sensor.offline and s.at - sensor.last_seen >= limit:
            sensor.offline = True
            silent = round(s.at - sensor.last_seen)
            out.events.append(
                NewEvent("health", "sensor_offline", name, {"sensor": name, "silent_seconds": silent}, s.at)
            )
            out.notes.append(f"{name} silent for {silent} s: sensor_offline")
    return out


# -- premium features ----------------------------------------------------------------------------------
class _Feature(NamedTuple):
    action: str  # the policy action that gates it
    subject: Callable[[Mapping[str, Any]], str | int | None]
    driver: Action | None  # args filled from the stimulus's data by name
    args: tuple[str, ...]


def _project(_data: Mapping[str, Any]) -> str | None:
    return None


def _apartment(data: Mapping[str, Any]) -> str | None:
    return f"apartment:{data['apartment']}" if "apartment" in data else None


FEATURES: Final[Mapping[str, _Feature]] = {
    "elevator": _Feature("elevator_control", _project, Action("elevator", "call", {}), ("floors", "door")),
    "package": _Feature("package_room", _project, Action("monitor", "show_notice", {}), ("monitor",)),
    "camera": _Feature("third_party_camera", _project, Action("camera", "stream", {}), ("camera", "to")),
    "recording": _Feature("video_storage", _apartment, Action("storage", "upload", {}), ("clip",)),
    "booking": _Feature("booking", _project, Action("booking", "confirm", {}), ("booking", "door")),
    "lock": _Feature("third_party_lock", _project, Action("lock", "unlock", {}), ("lock",)),
    "attendance": _Feature("attendance", lambda data: int(data["count"]), None, ()),
}


def _feature(s: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    out = _reaction()
    feature = FEATURES[s.kind]
    decision = _ask(ctx, out, feature.action, feature.subject(s.data))
    if not decision.allowed:
        out.notes.append(f"{s.kind}: not done, {feature.action} {decision.reason} ({decision.detail})")
        return out
    if feature.driver is not None:
        args: dict[str, Any] = {name: s.data[name] for name in feature.args}
        if s.kind == "package":
            args["text"] = "A parcel is waiting in the package room"
        if s.kind == "elevator":
            args["floors"] = tuple(args["floors"])
        out.actions.append(feature.driver._replace(args=args))
    out.notes.append(f"{s.kind}: done ({feature.action} {decision.reason})")
    return out


Handler = Callable[[Stimulus, Context, LocalState], Reaction]

HANDLERS: Final[Mapping[str, Handler]] = {
    **dict.fromkeys(("card", "pin", "face", "qr", "ble"), _access),
    "exit_button": _exit_button,
    "fire_release": _fire_release,
    "door_open": _door_open,
    "door_closed": _door_closed,
    "held_open_check": _held_open_check,
    "tamper": _alarm,
    "emergency": _alarm,
    "power_loss": _alarm,
    "reader_refused": _reader_refused,
    "hardware_offline": _hardware,
    "hardware_online": _hardware,
    "call": _call,
    "call_ended": _call_ended,
    "fall": _sensor_alarm,
    "bed_exit": _sensor_alarm,
    "presence": _presence,
    "battery": _battery,
    "sensor_offline": _sensor_offline,
    "heartbeat": _heartbeat,
    "silence_check": _silence_check,
    **dict.fromkeys(FEATURES, _feature),
}


def react(stimulus: Stimulus, ctx: Context, state: LocalState) -> Reaction:
    """What the device does about ``stimulus`` (``stimulus`` is checked: :func:`agent.stimuli.parse`)."""
    return HANDLERS[stimulus.kind](stimulus, ctx, state)
