"""The control socket's operations (docs/control.md): ``raise``, ``status``, ``check``, ``simulate``.

Each takes the request's fields and returns the response's, or raises :class:`ControlError` with a
code; the socket (``agent/control/server.py``) frames, authorises and answers. Built by the daemon with
what each op needs, nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, cast

from agent.errors import BadRequest, ControlError, OutboxFull
from agent.local import stimuli
from agent.local.side import LocalSide
from agent.outbox import Outbox
from agent.outbox.events import NewEvent, validate
from agent.ports import Decide, Now
from agent.runtime.metrics import Metrics
from agent.runtime.status import View

RAISABLE: Final = frozenset({"alarm", "sensor", "call_alert", "door_log", "health"})  # by drivers, locally

Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlOps:
    """The ops of one daemon."""

    def __init__(
        self,
        decide: Decide,
        now: Now,
        outbox: Outbox,
        local: LocalSide,
        view: Callable[[], Awaitable[View]],
        metrics: Metrics | None,
    ) -> None:
        self._decide, self._now, self._outbox = decide, now, outbox
        self._local, self._view, self._metrics = local, view, metrics

    def table(self) -> Mapping[str, Op]:
        """Op name to handler, for :class:`agent.control.ControlServer`."""
        return {"raise": self.raise_event, "status": self.status, "check": self.check, "simulate": self.simulate}

    async def raise_event(self, request: dict[str, Any]) -> dict[str, Any]:
        """Queue an event a local driver raised; answer once it is durable, with its seq and whether held."""
        raw = request.get("event")
        if not isinstance(raw, dict):
            raise ControlError("bad_event", "raise needs an event object")
        typ = raw.get("type")
        if typ not in RAISABLE:
            raise ControlError("bad_event", f"type {typ!r} is not one of {', '.join(sorted(RAISABLE))}")
        try:
            fields = cast(
                tuple[str, str | None, dict[str, Any]], (raw.get("kind"), raw.get("source"), raw.get("data", {}))
            )
            event = validate(NewEvent(typ, *fields, self._now()))
        except ValueError as exc:
            raise ControlError("bad_event", str(exc)) from None
        try:
            queued = await self._outbox.add(event)
        except OutboxFull as exc:
            raise ControlError("outbox_full", str(exc)) from None
        return {"seq": queued.seq, "event_id": queued.event_id, "held": self._outbox.holds(event.type)}

    async def status(self, request: dict[str, Any]) -> dict[str, Any]:
        """The device's state (agent/runtime/status.py)."""
        return {"status": (await self._view()).as_json()}

    async def simulate(self, request: dict[str, Any]) -> dict[str, Any]:
        """A stimulus as the hardware would give it: what the local logic did and why."""
        try:
            stimulus = stimuli.parse(request.get("kind"), request.get("source"), request.get("data", {}), self._now())
        except BadRequest as exc:
            raise ControlError("bad_stimulus", str(exc)) from None
        result = await self._local.handle(stimulus)
        if self._metrics is not None:
            for decision in result["decisions"]:
                self._metrics.decided(decision["action"], decision["reason"])
        return result

    async def check(self, request: dict[str, Any]) -> dict[str, Any]:
        """Whether an action is allowed now, and why (the entitlement decision)."""
        action, subject = request.get("action"), request.get("subject")
        if not isinstance(action, str) or not (subject is None or isinstance(subject, str | int)):
            raise ControlError("bad_request", "check needs an action and, optionally, a subject")
        try:
            decision = self._decide(action, subject)
        except BadRequest as exc:
            raise ControlError("bad_request", str(exc)) from None
        if self._metrics is not None:
            self._metrics.decided(action, decision.reason)
        return {"decision": decision.as_json(action, subject)}
