"""The daemon's hardware side: stimuli in, driver actions and events out (docs/drivers.md).

:class:`LocalSide` keeps what :func:`agent.reactions.react` reads (the credential index, the site
settings in effect, the hardware's short memory), runs each stimulus through it, performs the
actions on the output drivers and queues the events in the outbox.

Order at the door: the relay acts on the decision first, then the event is queued. A person at the
door waits for the relay, not for an fsync (bench/bench_access.py); the door log is durable before
``edge-agent simulate`` returns, and a crash in between loses at most that one log line, never a
credential, a setting or an alarm. Remote ``open_door`` commands are the other way round (persisted
with the command, acted on, then deleted with the door log in one transaction): at least once.

Stimuli from drivers (the MR01 transport, the daemon's own timers) are taken from a queue by
:meth:`run` without waiting for each event's fsync, so a burst shares group commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from agent.config import DriversConfig
from agent.drivers.interfaces import Outputs, perform
from agent.drivers.registry import Input
from agent.errors import OutboxFull, StoreError, StoreFull
from agent.intake.commands import effective_settings
from agent.local import door_actions
from agent.local.credentials import CredentialIndex, save_repaired
from agent.local.reactions import Context, LocalState, Reaction, busy, react
from agent.local.stimuli import Stimulus
from agent.outbox import Outbox, Queued
from agent.outbox.events import NewEvent
from agent.ports import Now, Rights
from agent.runtime.faults import fault_point
from agent.store.database import Store

log = structlog.get_logger("agent.local")

MAX_QUEUED = 20_000  # driver stimuli waiting to be handled (an MR01 burst of 10,000 fits twice)


class LocalSide:
    """Stimuli to actions and events, for one daemon: handed its ``[drivers]`` section, the device's
    rights (entitlements and decisions), the store (credentials, settings, door actions) and trusted time."""

    def __init__(
        self,
        drivers: DriversConfig,
        rights: Rights,
        store: Store,
        now: Now,
        outbox: Outbox,
        outputs: Outputs,
        inputs: Sequence[Input] = (),
    ) -> None:
        self._drivers, self._rights, self._store, self._now = drivers, rights, store, now
        self._outbox, self.outputs = outbox, outputs
        self.inputs = list(inputs)  # started by run(), closed when it ends
        self.state = LocalState()
        self.credentials = CredentialIndex()
        self.settings: dict[str, Any] = {}
        self._queue: asyncio.Queue[Stimulus] = asyncio.Queue()
        self._stale = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self.changed()  # load at the first chance, and carry out door openings persisted before a restart
        self._pending: set[asyncio.Future[Queued]] = set()
        self.handled = 0
        self.dropped = 0  # driver stimuli dropped in a flood (beyond MAX_QUEUED waiting)
        self.failed = 0  # stimuli whose handling failed unexpectedly (a defect, logged)

    # -- what reactions read -------------------------------------------------------------------------
    def changed(self) -> None:
        """Credentials, settings or door actions may have changed (a command or document was taken)."""
        self._stale.set()
        self._queue.put_nowait(_WAKE)  # run() refreshes at once: a remote opening must not wait

    async def refresh(self) -> None:
        """Reload the credential index and the settings; carry out remote door openings."""
        ents = self._rights.entitlements
        async with self._store.transaction("DEFERRED") as tx:
            self.credentials = await CredentialIndex.load(tx)
            self.settings = await effective_settings(tx, ents.settings if ents else {}, ents.iat if ents else 0.0)
            waiting = await door_actions.pending(tx)
        if self.credentials.repaired:
            await self._save_repaired(self.credentials)
        for action in waiting:
            seconds = action.seconds or self._drivers.relay_seconds
            await self.outputs.relay.open(action.door, seconds)
            now = self._now()
            self.state.door(action.door).released_until = now + seconds
            data = {"door": action.door, "method": "remote", "command": action.command_id}
            async with self._store.transaction() as tx:
                await door_actions.done(tx, action)
                await self._outbox.add_in(tx, [NewEvent("door_log", "granted", None, data, now)])
            log.info("door_opened_remotely", door=action.door, command_id=action.command_id)

    async def _save_repaired(self, index: CredentialIndex) -> None:
        """Keep the index entries packed at this load beside their credentials (the next start reads them)."""
        count = len(index.repaired)
        try:
            async with self._store.transaction() as tx:
                await save_repaired(tx, index)
        except StoreFull as exc:  # the index in memory is whole: only the next start pays again
            log.warning("credentials_repack_not_saved", count=count, error=str(exc))
            return
        log.info("credentials_repacked", count=count)

    async def _refresh_if_stale(self) -> None:
        # Under a lock: a stimulus must not be judged on the old index while a reload is under way.
        async with self._refreshing:
            if not self._stale.is_set():
                return
            self._stale.clear()
            try:
                await self.refresh()
            except (StoreError, OutboxFull) as exc:  # a full or failing disk: act on what is loaded, retry later
                self._stale.set()
                log.error("local_refresh_incomplete", error=str(exc))

    def context(self) -> Context:
        ents = self._rights.entitlements
        return Context(
            decide=self._rights.decide,
            credentials=self.credentials,
            settings=self.settings,
            project_type=ents.project_type if ents else None,
            doors=ents.doors if ents else (),
            timing=self._drivers,
        )

    # -- handling ------------------------------------------------------------------------------------
    async def _react(self, stimulus: Stimulus) -> tuple[Reaction, list[asyncio.Future[Queued]]]:
        fault_point(f"stimulus:{stimulus.kind}")
        reaction = react(stimulus, self.context(), self.state)
        for action in reaction.actions:  # the relay first: a person at the door waits for it
            await perform(self.outputs, action)
            # what the device did, in the journal for an installer (never a credential's value: none is an
            # argument; a forwarding number is left out)
            shown = {k: v for k, v in action.args.items() if k not in _PRIVATE}
            log.info("output_action", driver=action.driver, op=action.op, args=shown, cause=stimulus.kind,
                     source=stimulus.source)  # fmt: skip
        loop = asyncio.get_running_loop()
        for timer in reaction.timers:
            loop.call_later(timer.delay, self._timer, timer.stimulus)
        self.handled += 1
        return reaction, [self._outbox.add(event) for event in reaction.events]

    async def handle(self, stimulus: Stimulus) -> dict[str, Any]:
        """React, perform, queue; return once the events are durable, with what was done and why."""
        await self._refresh_if_stale()
        reaction, futures = await self._react(stimulus)
        queued: list[dict[str, Any]] = []
        for event, future in zip(reaction.events, futures, strict=True):
            try:
                done = await future
            except OutboxFull as exc:
                queued.append({"type": event.type, "kind": event.kind, "error": str(exc)})
                continue
            held = self._outbox.holds(event.type)
            queued.append(
                {"type": event.type, "kind": event.kind, "seq": done.seq, "event_id": done.event_id, "held": held}
            )
        return {
            "actions": [a.as_json() for a in reaction.actions],
            "events": queued,
            "decisions": reaction.decisions,
            "notes": reaction.notes,
        }

    def feed(self, stimulus: Stimulus) -> None:
        """A stimulus from a driver, handled by :meth:`run` (never blocks). Beyond :data:`MAX_QUEUED`
        waiting, a flood's stimuli are dropped and counted: memory stays bounded whatever arrives."""
        if self._queue.qsize() >= MAX_QUEUED:
            if not self.dropped:
                log.error("stimuli_dropped", queued=MAX_QUEUED, kind=stimulus.kind, source=stimulus.source)
            self.dropped += 1
            return
        self._queue.put_nowait(stimulus)

    def _timer(self, stimulus: Stimulus) -> None:
        """A stimulus from the daemon's own timers: never dropped (there are few, one per open door)."""
        self._queue.put_nowait(stimulus)

    def _settled(self, future: asyncio.Future[Queued]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.error("driver_event_not_queued", error=str(exc))

    async def run(self) -> None:
        """Run the input sources, each a task of this TaskGroup, and handle their stimuli until cancelled."""
        async with asyncio.TaskGroup() as sources:
            for source in self.inputs:
                sources.create_task(source.run(self.feed), name=f"input-{source.name}")
            await self._handle()

    async def _handle(self) -> None:
        silence = max(1.0, self._drivers.sensor_silence_seconds / 4)
        while True:
            try:
                async with asyncio.timeout(silence):
                    stimulus = await self._queue.get()
            except TimeoutError:
                stimulus = Stimulus("silence_check", None, {}, 0.0)
            batch = [stimulus, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
            await self._refresh_if_stale()  # after taking the batch: no wake-up is taken without its refresh
            now = self._now()
            for item in batch:
                if item is _WAKE:
                    continue
                try:
                    _, futures = await self._react(item._replace(at=now) if item.kind in _TIMED else item)
                except Exception as exc:  # a defect: this stimulus is lost (and said so), the door goes on
                    self.failed += 1
                    log.exception("stimulus_failed", kind=item.kind, source=item.source, error=repr(exc)[:200])
                    continue
                for future in futures:
                    self._pending.add(future)
                    future.add_done_callback(self._settled)
            await asyncio.sleep(0)  # let the writer and the session run between batches

    def busy(self) -> str | None:
        """Why a reboot must wait now (a call in progress, a door still open), or None (the firmware engine asks)."""
        return busy(self.state, self._now(), self._drivers)

    def zone(self) -> str | None:
        """The site's time zone (its ``timezone`` setting), for a firmware job's window."""
        zone = self.settings.get("timezone")
        return zone if isinstance(zone, str) else None

    def status(self) -> dict[str, Any]:
        """For ``edge-agent status``."""
        return {
            "kind": self._drivers.kind,
            "credentials": len(self.credentials),
            "stimuli_handled": self.handled,
            "stimuli_dropped": self.dropped,
            "stimuli_failed": self.failed,
            "debounced": self.state.debounced,
            "doors": {door: ds.state for door, ds in sorted(self.state.doors.items())},
            "mr01": None,  # until it listens, if configured
            **{source.name: source.stats() for source in self.inputs},
        }


_PRIVATE = frozenset({"target", "value", "pin", "code"})  # action arguments never logged
_WAKE = Stimulus("wake", None, {}, 0.0)  # not a stimulus: tells run() to refresh
_TIMED = frozenset({"held_open_check", "silence_check"})  # their time is when they fire
