"""The outbox of one device: the counters it keeps in memory, and what it does with its rows.

The theory of operation is in ``agent/outbox/__init__.py``; the decisions are ``policy.py``'s, the SQL
``rows.py``'s, the batching ``writer.py``'s, and one connection's walk over the queue ``reader.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import structlog

from agent.clock import TrustedClock
from agent.errors import EdgeAgentError, OutboxFull, StoreFull
from agent.outbox import policy, rows
from agent.outbox.events import HIGHEST_PRIORITY, PRIORITY, REPLY_PRIORITY, NewEvent, event_body
from agent.outbox.rows import OutRow
from agent.outbox.writer import MAX_BATCH, GroupCommit, Pending, fail, settle
from agent.store import sidecar
from agent.store.database import Store, Transaction
from protocol.ids import uuid7

log = structlog.get_logger("agent.outbox")

FETCH = 256  # rows per read of the pump
BURST_CHUNK = MAX_BATCH  # events of a burst per commit (add_many)


class Queued(NamedTuple):
    """Where a new event landed."""

    seq: int
    event_id: str


class Raised(NamedTuple):
    """A new event with its id and its wire body, on its way into a row."""

    event: NewEvent
    event_id: str
    body: str


Outcome = Queued | OutboxFull
# tuple.__new__ for the NamedTuples made once per event: their own __new__ costs 0.2 µs more each.
_new: Final = tuple.__new__


class Outbox:
    """The outbox of one device. Create with :meth:`open`; run :meth:`run` as a task; :meth:`close`."""

    def __init__(
        self,
        store: Store,
        device_id: str,
        clock: TrustedClock,
        *,
        data_dir: Path,
        max_events: int,
        keep_sent: int,
        counts: rows.Counts,
        reserved: int,
        on_acknowledged: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self._store = store
        self._device_id = device_id
        self._clock = clock
        self._data_dir = data_dir
        self._max_events = max_events
        self._keep_sent = keep_sent
        self._next_seq = counts.next_seq
        self._reserved = reserved
        self.depth = counts.depth  # rows waiting to be sent
        self.sent = counts.sent  # rows sent and kept for replay
        self.evicted = counts.evicted
        self.denied: frozenset[str] = frozenset()
        self._writer: GroupCommit[Raised, Queued] = GroupCommit(self._write)
        self.acknowledged: set[int] = set()  # acknowledged, not marked sent yet: never send again
        self.more = asyncio.Event()  # rows were added or released: the pump looks again
        self.drained = asyncio.Event()  # acknowledged rows left the queue
        self.rescan = False  # a gate opened or rows were replayed: the pump goes back over the queue
        self._on_acknowledged = on_acknowledged
        self.on_puback: Callable[[int], None] | None = None  # sees each row id as its PUBACK arrives

    @classmethod
    async def open(
        cls,
        store: Store,
        device_id: str,
        clock: TrustedClock,
        *,
        data_dir: Path,
        max_events: int,
        keep_sent: int = 10_000,
        on_acknowledged: Callable[[Sequence[int]], None] | None = None,
    ) -> Outbox:
        """Load the counters; make sure the sidecar reserves seqs above them."""
        async with store.transaction("DEFERRED") as tx:
            counts = await rows.counts(tx)
        outbox = cls(
            store,
            device_id,
            clock,
            data_dir=data_dir,
            max_events=max_events,
            keep_sent=keep_sent,
            counts=counts,
            reserved=sidecar.load(data_dir).next_seq,
            on_acknowledged=on_acknowledged,
        )
        await outbox._reserve(counts.next_seq)
        return outbox

    @property
    def next_seq(self) -> int:
        """The seq the next event will get."""
        return self._next_seq

    @property
    def batches(self) -> int:
        """Group commits so far."""
        return self._writer.batches

    def holds(self, event_type: str) -> bool:
        """Whether an event of this type waits behind a closed gate now (``policy.is_held``)."""
        return policy.is_held(policy.gate_of(event_type), self.denied)

    # -- raising events ------------------------------------------------------------------------------
    def _raised(self, event: NewEvent) -> Raised:
        event_id = uuid7(self._clock.now())
        raised: Raised = _new(Raised, (event, event_id, event_body(event, event_id, self._device_id)))
        return raised

    def _raised_together(self, events: Sequence[NewEvent]) -> list[Raised]:
        """:meth:`_raised` for events raised at the same moment (one reading of the clock for all)."""
        now, device_id = self._clock.now(), self._device_id
        return [
            _new(Raised, (event, event_id := uuid7(now), event_body(event, event_id, device_id))) for event in events
        ]

    def add(self, event: NewEvent) -> asyncio.Future[Queued]:
        """Queue ``event``; the future resolves once it is durable (or fails with :class:`OutboxFull`)."""
        future: asyncio.Future[Queued] = asyncio.get_running_loop().create_future()
        self._writer.add(self._raised(event), future)
        return future

    async def add_many(self, events: Sequence[NewEvent]) -> list[Queued | EdgeAgentError]:
        """Queue a burst of events; return once every one is committed or refused, with each one's
        :class:`Queued` or refusal (:class:`OutboxFull`; a :class:`StoreError` for a chunk the database
        failed), in order.

        The batch API for bursts (a driver's backlog, a flood of sensor frames): one future per
        ``BURST_CHUNK`` events, not one per event. Every chunk is built before the writer runs: built
        while the database thread inserts the one before, both take turns at the GIL row by row and
        the whole is slower than one after the other (measured: 230 ms against 155 for 10,000).
        Admission, eviction and seqs are exactly :meth:`add`'s.
        """
        loop = asyncio.get_running_loop()
        chunks: list[tuple[int, asyncio.Future[list[Outcome]]]] = []
        for start in range(0, len(events), BURST_CHUNK):
            chunk = events[start : start + BURST_CHUNK]
            future: asyncio.Future[list[Outcome]] = loop.create_future()
            self._writer.add_many(self._raised_together(chunk), future)
            chunks.append((len(chunk), future))
        outcomes: list[Queued | EdgeAgentError] = []
        for size, future in chunks:
            try:
                outcomes.extend(await future)
            except EdgeAgentError as exc:  # the whole chunk failed (the database): each event hears it
                outcomes.extend([exc] * size)
        return outcomes

    async def add_in(self, tx: Transaction, events: Sequence[NewEvent]) -> list[Queued]:
        """Queue ``events`` inside the caller's transaction; they commit, or not, with it."""
        await self._reserve(tx.claimed.get("next_seq", self._next_seq) + len(events))  # before they can commit
        outcomes = await self._insert(tx, self._raised_together(events))
        failed = [o for o in outcomes if isinstance(o, OutboxFull)]
        if failed:
            raise failed[0]
        return [o for o in outcomes if isinstance(o, Queued)]

    async def reply_in(self, tx: Transaction, reply: dict[str, Any]) -> None:
        """Queue a command reply inside the caller's transaction (PROTOCOL.md "command")."""
        if self.depth >= self._max_events and not await self._evict(tx, 1, REPLY_PRIORITY):
            raise OutboxFull(f"the outbox holds {self.depth} rows, none of which may make room for a reply")
        kind = "ok" if reply.get("ok") else "error"
        await rows.insert_reply(tx, kind, REPLY_PRIORITY, self._clock.now(), json.dumps(reply))

        def counted() -> None:
            self.depth += 1
            self.more.set()

        tx.after_commit(counted)

    # -- the writer ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Commit queued events and acknowledgements in batches (``writer.py``) until :meth:`close`.

        Acknowledgements commit without an fsync: losing one to a power cut costs a duplicate the
        cloud drops, never an event.
        """
        await self._writer.run()

    async def flush(self) -> None:
        """Return once everything queued so far, acknowledgements included, is committed (writer running)."""
        await self._writer.flush()

    async def close(self) -> None:
        """Finish what is queued (the writer must be running), then write the sidecar exact."""
        await self._writer.close()
        await asyncio.to_thread(sidecar.update, self._data_dir, next_seq=self._next_seq, anchor=self._clock.anchor())

    async def _write(self, batch: list[Pending[Raised]], acks: set[int]) -> None:
        raised = [item for p in batch for item in p.items]
        try:
            await self._reserve_seqs(
                len(raised), spend_reserve=any(policy.entitled_to_reserve(r.event.type) for r in raised)
            )
        except OSError as exc:  # no seq may be given out that the sidecar does not cover
            fail(batch, OutboxFull(f"cannot reserve event seqs in the sidecar file: {exc.strerror or exc}"))
            log.error("outbox_reservation_failed", error=str(exc), refused=len(batch))
            batch, raised = [], []
        try:
            # Without events, a lost commit only means sending something again: no fsync needed.
            async with self._store.transaction(durable=bool(raised)) as tx:
                await self._mark_sent(tx, acks)
                outcomes = await self._insert(tx, raised)
        except StoreFull:
            outcomes = await self._write_when_full(raised, acks)
        except BaseException as exc:
            fail(batch, exc)
            self._writer.acknowledge(acks)  # try the deletions again with the next batch
            raise
        settle(batch, list(outcomes))

    async def _write_when_full(self, batch: list[Raised], acks: set[int]) -> list[Outcome]:
        """The disk is full: acknowledgements first; then the rows kept for replay give way; then the
        events entitled to the reserve (alarms, sensor events, call alerts, door logs) spend it
        (``agent/store/reserve.py``); once it is spent, the most urgent evict as at the cap (lowest class,
        oldest, first). Everything else is refused until space returns."""
        if acks:
            try:
                async with self._store.transaction() as tx:
                    await self._mark_sent(tx, acks)
            except StoreFull:
                self._writer.acks |= acks  # kept in memory (never sent twice) and recorded with a later batch
        if self.sent:  # rows kept for replay give way to new events first; then everything is tried again
            with contextlib.suppress(StoreFull):
                async with self._store.transaction() as tx:
                    await self._prune(tx, keep=0)
            with contextlib.suppress(StoreFull):
                async with self._store.transaction() as tx:
                    return await self._insert(tx, batch)
        outcomes: list[Outcome] = [
            OutboxFull(
                f"the disk is full: a {r.event.type} event was refused (alarms, sensor events, call alerts and "
                "door logs still get in)"
            )
            for r in batch
        ]
        entitled = [i for i, r in enumerate(batch) if policy.entitled_to_reserve(r.event.type)]
        if entitled:
            try:
                inserted = await self._store.reserved(lambda tx: self._insert(tx, [batch[i] for i in entitled]))
            except StoreFull:
                await self._evict_for_urgent(batch, outcomes)
            else:
                for i, outcome in zip(entitled, inserted, strict=True):
                    outcomes[i] = outcome
        admitted = sum(isinstance(o, Queued) for o in outcomes)
        log.warning("outbox_disk_full", refused=len(batch) - admitted, admitted=admitted)
        return outcomes

    async def _evict_for_urgent(self, batch: list[Raised], outcomes: list[Outcome]) -> None:
        """The reserve is spent: alarms, sensor events and call alerts make room by evicting as at the cap."""
        urgent = [i for i, r in enumerate(batch) if PRIORITY[r.event.type] >= HIGHEST_PRIORITY]
        # Evict more each round: a new row needs whole free pages, and only rows evicted oldest-first
        # (contiguous in the table) empty whole pages.
        count, evicted = 16 * len(urgent), 0
        while urgent:
            try:
                async with self._store.transaction() as tx:
                    evicted = await self._evict(tx, count, HIGHEST_PRIORITY)  # lowest class first, alarms last
                    inserted = await self._insert(tx, [batch[i] for i in urgent])
            except StoreFull:
                if evicted < count:  # nothing more may go: what was evicted stays (rolled back), alarms refused
                    for i in urgent:
                        outcomes[i] = OutboxFull("the disk is full, the reserve is spent and nothing may be evicted")
                    return
                count *= 4
                continue
            for i, outcome in zip(urgent, inserted, strict=True):
                outcomes[i] = outcome
            return

    async def _mark_sent(self, tx: Transaction, acks: set[int]) -> None:
        if not acks:
            return
        ordered = sorted(acks)
        # A row may be gone by now (evicted while its publish was in flight): only the rows this
        # changes leave the queue.
        marked = await rows.mark_sent(tx, policy.runs(ordered), self._clock.now())
        await self._prune(
            tx, keep=self._keep_sent, adding=marked, queued_after=self.depth - marked, slack=self._max_events
        )

        def sent() -> None:
            self.depth -= marked
            self.sent += marked
            self.acknowledged.difference_update(ordered)
            self.drained.set()
            if self._on_acknowledged is not None:
                self._on_acknowledged(ordered)

        tx.after_commit(sent)

    async def _prune(
        self, tx: Transaction, *, keep: int, adding: int = 0, queued_after: int = 0, slack: int = 0
    ) -> None:
        """Delete the oldest sent rows beyond ``keep`` (in blocks, not on every batch; ``policy.prune_excess``)."""
        excess = policy.prune_excess(self.sent, adding, keep, queued_after=queued_after, slack=slack)
        if not excess:
            return
        deleted = await rows.prune(tx, excess)

        def pruned() -> None:
            self.sent -= deleted

        tx.after_commit(pruned)

    async def _evict(self, tx: Transaction, count: int, up_to_priority: int) -> int:
        """Delete up to ``count`` of the oldest rows of the lowest classes not above ``up_to_priority``."""
        victims = await rows.lowest(tx, count, up_to_priority)
        if victims:
            await self._evict_rows(tx, victims)
        return len(victims)

    async def _insert(self, tx: Transaction, batch: list[Raised]) -> list[Outcome]:
        """Insert what fits, evicting by priority; seqs in raise order; counters updated on commit."""
        types = [r.event.type for r in batch]
        room = self._max_events - self.depth
        waiting = max(0, len(batch) - max(room, 0))
        admission = policy.admit(types, room, await rows.candidates(tx, waiting) if waiting else [])
        if admission.victims:
            await self._evict_rows(tx, list(admission.victims))
        outcomes: list[Outcome] = []
        now = self._clock.now()
        seq = tx.claimed.get("next_seq", self._next_seq)  # a second insert in one transaction goes on
        new_rows = []
        per_type: dict[str, tuple[int, str | None, float | None]] = {}  # priority, gate, held_since
        admitted = admission.admitted
        everyone = len(admitted) == len(batch)
        for i, r in enumerate(batch):
            event = r.event
            if not everyone and i not in admitted:
                outcomes.append(
                    OutboxFull(
                        f"the outbox is full ({self._max_events} rows) of events that outrank a {event.type} event"
                    )
                )
                continue
            typ = event.type
            if (known := per_type.get(typ)) is None:
                gate = policy.gate_of(typ)
                known = per_type[typ] = (PRIORITY[typ], gate, now if policy.is_held(gate, self.denied) else None)
            priority, gate, held_since = known
            new_rows.append(
                ("events", seq, r.event_id, typ, event.kind, event.source, priority, gate, held_since, now, r.body)
            )
            outcomes.append(_new(Queued, (seq, r.event_id)))
            seq += 1
        tx.claimed["next_seq"] = seq
        if new_rows:
            await rows.insert_events(tx, new_rows, seq)
        added = len(new_rows)

        def committed() -> None:
            self._next_seq = seq
            self.depth += added
            if added:
                self.more.set()

        tx.after_commit(committed)
        return outcomes

    async def _evict_rows(self, tx: Transaction, victims: list[tuple[int, str]]) -> None:
        per_type = await rows.evict(tx, victims)

        def evicted() -> None:
            self.depth -= len(victims)
            for typ, n in per_type.items():
                self.evicted[typ] = self.evicted.get(typ, 0) + n
            log.warning("outbox_evicted", count=len(victims), types=per_type)

        tx.after_commit(evicted)

    async def _reserve_seqs(self, count: int, *, spend_reserve: bool) -> None:
        """Reserve ``count`` more seqs in the sidecar; on a full disk, an alarm may spend the ballast for it."""
        try:
            await self._reserve(self._next_seq + count)  # before any of these seqs can be committed
        except OSError as exc:
            reserve = self._store.reserve
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not spend_reserve or reserve is None:
                raise
            if not await asyncio.to_thread(reserve.release):
                raise
            await self._reserve(self._next_seq + count)

    async def _reserve(self, up_to: int) -> None:
        """Make sure the sidecar reserves every seq below ``up_to`` before any of them is committed."""
        if up_to < self._reserved:
            return
        reserved = up_to + sidecar.RESERVATION
        await asyncio.to_thread(sidecar.update, self._data_dir, next_seq=reserved, anchor=self._clock.anchor())
        self._reserved = reserved

    # -- what the cloud asks for again, and what a reset forgets ------------------------------------
    async def replay_in(self, tx: Transaction, from_seq: int, to_seq: int | None) -> dict[str, Any]:
        """Queue again the sent events with seq in ``[from_seq, to_seq]`` the outbox still keeps.

        Inside the caller's transaction (the ``resync`` command's); the reply says how many, and
        from which seq the outbox still keeps sent events (anything older is gone).
        """
        upper = to_seq if to_seq is not None else self._next_seq
        # The queue's bound holds for replays too: at most as many as there is room for, oldest first;
        # the cloud asks again from its next gap once they are in.
        room = max(0, self._max_events - self.depth)
        replayed, left, lowest_kept = await rows.replay(tx, from_seq, upper, room)
        kept_from = lowest_kept if lowest_kept is not None else self._next_seq

        def requeued() -> None:
            self.depth += replayed
            self.sent -= replayed
            self.rescan = True
            self.more.set()

        tx.after_commit(requeued)
        log.info("outbox_replay", from_seq=from_seq, to_seq=upper, replayed=replayed, kept_from=kept_from)
        reply = {"replayed": replayed, "kept_from_seq": kept_from, "next_seq": self._next_seq}
        if left:
            reply["not_replayed"] = left  # no room in the queue now: ask again later
        return reply

    async def forget_sent_in(self, tx: Transaction) -> int:
        """Drop the rows kept for replay, in the caller's transaction (a reset after upgrade); how many."""
        dropped = await rows.forget_sent(tx)

        def forgotten() -> None:
            self.sent -= dropped

        tx.after_commit(forgotten)
        return dropped

    async def replies_queued(self) -> bool:
        """Whether a command reply waits to be sent."""
        async with self._store.transaction("DEFERRED") as tx:
            return await rows.replies_queued(tx)

    # -- the pump's side -----------------------------------------------------------------------------
    def acknowledge(self, row_id: int) -> None:
        """The broker acknowledged the row: never send it again; mark it sent with the next batch."""
        if self.on_puback is not None:
            self.on_puback(row_id)
        self.acknowledged.add(row_id)
        self._writer.acknowledge_one(row_id)

    async def sendable(self, after_id: int, limit: int = FETCH) -> list[OutRow]:
        """Rows after ``after_id`` that are not held, in queue order, without acknowledged ones."""
        async with self._store.transaction("DEFERRED") as tx:
            found = await rows.sendable(tx, after_id, self.denied, limit)
        return [row for row in found if row.id not in self.acknowledged]

    async def set_denied(self, denied: frozenset[str]) -> None:
        """Gates now denied: rows behind newly closed gates are stamped held; newly opened ones are released."""
        closed, opened = denied - self.denied, self.denied - denied
        if closed:
            now = self._clock.now()
            async with self._store.transaction() as tx:
                for gate in sorted(closed):
                    await rows.stamp_held(tx, gate, now)
        self.denied = denied
        if opened:
            self.rescan = True
            self.more.set()
        if closed or opened:
            log.info("outbox_gates", denied=sorted(denied), opened=sorted(opened), closed=sorted(closed))

    async def held(self) -> int:
        """How many rows wait behind a closed gate."""
        if not self.denied:
            return 0
        async with self._store.transaction("DEFERRED") as tx:
            return await rows.count_held(tx, self.denied)

    async def listing(self, *, held_only: bool) -> list[dict[str, Any]]:
        """What is queued, oldest first (``edge-agent events``)."""
        return await rows.queued(self._store, self.denied, held_only=held_only)
