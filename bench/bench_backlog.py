"""A backlog of 10,000, 100,000 and 1,000,000 events: how fast the daemon drains it to Mosquitto, and how
much memory it holds.

* drain: from the connection to the last PUBACK, beside raw aiomqtt publishing the same payloads with
  10 in flight (goal: at least 0.85x its throughput at every size: the cost per event stays flat);
* memory: the daemon's resident set with the backlog queued and no broker in reach, beside a process
  that only imports the dependencies (goal: at most 1.3x).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import ClockSource, TrustedClock
from agent.config import load_config
from agent.outbox import Outbox
from agent.outbox.events import NewEvent, wire_payload
from agent.runtime import heap
from agent.store.database import Store
from bench.common import Result
from tests.support.brokers import Mosquitto
from tests.support.daemons import EDGE_AGENT, USERS, InProcessDaemon, device_config, wait_for_control
from tests.support.documents import write_public_key

BACKLOG = 100_000  # the memory row's
SIZES = ((10_000, 3), (100_000, 3), (1_000_000, 1))  # (events, rounds)
DEPENDENCIES = "import aiomqtt, aiosqlite, click, msgspec, nacl.signing, paho.mqtt.client, structlog"


async def _fill(data_dir: Path, backlog: int = BACKLOG) -> list[bytes]:
    """Queue ``backlog`` events in the device's outbox; their wire payloads (for the floor)."""
    store = await Store.open(data_dir)
    outbox = await Outbox.open(
        store, "0c110512ab34", TrustedClock(ClockSource.system()), data_dir=data_dir, max_events=2 * backlog
    )
    writer = asyncio.create_task(outbox.run())
    now = time.time()
    for start in range(0, backlog, 10_000):
        await outbox.add_many(
            [NewEvent("sensor", "presence", "mr01", {"i": i}, now) for i in range(start, start + 10_000)]
        )
    rows = await outbox.sendable(0, limit=backlog)
    await outbox.close()
    await writer
    await store.close()
    return [wire_payload(r.body, r.seq, r.held_since) for r in rows]


def _config(directory: Path, broker_url: str, backlog: int = BACKLOG) -> Path:
    root = write_public_key(directory / "root.pub.pem", Ed25519PrivateKey.generate())
    return device_config(directory / "device", broker_url, root, outbox={"max_events": 2 * backlog})


async def _drain(directory: Path, backlog: int) -> tuple[float, float]:
    """(floor seconds, our seconds) to get ``backlog`` messages PUBACKed by Mosquitto."""
    (directory / "broker").mkdir()
    broker = Mosquitto(directory / "broker", USERS)
    await broker.start()
    try:
        config_file = _config(directory, broker.url(), backlog)
        payloads = await _fill(load_config(config_file, {}).data_dir, backlog)

        async with aiomqtt.Client(
            broker.host, broker.port, username="cloud", password="cloud", identifier="floor"
        ) as client:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=10)

            async def worker() -> None:
                while (payload := await queue.get()) is not None:
                    await client.publish("smartplus/v1/devices/floor/events", payload, qos=1)

            started = time.perf_counter()
            async with asyncio.TaskGroup() as workers:
                for _ in range(10):
                    workers.create_task(worker())
                for payload in payloads:
                    await queue.put(payload)
                for _ in range(10):
                    await queue.put(None)
            floor = time.perf_counter() - started

        done = asyncio.Event()
        count = 0

        def on_puback(row_id: int) -> None:
            nonlocal count
            count += 1
            if count >= backlog:
                done.set()

        handle = InProcessDaemon(config_file)
        daemon = await handle.open()
        heap.freeze()  # as the shipped entry point does once the daemon is open (agent/daemon.py run)
        daemon.outbox.on_puback = on_puback  # in place before it connects
        await handle.serve()
        await asyncio.wait_for(daemon.session.connected.wait(), 30)
        started = time.perf_counter()
        await asyncio.wait_for(done.wait(), 3600)
        ours = time.perf_counter() - started
        await handle.stop()
        return floor, ours
    finally:
        await broker.stop()


def drain(backlog: int, rounds: int) -> Result:
    """Throughput of draining a backlog, against raw aiomqtt with 10 in flight (rounds: the median)."""
    floors, ours = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
            floor, our = asyncio.run(_drain(Path(directory), backlog))
        floors.append(floor)
        ours.append(our)
    ratios = [f / o for f, o in zip(floors, ours, strict=True)]
    return Result(
        f"draining a {backlog:,} event backlog to Mosquitto (throughput)",
        "aiomqtt, 10 publishes in flight",
        statistics.median(floors) / backlog,
        statistics.median(ours) / backlog,
        statistics.median(ratios),
        ">= 0.85",
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory() -> Result:
    """Resident memory of the daemon holding the backlog, against importing the dependencies."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            nobody = closed.getsockname()[1]  # a port nobody listens on: the backlog stays
        config_file = _config(Path(directory), f"mqtt://127.0.0.1:{nobody}")
        data_dir = load_config(config_file, {}).data_dir
        asyncio.run(_fill(data_dir))
        floor_script = DEPENDENCIES + "; import os, pathlib; print(pathlib.Path('/proc/self/status').read_text())"
        floor_out = subprocess.run(
            [sys.executable, "-c", floor_script], capture_output=True, text=True, check=True
        ).stdout
        floor_kib = int(next(line for line in floor_out.splitlines() if line.startswith("VmRSS:")).split()[1])
        with (Path(directory) / "daemon.log").open("wb") as log:
            process = subprocess.Popen([EDGE_AGENT, "run", "--config", str(config_file)], stdout=log, stderr=log)
        try:
            asyncio.run(wait_for_control(data_dir, process=process))
            ours_kib = _rss_kib(process.pid)
        finally:
            process.terminate()
            process.wait(15)
    return Result(
        f"daemon resident memory, {BACKLOG:,} events queued",
        "python -c 'import <dependencies>'",
        floor_kib * 1024,
        ours_kib * 1024,
        ours_kib / floor_kib,
        "<= 1.3",
        unit="B",
    )


def run() -> list[Result]:
    """The drain at each size, and the memory with 100,000 queued."""
    return [*(drain(size, rounds) for size, rounds in SIZES), memory()]
