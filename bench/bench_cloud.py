"""A ledger change reaching a running device, on loopback (issue "cloud_stub", done when: within a second).

The cloud (``CloudService``) and Mosquitto run here, the agent as its own process. Another connection
to the ledger (as the CLI is another process) alternately pays for door-2 and takes the payment back;
each change flips the device between ``limited`` and ``normal``. Measured: from the ledger commit to
the device's state report saying so (the device has verified and stored the new document, and
decided again), beside the floor of one retained publish reaching the same subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from bench.bench_outbox import _percentile
from bench.common import Result
from cloud_stub.ledger import Ledger
from cloud_stub.service import CloudService
from tests.support.brokers import Mosquitto
from tests.support.daemons import USERS, ProcessDaemon, device_config
from tests.support.documents import DEVICE_ID
from tests.support.ledger import office_ledger, renew_door_2

ROUNDS = 20


def _prepare(path: Path) -> None:
    office_ledger(path).close()


def _flip(path: Path, paid: bool) -> None:
    """As the CLI would, from connections of its own: a renewal paid, or (to start the next round from a
    lapse) the door's service removed."""
    book = Ledger.open(path)
    try:
        if paid:
            renew_door_2(book)
        else:
            book.run(lambda uow: uow.holdings.remove("office", "door"))
    finally:
        book.close()


async def _measure(directory: Path) -> tuple[list[float], list[float]]:
    (directory / "broker").mkdir()
    broker = Mosquitto(directory / "broker", USERS)
    await broker.start()
    (directory / "cloud").mkdir()
    ledger_path = directory / "cloud" / "ledger.db"
    _prepare(ledger_path)
    service = CloudService(
        Ledger.open(ledger_path), directory / "cloud" / "keys", host=broker.host, port=broker.port,
        username="cloud", password="cloud", interval=5.0,
    )  # fmt: skip
    task = asyncio.create_task(service.run())
    daemon = ProcessDaemon(device_config(directory / "device", broker, directory / "cloud" / "keys" / "root.pub.pem"))
    ours, floor = [], []
    try:
        await daemon.start()
        async with aiomqtt.Client(broker.host, broker.port, username="cloud", password="cloud") as watcher:
            state_topic = f"smartplus/v1/devices/{DEVICE_ID}/state"
            await watcher.subscribe([(state_topic, 1), ("bench/floor", 1)])
            messages = watcher.messages

            async def until(topic: str, predicate: object) -> float:
                async for message in messages:
                    if str(message.topic) == topic and predicate(message.payload):  # type: ignore[operator]
                        return time.perf_counter()
                raise RuntimeError("no more messages")

            def mode_is(mode: str) -> object:
                return lambda payload: f'"mode":"{mode}"' in payload.decode().replace(" ", "")

            async with asyncio.timeout(30):
                await until(state_topic, mode_is("limited"))
            for i in range(ROUNDS):
                paid = i % 2 == 0
                started = time.perf_counter()
                _flip(ledger_path, paid)
                async with asyncio.timeout(10):
                    ours.append(await until(state_topic, mode_is("normal" if paid else "limited")) - started)
                started = time.perf_counter()
                await watcher.publish("bench/floor", str(i).encode(), qos=1, retain=True)
                async with asyncio.timeout(10):
                    floor.append(await until("bench/floor", lambda payload, i=i: payload == str(i).encode()) - started)
    finally:
        with contextlib.suppress(Exception):
            await daemon.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await broker.stop()
    return ours, floor


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        ours, floor = asyncio.run(_measure(Path(directory)))
    rows = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        o, f = _percentile(ours, q), _percentile(floor, q)
        rows.append(
            Result(
                f"ledger change -> device decides anew, {label}", "a retained publish, received", f, o, o / f, "info"
            )
        )
    worst = max(ours)
    rows.append(
        Result(f"ledger change -> device, slowest of {ROUNDS}, against 1 s", "the bound", 1.0, worst, worst, "<= 1.0")
    )
    print(f"median {statistics.median(ours) * 1000:.0f} ms", file=sys.stderr, flush=True)
    return rows
