"""The durable outbox: everything the device sends goes through it, and nothing leaves it unacknowledged.

Theory of operation.

* **Durable before the raiser returns.** :meth:`Outbox.add` queues an event and returns a future
  that resolves once the event's row has been committed (``synchronous=FULL``). One writer task
  commits everything queued meanwhile in one transaction: *group commit*, so a burst of a thousand
  events costs a handful of fsyncs, not a thousand.
* **seq strictly increasing across restarts.** The writer assigns ``seq`` inside the transaction
  from a counter stored in the same database (and reserved ahead in the sidecar file, which outlives
  a lost database: ``agent/sidecar.py``). A rolled-back batch assigns nothing, so there is no gap.
* **At least once.** A row leaves the queue only after its PUBACK (:meth:`acknowledge`, batched too).
  After a reconnect everything not yet acknowledged is sent again, in queue order.
* **Nothing lost past the broker.** A broker that acknowledged a message can still lose it (a crash
  before it saved; amqtt after a stall). Sent rows are therefore kept (``keep_sent``, oldest pruned
  first, dropped first when the disk is full), and the cloud, seeing a gap in seq, asks for them
  again (``resync`` with ``from_seq``: :meth:`replay_in`); the event ids let it drop duplicates.
* **Held, never dropped.** An event whose gate (``report_alarm`` for alarms, ``sensor_call_alert``
  for call alerts) is denied stays in the queue with ``held_since`` set, is counted in the state
  report, and goes out with ``held_since`` once the gate opens.
* **Bounded.** At ``max_events`` a new event evicts the oldest row of the lowest priority class, if
  that class is not above its own (health first, then door logs, then the device's own reports;
  alarms, call alerts, sensor events and replies last); otherwise the new event is refused with
  :class:`OutboxFull`. The depth is counted from the rows each commit changes, so it is what is
  stored, whatever the interleaving (a row evicted while its publish was in flight included).
  On a full disk, rows kept for replay go first; alarms, sensor events, call alerts and door logs
  then spend the data directory's reserve (``agent/reserve.py``), and once it is spent the most
  urgent make room by evicting as at the cap; everything else is refused until space returns.
  Each eviction is counted per type and reported.

Events raised together with other writes (a command's reply, an expiry notice) are queued inside
the caller's transaction with :meth:`add_in` / :meth:`reply_in`: they commit, or not, with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import structlog

from agent import sidecar
from agent.clock import TrustedClock
from agent.errors import OutboxFull, StoreError, StoreFull
from agent.events import (
    GATES,
    HIGHEST_PRIORITY,
    PRIORITY,
    REPLY_PRIORITY,
    RESERVED_TYPES,
    NewEvent,
    event_body,
    uuid7,
)
from agent.store import Store, Transaction
from protocol.timefmt import to_rfc3339_or_none

log = structlog.get_logger("agent.outbox")

MAX_BATCH: Final = 2_000  # events per group commit
ACK_BATCH: Final = 1_000  # acknowledgements that are committed without waiting for more
ACK_GATHER: Final = 0.05  # seconds acknowledgements alone wait for more
FETCH: Final = 256  # rows per read of the pump
WRITE_RETRY: Final = 0.5  # seconds before the writer tries again after the database failed it


class Queued(NamedTuple):
    """Where a new event landed."""

    seq: int
    event_id: str


class OutRow(NamedTuple):
    """A row ready to publish."""

    id: int
    topic: str  # events | replies
    seq: int | None
    held_since: float | None
    body: str


class _Pending(NamedTuple):
    event: NewEvent
    event_id: str
    body: str
    future: asyncio.Future[Queued] | None


_INSERT: Final = """INSERT INTO outbox
    (topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def _runs(ordered: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted ids: [1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for value in ordered:
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


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
        next_seq: int,
        depth: int,
        sent: int,
        evicted: dict[str, int],
        reserved: int,
        on_acknowledged: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self._store = store
        self._device_id = device_id
        self._clock = clock
        self._data_dir = data_dir
        self._max_events = max_events
        self._keep_sent = keep_sent
        self._next_seq = next_seq
        self._reserved = reserved
        self.depth = depth  # rows waiting to be sent
        self.sent = sent  # rows sent and kept for replay
        self.evicted = evicted
        self.denied: frozenset[str] = frozenset()
        self._pending: list[_Pending] = []
        self._acks: set[int] = set()
        self.acknowledged: set[int] = set()  # acknowledged, not marked sent yet: never send again
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # events to commit now, or enough acknowledgements gathered
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.more = asyncio.Event()  # rows were added or released: the pump looks again
        self.drained = asyncio.Event()  # acknowledged rows left the queue
        self.rescan = False  # a gate opened: the pump goes back over held rows
        self._on_acknowledged = on_acknowledged
        self.batches = 0  # group commits so far
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
            counters = dict(await tx.fetchall("SELECT name, value FROM counters"))
            depth = int((await tx.fetchone("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"))[0])
            sent = int((await tx.fetchone("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL"))[0])
        floor = sidecar.load(data_dir)
        next_seq = int(counters.get("next_seq", 1))
        evicted = {name[8:]: int(v) for name, v in counters.items() if name.startswith("evicted:")}
        outbox = cls(
            store,
            device_id,
            clock,
            data_dir=data_dir,
            max_events=max_events,
            keep_sent=keep_sent,
            next_seq=next_seq,
            depth=depth,
            sent=sent,
            evicted=evicted,
            reserved=floor.next_seq,
            on_acknowledged=on_acknowledged,
        )
        await outbox._reserve(next_seq)
        return outbox

    @property
    def next_seq(self) -> int:
        """The seq the next event will get."""
        return self._next_seq

    # -- raising events ------------------------------------------------------------------------------
    def add(self, event: NewEvent) -> asyncio.Future[Queued]:
        """Queue ``event``; the future resolves once it is durable (or fails with :class:`OutboxFull`)."""
        event_id = uuid7(self._clock.now())
        future: asyncio.Future[Queued] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(event, event_id, event_body(event, event_id, self._device_id), future))
        self._wake.set()
        self._urgent.set()
        return future

    async def add_in(self, tx: Transaction, events: Sequence[NewEvent]) -> list[Queued]:
        """Queue ``events`` inside the caller's transaction; they commit, or not, with it."""
        await self._reserve(tx.claimed.get("next_seq", self._next_seq) + len(events))  # before they can commit
        pending = []
        for event in events:
            event_id = uuid7(self._clock.now())
            pending.append(_Pending(event, event_id, event_body(event, event_id, self._device_id), None))
        outcomes = await self._insert(tx, pending)
        failed = [o for o in outcomes if isinstance(o, OutboxFull)]
        if failed:
            raise failed[0]
        return [o for o in outcomes if isinstance(o, Queued)]

    async def reply_in(self, tx: Transaction, reply: dict[str, Any]) -> None:
        """Queue a command reply inside the caller's transaction (PROTOCOL.md "command")."""
        if self.depth >= self._max_events and not await self._evict(tx, 1, REPLY_PRIORITY):
            raise OutboxFull(f"the outbox holds {self.depth} rows, none of which may make room for a reply")
        kind = "ok" if reply.get("ok") else "error"
        await tx.execute(
            _INSERT,
            (
                "replies",
                None,
                None,
                "reply",
                kind,
                None,
                REPLY_PRIORITY,
                None,
                None,
                self._clock.now(),
                json.dumps(reply),
            ),
        )

        def counted() -> None:
            self.depth += 1
            self.more.set()

        tx.after_commit(counted)

    # -- the writer ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Commit queued events and acknowledgements in batches until :meth:`close`.

        Events are committed at once (their raisers wait). Acknowledgements alone are in no hurry:
        they gather for up to ``ACK_GATHER`` seconds (or ``ACK_BATCH`` of them) and commit without an
        fsync, since losing one to a power cut costs a duplicate the cloud drops, never an event.
        """
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._pending and not self._closing and len(self._acks) < ACK_BATCH:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), ACK_GATHER)
                self._urgent.clear()
                while self._pending or self._acks:
                    self._idle.clear()
                    batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                    acks, self._acks = self._acks, set()
                    try:
                        await self._write(batch, acks)
                    except StoreError as exc:  # locked or failing: this batch's raisers hear it; go on
                        log.error("outbox_write_failed", error=str(exc), refused=len(batch), acks=len(acks))
                        if self._closing:
                            break
                        await asyncio.sleep(WRITE_RETRY)  # the acknowledgements are tried again then
                self._idle.set()
                if self._closing:
                    return
        finally:  # whatever ends the writer, close() must not wait for it for ever
            self._idle.set()
            for item in self._pending:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(OutboxFull("the outbox writer has stopped"))

    async def flush(self) -> None:
        """Return once everything queued so far, acknowledgements included, is committed (writer running)."""
        while self._pending or self._acks or not self._idle.is_set():
            self._wake.set()
            self._urgent.set()
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        """Finish what is queued (the writer must be running), then write the sidecar exact."""
        self._closing = True
        self._wake.set()
        self._urgent.set()
        await self._idle.wait()
        await asyncio.to_thread(sidecar.update, self._data_dir, next_seq=self._next_seq, anchor=self._clock.anchor())

    async def _write(self, batch: list[_Pending], acks: set[int]) -> None:
        self.batches += 1
        try:
            await self._reserve_seqs(len(batch), spend_reserve=any(p.event.type in RESERVED_TYPES for p in batch))
        except OSError as exc:  # no seq may be given out that the sidecar does not cover
            refusal = OutboxFull(f"cannot reserve event seqs in the sidecar file: {exc.strerror or exc}")
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(refusal)
            log.error("outbox_reservation_failed", error=str(exc), refused=len(batch))
            batch = []
        try:
            # Without events, a lost commit only means sending something again: no fsync needed.
            async with self._store.transaction(durable=bool(batch)) as tx:
                await self._mark_sent(tx, acks)
                outcomes = await self._insert(tx, batch)
        except StoreFull:
            outcomes = await self._write_when_full(batch, acks)
        except BaseException as exc:
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            self._acks |= acks  # try the deletions again with the next batch
            raise
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future is not None and not item.future.done():
                if isinstance(outcome, Queued):
                    item.future.set_result(outcome)
                else:
                    item.future.set_exception(outcome)

    async def _write_when_full(self, batch: list[_Pending], acks: set[int]) -> list[Queued | OutboxFull]:
        """The disk is full: acknowledgements first; then the rows kept for replay give way; then the
        events entitled to the reserve (alarms, sensor events, call alerts, door logs) spend it
        (``agent/reserve.py``); once it is spent, the most urgent evict as at the cap (lowest class,
        oldest, first). Everything else is refused until space returns."""
        if acks:
            try:
                async with self._store.transaction() as tx:
                    await self._mark_sent(tx, acks)
            except StoreFull:
                self._acks |= acks  # kept in memory (never sent twice) and recorded with a later batch
        if self.sent:  # rows kept for replay give way to new events first; then everything is tried again
            with contextlib.suppress(StoreFull):
                async with self._store.transaction() as tx:
                    await self._prune(tx, keep=0)
            with contextlib.suppress(StoreFull):
                async with self._store.transaction() as tx:
                    return await self._insert(tx, batch)
        outcomes: list[Queued | OutboxFull] = [
            OutboxFull(
                f"the disk is full: a {p.event.type} event was refused (alarms, sensor events, call alerts and "
                "door logs still get in)"
            )
            for p in batch
        ]
        entitled = [i for i, p in enumerate(batch) if p.event.type in RESERVED_TYPES]
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

    async def _evict_for_urgent(self, batch: list[_Pending], outcomes: list[Queued | OutboxFull]) -> None:
        """The reserve is spent: alarms, sensor events and call alerts make room by evicting as at the cap."""
        urgent = [i for i, p in enumerate(batch) if PRIORITY[p.event.type] >= HIGHEST_PRIORITY]
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
        now = self._clock.now()
        # PUBACKs come nearly in order: one statement per contiguous run of ids. A row may be gone by
        # now (evicted while its publish was in flight): only the rows this changes leave the queue.
        marked = await tx.executemany(
            "UPDATE outbox SET sent_at = ? WHERE id BETWEEN ? AND ? AND sent_at IS NULL",
            [(now, first, last) for first, last in _runs(ordered)],
        )
        await self._prune(tx, keep=self._keep_sent, adding=marked)

        def sent() -> None:
            self.depth -= marked
            self.sent += marked
            self.acknowledged.difference_update(ordered)
            self.drained.set()
            if self._on_acknowledged is not None:
                self._on_acknowledged(ordered)

        tx.after_commit(sent)

    async def _prune(self, tx: Transaction, *, keep: int, adding: int = 0) -> None:
        """Delete the oldest sent rows beyond ``keep`` (in blocks, not on every batch)."""
        excess = self.sent + adding - keep
        if excess <= 0 or (keep and excess < max(64, keep // 20)):
            return
        deleted = await tx.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NOT NULL ORDER BY id LIMIT ?)",
            (excess,),
        )

        def pruned() -> None:
            self.sent -= deleted

        tx.after_commit(pruned)

    async def _evict(self, tx: Transaction, count: int, up_to_priority: int) -> int:
        """Delete up to ``count`` of the oldest rows of the lowest classes not above ``up_to_priority``."""
        rows = await tx.fetchall(
            "SELECT id, type FROM outbox WHERE sent_at IS NULL AND priority <= ? ORDER BY priority, id LIMIT ?",
            (up_to_priority, count),
        )
        if rows:
            await self._evict_rows(tx, [(r[0], r[1]) for r in rows])
        return len(rows)

    async def _insert(self, tx: Transaction, batch: list[_Pending]) -> list[Queued | OutboxFull]:
        """Insert what fits, evicting by priority; seqs in raise order; counters updated on commit."""
        outcomes: list[Queued | OutboxFull | None] = [None] * len(batch)
        room = self._max_events - self.depth
        if room >= len(batch):  # the common case: everything fits
            admitted, waiting = set(range(len(batch))), []
        else:
            by_priority = sorted(range(len(batch)), key=lambda i: -PRIORITY[batch[i].event.type])
            admitted = set(by_priority[: max(room, 0)])
            waiting = [i for i in by_priority if i not in admitted]
        if waiting:
            candidates = await tx.fetchall(
                "SELECT id, priority, type FROM outbox WHERE sent_at IS NULL ORDER BY priority, id LIMIT ?",
                (len(waiting),),
            )
            victims = []
            for i, (row_id, priority, typ) in zip(waiting, candidates, strict=False):
                if priority > PRIORITY[batch[i].event.type]:
                    break
                victims.append((row_id, typ))
                admitted.add(i)
            for i in waiting:
                if i not in admitted:
                    outcomes[i] = OutboxFull(
                        f"the outbox is full ({self._max_events} rows) of events that outrank "
                        f"a {batch[i].event.type} event"
                    )
            if victims:
                await self._evict_rows(tx, victims)
        now = self._clock.now()
        seq = tx.claimed.get("next_seq", self._next_seq)  # a second insert in one transaction goes on
        rows = []
        for i, item in enumerate(batch):
            if i not in admitted:
                continue
            event = item.event
            gate = GATES.get(event.type)
            held_since = now if gate is not None and gate in self.denied else None
            rows.append(
                (
                    "events",
                    seq,
                    item.event_id,
                    event.type,
                    event.kind,
                    event.source,
                    PRIORITY[event.type],
                    gate,
                    held_since,
                    now,
                    item.body,
                )
            )
            outcomes[i] = Queued(seq, item.event_id)
            seq += 1
        tx.claimed["next_seq"] = seq
        if rows:
            await tx.executemany(_INSERT, rows)
            await tx.execute(
                "INSERT INTO counters (name, value) VALUES ('next_seq', ?) ON CONFLICT (name) DO UPDATE SET value = ?",
                (seq, seq),
            )
        added = len(rows)

        def committed() -> None:
            self._next_seq = seq
            self.depth += added
            if added:
                self.more.set()

        tx.after_commit(committed)
        return [o for o in outcomes if o is not None]

    async def _evict_rows(self, tx: Transaction, victims: list[tuple[int, str]]) -> None:
        await tx.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id, _ in victims])
        per_type: dict[str, int] = {}
        for _, typ in victims:
            per_type[typ] = per_type.get(typ, 0) + 1
        for typ, n in per_type.items():
            await tx.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
                (f"evicted:{typ}", n, n),
            )

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

    async def replay_in(self, tx: Transaction, from_seq: int, to_seq: int | None) -> dict[str, Any]:
        """Queue again the sent events with seq in ``[from_seq, to_seq]`` the outbox still keeps.

        Inside the caller's transaction (the ``resync`` command's); the reply says how many, and
        from which seq the outbox still keeps sent events (anything older is gone).
        """
        upper = to_seq if to_seq is not None else self._next_seq
        # The queue's bound holds for replays too: at most as many as there is room for, oldest first;
        # the cloud asks again from its next gap once they are in.
        room = max(0, self._max_events - self.depth)
        replayed = await tx.execute(
            "UPDATE outbox SET sent_at = NULL WHERE id IN (SELECT id FROM outbox WHERE seq BETWEEN ? AND ? "
            "AND sent_at IS NOT NULL ORDER BY id LIMIT ?)",
            (from_seq, upper, room),
        )
        left = await tx.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE seq BETWEEN ? AND ? AND sent_at IS NOT NULL", (from_seq, upper)
        )
        row = await tx.fetchone("SELECT MIN(seq) FROM outbox WHERE seq IS NOT NULL")
        kept_from = row[0] if row is not None and row[0] is not None else self._next_seq

        def requeued() -> None:
            self.depth += replayed
            self.sent -= replayed
            self.rescan = True
            self.more.set()

        tx.after_commit(requeued)
        log.info("outbox_replay", from_seq=from_seq, to_seq=upper, replayed=replayed, kept_from=kept_from)
        reply = {"replayed": replayed, "kept_from_seq": kept_from, "next_seq": self._next_seq}
        if left and left[0]:
            reply["not_replayed"] = int(left[0])  # no room in the queue now: ask again later
        return reply

    async def forget_sent_in(self, tx: Transaction) -> int:
        """Drop the rows kept for replay, in the caller's transaction (a reset after upgrade); how many."""
        dropped = await tx.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL")

        def forgotten() -> None:
            self.sent -= dropped

        tx.after_commit(forgotten)
        return dropped

    async def replies_queued(self) -> bool:
        """Whether a command reply waits to be sent."""
        async with self._store.transaction("DEFERRED") as tx:
            return await tx.fetchone("SELECT 1 FROM outbox WHERE topic = 'replies' LIMIT 1") is not None

    # -- the pump's side -----------------------------------------------------------------------------
    def acknowledge(self, row_id: int) -> None:
        """The broker acknowledged the row: never send it again; mark it sent with the next batch."""
        if self.on_puback is not None:
            self.on_puback(row_id)
        self.acknowledged.add(row_id)
        self._acks.add(row_id)
        self._wake.set()
        if len(self._acks) >= ACK_BATCH:
            self._urgent.set()

    async def sendable(self, after_id: int, limit: int = FETCH) -> list[OutRow]:
        """Rows after ``after_id`` whose gate is open, in queue order, without acknowledged ones."""
        denied = sorted(self.denied)
        gate_clause = f"(gate IS NULL OR gate NOT IN ({', '.join('?' * len(denied))}))" if denied else "1"
        async with self._store.transaction("DEFERRED") as tx:
            rows = await tx.fetchall(
                "SELECT id, topic, seq, held_since, body FROM outbox "  # noqa: S608 -- placeholders only
                f"WHERE sent_at IS NULL AND id > ? AND {gate_clause} ORDER BY id LIMIT ?",
                (after_id, *denied, limit),
            )
        return [OutRow(*row) for row in rows if row[0] not in self.acknowledged]

    async def set_denied(self, denied: frozenset[str]) -> None:
        """Gates now denied: rows behind newly closed gates are stamped held; newly opened ones are released."""
        closed, opened = denied - self.denied, self.denied - denied
        if closed:
            now = self._clock.now()
            async with self._store.transaction() as tx:
                for gate in sorted(closed):
                    await tx.execute(
                        "UPDATE outbox SET held_since = ? WHERE gate = ? AND held_since IS NULL AND sent_at IS NULL",
                        (now, gate),
                    )
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
        denied = sorted(self.denied)
        async with self._store.transaction("DEFERRED") as tx:
            row = await tx.fetchone(
                f"SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND gate IN ({', '.join('?' * len(denied))})",  # noqa: S608
                denied,
            )
        return int(row[0])

    async def listing(self, *, held_only: bool) -> list[dict[str, Any]]:
        """What is queued, oldest first (``edge-agent events``)."""
        return await queued(self._store, self.denied, held_only=held_only)


_COLUMNS: Final = "id, topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body, sent_at"


def salvage(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
    """The rows and the next seq a corrupt database still gives up (agent/quarantine.py), best effort."""
    rows: list[tuple[Any, ...]] = []
    next_seq = 1
    with contextlib.suppress(sqlite3.Error):
        rows.extend(tuple(row) for row in db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id"))  # noqa: S608
    with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
        found = db.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
        if found is not None:
            next_seq = int(found[0])
    seqs = [r[2] for r in rows if isinstance(r[2], int)]
    return rows, max([next_seq, *(s + 1 for s in seqs)])


async def restore_in(tx: Transaction, rows: list[tuple[Any, ...]], next_seq: int) -> None:
    """Put salvaged rows into a fresh database, the counter going on from ``next_seq``."""
    marks = ", ".join("?" * len(_COLUMNS.split(", ")))
    await tx.executemany(f"INSERT INTO outbox ({_COLUMNS}) VALUES ({marks})", rows)  # noqa: S608 -- constants
    await tx.execute("INSERT INTO counters (name, value) VALUES ('next_seq', ?)", (next_seq,))


async def queued(store: Store, denied: frozenset[str], *, held_only: bool) -> list[dict[str, Any]]:
    """What the outbox in ``store`` holds, oldest first; ``held`` when its gate is in ``denied``."""
    async with store.transaction("DEFERRED") as tx:
        rows = await tx.fetchall(
            "SELECT id, topic, seq, type, kind, source, gate, held_since, created, body FROM outbox "
            "WHERE sent_at IS NULL ORDER BY id"
        )
    out = []
    for row_id, topic, seq, typ, kind, source, gate, held_since, created, body in rows:
        held = gate is not None and gate in denied
        if held_only and not held:
            continue
        entry: dict[str, Any] = {
            "id": row_id,
            "topic": topic,
            "seq": seq,
            "type": typ,
            "kind": kind,
            "source": source,
            "held": held,
            "held_since": to_rfc3339_or_none(held_since),
            "queued_at": to_rfc3339_or_none(created),
        }
        if topic == "events":
            entry["event_id"] = json.loads(body)["event_id"]
        out.append(entry)
    return out
