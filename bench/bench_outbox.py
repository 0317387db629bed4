"""The outbox: durable intake with group commit, and raised-to-PUBACK latency.

* intake: N single ``add``s at once (what the daemon's local side does with a burst of stimuli) until all
  are durable, vs. raw ``sqlite3.executemany`` of the same rows in one transaction with
  ``synchronous=FULL`` (goal: at least 0.5x the floor's throughput); and, for information, the batch API
  (``Outbox.add_many``);
* latency: events raised at 1,000 per second through the running daemon's outbox to Mosquitto, raise
  to PUBACK, p50 and p99, beside raw aiomqtt QoS 1 publishes at the same rate.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from agent.clock import ClockSource, TrustedClock
from agent.outbox import Outbox, Queued
from agent.outbox.events import NewEvent, event_body
from agent.runtime import heap
from agent.store.database import Store
from agent.store.migrations import MIGRATIONS
from bench.common import Result
from protocol.ids import uuid7
from tests.support.brokers import Mosquitto
from tests.support.daemons import USERS, InProcessDaemon, device_config
from tests.support.documents import write_public_key

EVENTS = 10_000


def _event(i: int) -> NewEvent:
    return NewEvent("sensor", "presence", "mr01-bedroom", {"i": i, "room": "bedroom"}, time.time())


def _floor(directory: Path, *, build: bool = False) -> float:
    """Seconds per row: executemany of the rows, one transaction, synchronous=FULL.

    ``build``: the time to build the same rows (UUIDv7, JSON body) is counted too.
    """
    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    for statement in MIGRATIONS[1]:
        if statement.lstrip().startswith(("CREATE TABLE outbox", "CREATE INDEX outbox", "CREATE TABLE counters")):
            db.execute(statement)
    events = [_event(i) for i in range(EVENTS)]

    def rows() -> list[tuple[object, ...]]:
        built: list[tuple[object, ...]] = []
        for i, event in enumerate(events):
            event_id = uuid7(event.occurred_at)
            body = event_body(event, event_id, "0c110512ab34")
            built.append(("events", i + 1, event_id, event.type, event.kind, event.source, 3, None, None, 0.0, body))
        return built

    prepared = None if build else rows()
    start = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO outbox (topic, seq, event_id, type, kind, source, priority, gate, held_since, created, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        prepared if prepared is not None else rows(),
    )
    db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed / EVENTS


async def _ours(directory: Path, *, burst: bool = True) -> float:
    """Seconds per event: EVENTS raised at once (events built by the outbox), until all are durable.

    ``burst``: through the batch API (``Outbox.add_many``); otherwise one ``add`` (and future) per event.
    """
    store = await Store.open(directory)
    outbox = await Outbox.open(
        store, "0c110512ab34", TrustedClock(ClockSource.system()), data_dir=directory, max_events=10 * EVENTS
    )
    writer = asyncio.create_task(outbox.run())
    heap.freeze()  # as the daemon does once it has opened its parts (agent/daemon.py run)
    events = [_event(i) for i in range(EVENTS)]
    start = time.perf_counter()
    if burst:
        outcomes = await outbox.add_many(events)
    else:
        outcomes = await asyncio.gather(*(outbox.add(e) for e in events))
    assert all(isinstance(o, Queued) for o in outcomes)
    elapsed = time.perf_counter() - start
    await outbox.close()
    await writer
    await store.close()
    return elapsed / EVENTS


def _interleaved(floor: Callable[[Path], float], rounds: int, *, burst: bool = True) -> tuple[float, float, float]:
    floors, ours, ratios = [], [], []
    for round_ in range(rounds):
        with tempfile.TemporaryDirectory(dir="/var/tmp") as a, tempfile.TemporaryDirectory(dir="/var/tmp") as b:
            if round_ % 2:
                f, o = floor(Path(a)), asyncio.run(_ours(Path(b), burst=burst))
            else:
                o, f = asyncio.run(_ours(Path(b), burst=burst)), floor(Path(a))
        floors.append(f)
        ours.append(o)
        ratios.append(f / o)  # throughput ratio: ours / floor
    return statistics.median(floors), statistics.median(ours), statistics.median(ratios)


def intake(rounds: int = 7) -> list[Result]:
    """Throughput of durable intake against its floor (and, for information, the floor that also builds
    the same rows), rounds interleaved."""
    name = f"durable intake, a burst of {EVENTS:,} events (add_many; throughput)"
    f, o, r = _interleaved(_floor, rounds)
    fb, ob, rb = _interleaved(lambda d: _floor(d, build=True), rounds)
    fs, os_, rs = _interleaved(_floor, rounds, burst=False)
    return [
        Result(name, "sqlite3 executemany, synchronous=FULL", f, o, r, "info"),
        Result(name, "the same, building the rows (UUIDv7, JSON) too", fb, ob, rb, "info"),
        Result(
            f"durable intake, {EVENTS:,} single add()s at once (throughput)",
            "sqlite3 executemany, synchronous=FULL",
            fs,
            os_,
            rs,
            ">= 0.5",  # what ships: the local side queues each event with add() (agent/local/side.py)
        ),
    ]


async def _latency(directory: Path, seconds: float = 5.0, rate: int = 1000) -> tuple[list[float], list[float]]:
    """(ours, floor) raise-to-PUBACK latencies in seconds at ``rate`` per second."""
    broker = Mosquitto(directory / "broker", USERS)
    (directory / "broker").mkdir(parents=True)
    await broker.start()
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        root = write_public_key(directory / "root.pub.pem", Ed25519PrivateKey.generate())
        config_file = device_config(directory / "device", broker, root, outbox={"max_events": 1_000_000})
        raised: dict[int, float] = {}
        acked: dict[int, float] = {}
        async with InProcessDaemon(config_file) as handle:
            assert handle.daemon is not None
            heap.freeze()  # as the shipped entry point does once the daemon is open (agent/daemon.py run)
            daemon = handle.daemon
            await asyncio.wait_for(daemon.session.connected.wait(), 10)
            total = int(seconds * rate)
            all_acked = asyncio.Event()

            def on_puback(row_id: int) -> None:
                acked[row_id] = time.perf_counter()
                if len(acked) >= total:
                    all_acked.set()

            def on_durable(future: asyncio.Future[Queued], raised_at: float) -> None:
                raised[future.result().seq] = raised_at

            daemon.outbox.on_puback = on_puback
            futures = []
            start = time.perf_counter()
            for i in range(int(seconds * rate)):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                raised_at = time.perf_counter()
                future = daemon.outbox.add(_event(i))
                future.add_done_callback(functools.partial(on_durable, raised_at=raised_at))
                futures.append(future)
            await asyncio.gather(*futures)
            await asyncio.wait_for(all_acked.wait(), 30)
            async with daemon.device.store.transaction("DEFERRED") as tx:
                seq_of = dict(await tx.fetchall("SELECT id, seq FROM outbox WHERE seq IS NOT NULL"))
        ours = [acked[row_id] - raised[seq_of[row_id]] for row_id in acked if row_id in seq_of]

        floor: list[float] = []
        async with aiomqtt.Client(
            broker.host, broker.port, username="cloud", password="cloud", identifier="floor"
        ) as client:
            payload = json.dumps({"event_id": uuid7(time.time()), "data": {"i": 0}}).encode()
            sem = asyncio.Semaphore(10)

            async def one() -> None:
                async with sem:
                    begun = time.perf_counter()
                    await client.publish("bench/latency", payload, qos=1)
                    floor.append(time.perf_counter() - begun)

            tasks = []
            start = time.perf_counter()
            for i in range(int(seconds * rate)):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        return ours, floor
    finally:
        await broker.stop()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency() -> list[Result]:
    """p50 and p99 of raise-to-PUBACK at 1,000 events/s, beside raw aiomqtt's publish-to-PUBACK."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        ours, floor = asyncio.run(_latency(Path(directory)))
    rows = []
    for label, q in (("p50", 0.50), ("p99", 0.99)):
        o, f = _percentile(ours, q), _percentile(floor, q)
        rows.append(Result(f"raised -> PUBACK at 1,000/s, {label}", "aiomqtt publish -> PUBACK", f, o, o / f, "info"))
    return rows


def run() -> list[Result]:
    """All outbox benchmarks."""
    return [*intake(), *latency()]
