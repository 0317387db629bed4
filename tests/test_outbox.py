"""The outbox on a real SQLite file: durable group commit, seq, ids, holds, eviction, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.clock import TrustedClock
from agent.errors import OutboxFull
from agent.outbox import Outbox, Queued
from agent.outbox.box import BURST_CHUNK
from agent.outbox.events import PRIORITY, NewEvent, wire_payload
from agent.store import sidecar
from agent.store.database import DB_NAME, Store
from protocol.ids import uuid7
from tests.support.documents import T0, SettableClock


class Box:
    """An outbox with its writer running, reopenable as a restarted daemon would."""

    def __init__(self, directory: Path, clock: SettableClock, max_events: int, max_bytes: int = 0) -> None:
        self.directory, self.clock, self.max_events, self.max_bytes = directory, clock, max_events, max_bytes
        self.store: Store | None = None
        self.outbox: Outbox | None = None
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> Outbox:
        self.store = await Store.open(self.directory, max_bytes=self.max_bytes)
        trusted = TrustedClock(self.clock.source())
        self.outbox = await Outbox.open(
            self.store, "0c110512ab34", trusted, data_dir=self.directory, max_events=self.max_events
        )
        self._writer = asyncio.create_task(self.outbox.run())
        return self.outbox

    async def close(self) -> None:
        assert self.outbox is not None
        assert self.store is not None
        await self.outbox.close()
        if self._writer is not None:
            await self._writer
        await self.store.close()

    async def reopen(self) -> Outbox:
        await self.close()
        return await self.open()


def event(type_: str = "sensor", kind: str = "fall_detected", i: int = 0) -> NewEvent:
    return NewEvent(type_, kind, "mr01-bedroom", {"i": i}, T0)


@pytest.fixture
async def box(tmp_path: Path, clock: SettableClock) -> AsyncIterator[Box]:
    """An outbox capped at 50 rows."""
    handle = Box(tmp_path, clock, max_events=50)
    await handle.open()
    yield handle
    await handle.close()


def rows(directory: Path) -> list[tuple[int, int | None, str]]:
    """(id, seq, type) of every row, read by a second connection."""
    with sqlite3.connect(directory / DB_NAME) as db:
        return list(db.execute("SELECT id, seq, type FROM outbox ORDER BY id"))


async def test_a_burst_is_durable_in_a_few_commits(box: Box, tmp_path: Path) -> None:
    """A thousand events raised at once are all on disk when their futures resolve, in far fewer commits."""
    outbox = box.outbox
    assert outbox is not None
    box.max_events = outbox._max_events = 5_000
    batches = outbox.batches
    queued = await asyncio.gather(*(outbox.add(event(i=i)) for i in range(1000)))
    assert [q.seq for q in queued] == list(range(1, 1001))
    assert len(rows(tmp_path)) == 1000
    assert outbox.batches - batches <= 10, outbox.batches - batches


async def test_a_burst_through_the_batch_api_is_one_future_per_chunk(box: Box, tmp_path: Path) -> None:
    """add_many: every event durable when it returns, each with its outcome in raise order, seqs
    consecutive with single adds, a few commits for several chunks."""
    outbox = box.outbox
    assert outbox is not None
    box.max_events = outbox._max_events = 10_000
    first = await outbox.add(event(i=-1))
    batches = outbox.batches
    size = 2 * BURST_CHUNK + 17
    outcomes = await outbox.add_many([event(i=i) for i in range(size)])
    assert [o.seq for o in outcomes if isinstance(o, Queued)] == list(range(first.seq + 1, first.seq + 1 + size))
    assert outbox.batches - batches == 3  # one commit per chunk
    on_disk = rows(tmp_path)
    assert len(on_disk) == size + 1
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        bodies = [
            json.loads(b) for (b,) in db.execute("SELECT body FROM outbox WHERE seq > ? ORDER BY seq", (first.seq,))
        ]
    assert [b["data"]["i"] for b in bodies] == list(range(size))
    assert [b["event_id"] for b in bodies] == [o.event_id for o in outcomes if isinstance(o, Queued)]
    assert (await outbox.add(event())).seq == first.seq + size + 1
    assert await outbox.add_many([]) == []


async def test_a_burst_at_the_cap_gets_each_events_own_outcome(box: Box) -> None:
    """At the cap a burst is admitted as single events would be: its alarms make room by evicting the
    oldest alarms, its health events are refused (they outrank nothing there), and each refusal is that
    event's outcome, in place."""
    outbox = box.outbox
    assert outbox is not None
    await outbox.add_many([event("alarm", "tamper", i) for i in range(45)])
    burst = [event("alarm", "tamper", 100 + i) if i % 3 else event("health", "tick", i) for i in range(30)]
    outcomes = await outbox.add_many(burst)
    assert [type(o) for o in outcomes] == [Queued if i % 3 else OutboxFull for i in range(30)]
    assert all("outrank" in str(o) for o in outcomes if isinstance(o, OutboxFull))
    assert (outbox.depth, outbox.evicted) == (50, {"alarm": 15})
    assert [t for _, _, t in rows(box.directory)] == ["alarm"] * 50


async def test_seq_continues_across_restarts(box: Box) -> None:
    """After a restart, seq goes on from where it was (kills: tests/test_sync_faults.py)."""
    outbox = box.outbox
    assert outbox is not None
    first = await outbox.add(event())
    outbox = await box.reopen()
    second = await outbox.add(event())
    assert second.seq == first.seq + 1


async def test_two_writes_in_one_transaction_take_consecutive_seqs(box: Box, tmp_path: Path) -> None:
    """Found by the firmware engine (a replaced job's event and the new job's, in one transaction): the
    second write went on from the committed counter and collided on seq."""
    outbox, store = box.outbox, box.store
    assert outbox is not None
    assert store is not None
    async with store.transaction() as tx:
        first = await outbox.add_in(tx, [event(i=1)])
        second = await outbox.add_in(tx, [event(i=2), event(i=3)])
    assert [q.seq for q in first + second] == [1, 2, 3]
    assert (await outbox.add(event(i=4))).seq == 4
    assert [seq for _, seq, _ in rows(tmp_path)] == [1, 2, 3, 4]


async def test_row_ids_are_never_reused(box: Box) -> None:
    """Once rows are acknowledged and deleted, new rows still get higher ids (the pump's cursor relies on it)."""
    outbox = box.outbox
    assert outbox is not None
    outbox._keep_sent = 0  # sent rows deleted at once
    await outbox.add(event())
    for row in await outbox.sendable(0):
        outbox.acknowledge(row.id)
    await asyncio.wait_for(outbox.drained.wait(), 5)
    assert (outbox.depth, outbox.sent, len(rows(box.directory))) == (0, 0, 0)
    await outbox.add(event())
    assert [r.id for r in await outbox.sendable(1)] == [2]


async def test_events_get_uuid7_ids_and_their_wire_form() -> None:
    """event_id is an RFC 9562 version-7 UUID with the time in it; the wire form adds seq and held_since."""
    value = uuid.UUID(uuid7(T0))
    assert (value.version, value.variant) == (7, uuid.RFC_4122)
    assert value.int >> 80 == int(T0 * 1000)
    assert uuid7(T0) != uuid7(T0)
    assert uuid.UUID(uuid7(T0 + 1)) > uuid.UUID(uuid7(T0))
    many = [uuid.UUID(uuid7(T0 + i / 10_000)) for i in range(5_000)]  # past the 4 KiB random pool, more than once
    assert len(set(many)) == 5_000
    assert {(u.version, u.variant) for u in many} == {(7, uuid.RFC_4122)}
    assert {str(u)[19] for u in many} == set("89ab")  # the two random bits beside the variant's vary
    assert [u.int >> 80 for u in many] == [int((T0 + i / 10_000) * 1000) for i in range(5_000)]
    payload = json.loads(wire_payload('{"event_id":"x","data":{}}', 7, T0))
    assert (payload["seq"], payload["held_since"]) == (7, "2026-11-18T11:06:40Z")


async def test_a_closed_gate_holds_and_an_open_one_releases(box: Box, clock: SettableClock) -> None:
    """Alarms behind report_alarm wait with held_since, are counted, and come out when it opens."""
    outbox = box.outbox
    assert outbox is not None
    await outbox.set_denied(frozenset({"report_alarm"}))
    alarm = await outbox.add(event("alarm", "tamper"))
    sensor = await outbox.add(event("sensor", "fall_detected"))
    assert [r.seq for r in await outbox.sendable(0)] == [sensor.seq]
    assert await outbox.held() == 1
    listing = await outbox.listing(held_only=True)
    assert [(e["seq"], e["held"]) for e in listing] == [(alarm.seq, True)]
    clock.run(30)
    await outbox.set_denied(frozenset())
    assert outbox.rescan
    released = [r for r in await outbox.sendable(0) if r.seq == alarm.seq]
    assert released[0].held_since == pytest.approx(T0)
    assert await outbox.held() == 0


async def test_a_call_alert_raised_while_paid_goes_out_after_the_service_lapses(box: Box) -> None:
    """A call alert was raised while sensor_call_alert was active (the only time one is raised); the service
    lapses before it leaves: it is not held, it goes out now, without held_since (docs/entitlements.md)."""
    outbox = box.outbox
    assert outbox is not None
    alert = await outbox.add(event("call_alert", "fall_detected"))
    await outbox.set_denied(frozenset({"report_alarm", "sensor_call_alert"}))
    assert not outbox.holds("call_alert")
    assert outbox.holds("alarm")
    [sent] = await outbox.sendable(0)
    assert (sent.seq, sent.held_since) == (alert.seq, None)
    assert await outbox.held() == 0


async def test_rows_queued_before_a_gate_closes_are_held_from_then(box: Box, clock: SettableClock) -> None:
    """An alarm queued while allowed but not yet sent is held (and stamped) once the gate closes."""
    outbox = box.outbox
    assert outbox is not None
    await outbox.add(event("alarm", "tamper"))
    clock.run(60)
    outbox._clock = TrustedClock(clock.source())
    await outbox.set_denied(frozenset({"report_alarm"}))
    assert await outbox.sendable(0) == []
    await outbox.set_denied(frozenset())
    assert (await outbox.sendable(0))[0].held_since == pytest.approx(T0 + 60)


async def test_a_full_outbox_evicts_the_lowest_priority_first(box: Box) -> None:
    """At the cap, alarms push out health events (counted per type); health cannot push out alarms."""
    outbox = box.outbox
    assert outbox is not None
    for i in range(30):
        await outbox.add(event("health", "tick", i))
    for i in range(20):
        await outbox.add(event("door_log", "granted", i))
    alarms = await asyncio.gather(*(outbox.add(event("alarm", "tamper", i)) for i in range(40)))
    assert outbox.depth == 50
    assert outbox.evicted == {"health": 30, "door_log": 10}
    assert len(alarms) == 40
    with pytest.raises(OutboxFull, match="outrank"):
        await outbox.add(event("health", "tick"))
    types = [t for _, _, t in rows(box.directory)]
    assert types.count("alarm") == 40
    assert types.count("door_log") == 10
    outbox = await box.reopen()
    assert outbox.evicted == {"health": 30, "door_log": 10}  # the counts are persisted


async def test_a_full_disk_refuses_low_priority_and_makes_room_for_alarms(tmp_path: Path, clock: SettableClock) -> None:
    """With the database capped, health events are refused with a clear error; alarms still get in, evicting
    health first and, when only alarms are left, the oldest alarms."""
    handle = Box(tmp_path, clock, max_events=1_000_000, max_bytes=160 * 1024)
    outbox = await handle.open()
    try:
        refused = None
        for i in range(20_000):
            try:
                await outbox.add(NewEvent("health", "tick", "t", {"pad": "x" * 200, "i": i}, T0))
            except OutboxFull as exc:
                refused = exc
                break
        assert refused is not None, "the capped database never filled"
        assert "disk is full" in str(refused)
        for i in range(100):  # every alarm gets in, health events giving way
            await outbox.add(NewEvent("alarm", "tamper", "door-1", {"pad": "y" * 1000, "i": i}, T0))
        assert outbox.evicted.get("health", 0) > 0  # health gave way; once alarms fill the disk, the oldest go
    finally:
        await handle.close()


async def test_the_sidecar_reserves_seqs_ahead_and_is_exact_after_a_clean_stop(box: Box, tmp_path: Path) -> None:
    """While running the sidecar holds a reservation above every seq given; after close, the next seq exactly."""
    outbox = box.outbox
    assert outbox is not None
    queued = await outbox.add(event())
    assert sidecar.load(tmp_path).next_seq > queued.seq
    await box.close()
    assert sidecar.load(tmp_path).next_seq == queued.seq + 1
    await box.open()


async def test_a_reply_queued_with_other_writes_rolls_back_with_them(box: Box) -> None:
    """A reply queued in a transaction that fails is not queued at all."""
    outbox, store = box.outbox, box.store
    assert outbox is not None
    assert store is not None

    async def reply_then_fail() -> None:
        async with store.transaction() as tx:
            await outbox.reply_in(tx, {"id": "c-1", "ok": True})
            raise RuntimeError("the effect failed")

    with pytest.raises(RuntimeError):
        await reply_then_fail()
    assert outbox.depth == 0
    assert rows(box.directory) == []


async def test_cancellation_at_any_point_keeps_memory_and_disk_agreed(box: Box) -> None:
    """Tasks cancelled anywhere inside a transaction leave no transaction open and seq/depth as on disk."""
    outbox, store = box.outbox, box.store
    assert outbox is not None
    assert store is not None
    outbox._max_events = 100_000

    async def queue_two() -> None:
        async with store.transaction() as tx:
            await outbox.add_in(tx, [event(i=1), event(i=2)])

    for yields in range(60):
        task = asyncio.create_task(queue_two())
        for _ in range(yields % 15):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with store.transaction("DEFERRED") as tx:
            (next_seq,) = await tx.fetchone("SELECT value FROM counters WHERE name = 'next_seq'") or (1,)
            (depth,) = await tx.fetchone("SELECT COUNT(*) FROM outbox")
        assert (outbox.next_seq, outbox.depth) == (next_seq, depth), f"after {yields % 15} yields"
    assert len({s for _, s, _ in rows(box.directory)}) == outbox.depth


async def test_sent_events_are_kept_and_can_be_sent_again(box: Box) -> None:
    """Acknowledged events leave the queue but stay for replay; a replay puts a seq range back in the queue."""
    outbox, store = box.outbox, box.store
    assert outbox is not None
    assert store is not None
    queued = [await outbox.add(event(i=i)) for i in range(5)]
    for row in await outbox.sendable(0):
        outbox.acknowledge(row.id)
    await asyncio.wait_for(outbox.drained.wait(), 5)
    assert (outbox.depth, outbox.sent, await outbox.sendable(0)) == (0, 5, [])
    async with store.transaction() as tx:
        answer = await outbox.replay_in(tx, queued[1].seq, queued[3].seq)
    assert answer == {"replayed": 3, "kept_from_seq": 1, "next_seq": 6}
    assert [r.seq for r in await outbox.sendable(0)] == [2, 3, 4]
    assert outbox.rescan
    assert (outbox.depth, outbox.sent) == (3, 2)


async def test_only_keep_sent_rows_are_kept(box: Box) -> None:
    """Beyond keep_sent, the oldest sent rows are pruned; a replay says from which seq it still has them."""
    outbox, store = box.outbox, box.store
    assert outbox is not None
    assert store is not None
    outbox._keep_sent = 100
    outbox._max_events = 10_000
    for i in range(400):
        await outbox.add(event(i=i))
    for row in [r for after in (0, 256) for r in await outbox.sendable(after)]:
        outbox.acknowledge(row.id)
    async with asyncio.timeout(5):
        while outbox.depth:
            outbox.drained.clear()
            await outbox.drained.wait()
    assert 100 <= outbox.sent <= 120
    async with store.transaction() as tx:
        answer = await outbox.replay_in(tx, 1, None)
    assert answer["replayed"] == outbox.depth == len(rows(box.directory))
    assert answer["kept_from_seq"] == 401 - answer["replayed"]


async def test_the_sidecar_covers_a_batch_before_it_commits(box: Box, tmp_path: Path) -> None:
    """A batch larger than a reservation block is reserved in the sidecar before its seqs exist on disk:
    losing the database right after can never make a seq go back."""
    outbox = box.outbox
    assert outbox is not None
    outbox._max_events = 100_000
    queued = await asyncio.gather(*(outbox.add(event(i=i)) for i in range(sidecar.RESERVATION + 500)))
    assert sidecar.load(tmp_path).next_seq > max(q.seq for q in queued)


async def test_events_are_refused_when_their_seqs_cannot_be_reserved(
    box: Box, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the sidecar cannot be written (a disk error), a batch needing a new reservation is refused, not
    committed: no seq ever exists on disk that the sidecar does not cover."""
    outbox = box.outbox
    assert outbox is not None
    outbox._max_events = 100_000

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sidecar, "update", failing)
    results = await asyncio.gather(
        *(outbox.add(event(i=i)) for i in range(sidecar.RESERVATION + 500)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, OutboxFull)]
    assert refused
    assert "sidecar" in str(refused[0])
    # a burst through the batch API: each event of the refused chunk hears it
    burst = await outbox.add_many([event(i=i) for i in range(sidecar.RESERVATION)])
    assert all(isinstance(o, OutboxFull) and "sidecar" in str(o) for o in burst)
    reserved = sidecar.load(tmp_path).next_seq
    assert all(seq is None or seq < reserved for _, seq, _ in rows(tmp_path))


_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(sorted(PRIORITY)), st.integers(1, 30)),
        st.tuples(st.just("take"), st.integers(1, 20)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("reply"), st.integers(1, 3)),
        st.tuples(st.just("replay"), st.integers(1, 200)),
        st.tuples(st.just("reconnect"), st.just(0)),
    ),
    min_size=5,
    max_size=40,
)


async def _interleave(directory: Path, operations: list[tuple[Any, ...]]) -> None:
    handle = Box(directory, SettableClock(), max_events=12)
    outbox = await handle.open()
    assert handle.store is not None
    store = handle.store
    taken: list[int] = []  # handed to the pump, not acknowledged (a publish in flight)
    try:
        for op, *args in operations:
            if op == "add":
                await asyncio.gather(*(outbox.add(event(args[0], i=i)) for i in range(args[1])), return_exceptions=True)
            elif op == "take":
                taken += [r.id for r in await outbox.sendable(0, args[0]) if r.id not in taken]
            elif op == "ack" and taken:
                outbox.acknowledge(taken.pop(args[0] % len(taken)))
            elif op == "reply":
                for n in range(args[0]):
                    with contextlib.suppress(OutboxFull):
                        async with store.transaction() as tx:
                            await outbox.reply_in(tx, {"id": f"c-{n}", "ok": True})
            elif op == "replay":
                async with store.transaction() as tx:
                    await outbox.replay_in(tx, args[0], None)
            elif op == "reconnect":
                taken.clear()  # the publishes in flight are lost with the connection: sent again later
            await outbox.flush()
            async with store.transaction("DEFERRED") as tx:
                (stored,) = await tx.fetchone("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                (kept,) = await tx.fetchone("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
            assert outbox.depth == stored, f"after {op}: depth {outbox.depth}, {stored} rows queued"
            assert stored <= 12, f"after {op}: {stored} rows queued over a cap of 12"
            assert outbox.sent == kept
    finally:
        await handle.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=_OPERATIONS)
def test_the_bound_and_the_depth_hold_under_any_interleaving(tmp_path: Path, operations: list[tuple[Any, ...]]) -> None:
    """Raise, evict, take, acknowledge (a row evicted while its publish is in flight included), reply,
    replay and reconnect in any order: the queue never holds more than its cap, and its depth is the
    number of rows queued on disk after every step (it once drifted negative and raised the real cap)."""
    directory = tmp_path / uuid.uuid4().hex
    asyncio.run(_interleave(directory, operations))


@pytest.mark.parametrize(
    ("sent", "adding", "keep", "queued_after", "slack", "pruned"),
    [
        (9_990, 100, 10_000, 0, 0, 0),  # within a block of keep: not yet
        (10_400, 200, 10_000, 0, 0, 600),  # the queue is empty: down to keep
        (50_000, 300, 10_000, 500, 100_000, 0),  # a drain: sent rows may exceed keep by the queue's bound
        (120_000, 300, 10_000, 500, 100_000, 5_000),  # beyond it: pruned, at most PRUNE_MAX a commit
        (200_000, 300, 10_000, 0, 100_000, 5_000),  # the drain is over: PRUNE_MAX a commit until keep
        (200_000, 0, 0, 0, 0, 200_000),  # a full disk (keep=0): everything, at once
    ],
)
def test_sent_rows_are_pruned_after_a_drain_not_during_it(
    sent: int, adding: int, keep: int, queued_after: int, slack: int, pruned: int
) -> None:
    """docs/performance.md (issue 17): pruning inside a drain made every event dearer the longer the backlog."""
    from agent.outbox import policy

    assert policy.prune_excess(sent, adding, keep, queued_after=queued_after, slack=slack) == pruned


def test_an_events_body_is_strict_json_whatever_its_data() -> None:
    """A NaN or an infinity in an event's data becomes null (JSON has no word for them; a strict reader
    refuses ``NaN``), non-ASCII text stays text, and the body reads back as what was raised."""
    from agent.outbox.events import NewEvent, event_body

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    event = NewEvent("sensor", "presence", "mr01-1", {"t": float("nan"), "h": float("inf"), "room": "séjour"}, 1.5)
    body = json.loads(event_body(event, "0190-id", "0c110512ab34"), parse_constant=refuse)
    assert body["data"] == {"t": None, "h": None, "room": "séjour"}
    assert (body["type"], body["kind"], body["source"], body["occurred_at"]) == (
        "sensor", "presence", "mr01-1", "1970-01-01T00:00:01.500Z",
    )  # fmt: skip
