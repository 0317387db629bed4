"""Fleet scale: a renewal pushed to 1,000 and 10,000 devices through Mosquitto, then to a NATS
cluster losing a node on the way.

Mosquitto and the cloud (``CloudService``, in this process) on loopback; ``smartplus-cloud fleet``
runs the simulated devices in a process of its own (one MQTT session each, every document verified).
Measured: from the ledger commit of a renewal (another connection, as the CLI) until every device
has reported the new document in its retained state: issuing N signed documents, N retained
publishes, N verifications, N state reports. The floor: N retained publishes of the same size to N
topics (10 in flight) until one subscriber has received them all.

The cluster: three NATS nodes (MQTT on JetStream, every stream on all three: two nodes cannot lose
one, docs/cloud.md), the devices spread over them, the cloud on the first. Once a quarter of the
devices have reported the renewal, the first node is SIGKILLed: the cloud and a third of the devices
reconnect to the others, and the run ends when every device has reported the renewal (nothing lost:
none missing, nothing left unpublished in the ledger). The floor: the same retained publishes through
the healthy cluster. ``FLEET_CLUSTER_SIZES`` (default 1000) says how many devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from bench.common import Result
from cloud_stub.fleet import raise_file_limit
from cloud_stub.ledger import Ledger
from cloud_stub.operations import sites
from cloud_stub.service import CloudService
from tests.support.brokers import Mosquitto, NatsCluster
from tests.support.ledger import call, office_ledger, renew_door_2, unsent

CLOUD = str(Path(sys.executable).parent / "smartplus-cloud")
SIZES = tuple(int(n) for n in os.environ.get("FLEET_SIZES", "1000,10000").split(",") if n)
CLUSTER_SIZES = tuple(int(n) for n in os.environ.get("FLEET_CLUSTER_SIZES", "1000").split(",") if n)
# Three NATS nodes sharing two cores sometimes stop converging: JetStream times out creating the sessions'
# consumers ("Unable to add JetStream consumer ... timeout") and a device whose subscription came late never
# gets its retained documents (docs/performance.md, "The drain without a timer per publish"). 1,000 devices
# converge in 15-25 s when it works; a phase still short after this long is reported as a row (how many
# devices got through it) and the bench goes on, rather than the whole run ending in a TimeoutError.
CLUSTER_STALL = 300.0


class _Stalled(Exception):
    """A phase of the cluster run still short after ``CLUSTER_STALL``: which, and how many devices got through."""

    def __init__(self, phase: str, reached: int) -> None:
        super().__init__(phase, reached)
        self.phase, self.reached = phase, reached


def _macs(count: int) -> list[str]:
    return [f"0c11{i:08x}" for i in range(count)]


def _prepare(path: Path, count: int) -> None:
    book = office_ledger(path)
    asked = sites.RegisterFleet(macs=_macs(count), distributor="d1", project="office")
    call(book, sites.register_fleet, None, asked)
    book.close()


def _renew(path: Path) -> None:
    """A renewal of door-2, as the CLI would make it (from connections of its own)."""
    book = Ledger.open(path)
    renew_door_2(book)
    book.close()


async def _reports(
    client: aiomqtt.Client, at_seq: set[str], count: int, seq: int, at_quarter: asyncio.Event | None = None
) -> float:
    """Add to ``at_seq`` every device whose state reports ``seq`` until there are ``count``; when the
    last did (``at_quarter`` is set once a quarter have)."""
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b"{}"
        if json.loads(payload).get("entitlements", {}).get("seq") == seq:
            at_seq.add(str(message.topic))
            if at_quarter is not None and len(at_seq) >= count // 4:
                at_quarter.set()
            if len(at_seq) == count:
                return time.perf_counter()
    raise RuntimeError("the subscription ended")


async def _converged(client: aiomqtt.Client, count: int, seq: int, seconds: float) -> float:
    """Wait until ``count`` devices report ``seq``; when the last did."""
    async with asyncio.timeout(seconds):
        return await _reports(client, set(), count, seq)


async def _floor(host: str, port: int, count: int, size: int, publish_to: tuple[str, int] | None = None) -> float:
    payload = b"x" * size
    async with (
        aiomqtt.Client(host, port, identifier="floor-sub") as subscriber,
        aiomqtt.Client(*(publish_to or (host, port)), identifier="floor-pub") as publisher,
    ):
        await subscriber.subscribe("floor/+/entitlements", qos=1)
        started = time.perf_counter()

        async def publish_all() -> None:
            for start in range(0, count, 10):
                await asyncio.gather(
                    *(publisher.publish(f"floor/{i}/entitlements", payload, qos=1, retain=True)
                      for i in range(start, min(start + 10, count)))
                )  # fmt: skip

        sender = asyncio.create_task(publish_all())
        received = 0
        async with asyncio.timeout(300):
            async for _ in subscriber.messages:
                received += 1
                if received == count:
                    break
        await sender
        return time.perf_counter() - started


async def _measure(directory: Path, count: int) -> tuple[float, float, float]:
    (directory / "broker").mkdir()
    broker = Mosquitto(directory / "broker", None)
    await broker.start()
    (directory / "cloud").mkdir()
    ledger_path = directory / "cloud" / "ledger.db"
    _prepare(ledger_path, count)
    service = CloudService(Ledger.open(ledger_path), directory / "cloud" / "keys", host=broker.host, port=broker.port,
                           interval=1.0)  # fmt: skip
    cloud = asyncio.create_task(service.run())
    log = (directory / "fleet.log").open("wb")
    fleet = subprocess.Popen(  # noqa: ASYNC220 -- started once, stopped below
        [CLOUD, "--ledger", str(ledger_path), "fleet", "--devices", str(count), "--broker", broker.url()],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiomqtt.Client(broker.host, broker.port, identifier="bench-watch") as watcher:
            await watcher.subscribe("smartplus/v1/devices/+/state", qos=1)
            started = time.perf_counter()
            first = await _converged(watcher, count, 1, 600) - started  # connect, provision
            started = time.perf_counter()
            _renew(ledger_path)
            renewal = await _converged(watcher, count, 2, 600) - started
        token_size = len(service.published[-1][1]) if service.published else 1500
        floor = await _floor(broker.host, broker.port, count, token_size)
    finally:
        fleet.terminate()
        await asyncio.to_thread(fleet.wait, 30)
        log.close()
        cloud.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cloud
        await broker.stop()
    return first, renewal, floor


async def _watch(
    brokers: list[tuple[str, int]],
    count: int,
    seq: int,
    seconds: float,
    at_quarter: asyncio.Event | None = None,
    at_seq: set[str] | None = None,
) -> float:
    """When every device has reported ``seq``: watching the retained states, from the last node first
    and moving on when a node goes away (a new subscription gets every retained state again).
    ``at_seq`` collects the devices seen at ``seq`` (what a caller reads after a ``TimeoutError``)."""
    at_seq = set() if at_seq is None else at_seq
    async with asyncio.timeout(seconds):
        for attempt in itertools.count():
            host, port = brokers[-1 - attempt % len(brokers)]
            try:
                async with aiomqtt.Client(host, port, identifier=f"bench-watch-{seq}", timeout=30) as watcher:
                    await watcher.subscribe("smartplus/v1/devices/+/state", qos=1)
                    return await _reports(watcher, at_seq, count, seq, at_quarter)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)
    raise RuntimeError("unreachable")


async def _measure_cluster(directory: Path, count: int) -> dict[str, float]:
    cluster = NatsCluster(directory / "cluster")
    await cluster.start()
    brokers = cluster.addresses()
    (directory / "cloud").mkdir()
    ledger_path = directory / "cloud" / "ledger.db"
    _prepare(ledger_path, count)
    ledger = Ledger.open(ledger_path)
    service = CloudService(ledger, directory / "cloud" / "keys", host=brokers[0][0], port=brokers[0][1],
                           fallbacks=brokers[1:], interval=1.0)  # fmt: skip
    token_size = 1500
    floor = await _floor(*brokers[2], count, token_size, publish_to=brokers[1])
    cloud = asyncio.create_task(service.run())
    log_path = directory / "fleet.log"
    log = log_path.open("wb")
    where = [arg for host, port in brokers for arg in ("--broker", f"mqtt://{host}:{port}")]
    fleet = subprocess.Popen(  # noqa: ASYNC220 -- started once, stopped below
        [CLOUD, "--ledger", str(ledger_path), "fleet", "--devices", str(count), *where],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    phase, seen = "first provisioning", set[str]()  # the devices through the phase under way
    converged: asyncio.Task[float] | None = None
    try:
        started = time.perf_counter()
        first = await _watch(brokers, count, 1, CLUSTER_STALL, at_seq=seen) - started
        phase, seen = "renewal", set()
        quarter = asyncio.Event()
        started = time.perf_counter()
        _renew(ledger_path)
        converged = asyncio.create_task(_watch(brokers[1:], count, 2, CLUSTER_STALL, quarter, seen))
        async with asyncio.timeout(CLUSTER_STALL):
            await quarter.wait()
        killed = time.perf_counter()
        await cluster.nodes[0].stop(hard=True)
        done = await converged
        deadline = time.monotonic() + 60
        while unsent(ledger):  # every issued document acknowledged by a broker
            assert time.monotonic() < deadline, f"{len(unsent(ledger))} documents never published"
            await asyncio.sleep(0.1)
    except TimeoutError:  # the cluster stopped converging (see CLUSTER_STALL): said as a row, the run goes on
        raise _Stalled(phase, len(seen)) from None
    finally:
        if converged is not None:
            converged.cancel()
        fleet.terminate()
        await asyncio.to_thread(fleet.wait, 60)
        log.close()
        cloud.cancel()
        with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
            await cloud
        await cluster.stop()
    summary = next(line for line in reversed(log_path.read_text().splitlines()) if "moved to another" in line)
    print(summary, file=sys.stderr)
    moved = int(summary.split("; ")[1].split()[0])
    return {
        "first": first, "renewal": done - started, "after_kill": done - killed, "floor": floor,
        "moved": moved,
    }  # fmt: skip


def run() -> list[Result]:
    raise_file_limit()  # Mosquitto, started from here, inherits it
    results = []
    for count in SIZES:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
            first, renewal, floor = asyncio.run(_measure(Path(directory), count))
        print(f"{count} devices: first provisioning {first:.1f} s", file=sys.stderr)
        results.append(
            Result(
                f"renewal converged on {count:,} devices (Mosquitto)",
                f"{count:,} retained publishes received",
                floor,
                renewal,
                renewal / floor,
                "info",
            )
        )
        results.append(
            Result(f"  cost per device ({count:,})", "per retained publish", floor / count, renewal / count,
                   renewal / floor, "info")
        )  # fmt: skip
    for count in CLUSTER_SIZES:
        try:
            with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
                got = asyncio.run(_measure_cluster(Path(directory), count))
        except _Stalled as stall:
            print(f"{count} devices on the NATS cluster: {stall.phase} stalled at {stall.reached} devices "
                  f"after {CLUSTER_STALL:.0f} s", file=sys.stderr)  # fmt: skip
            results.append(
                Result(f"NATS cluster stalled: devices through {stall.phase} ({count:,}) in {CLUSTER_STALL:.0f} s",
                       "devices", count, stall.reached, stall.reached / count, "info", unit="n")
            )  # fmt: skip
            continue
        print(
            f"{count} devices on the NATS cluster: first provisioning {got['first']:.1f} s; renewal converged"
            f" {got['after_kill']:.1f} s after the kill; {got['moved']:.0f} devices moved to another node",
            file=sys.stderr,
        )
        results.append(
            Result(f"renewal converged on {count:,} devices (3 NATS nodes, one killed)",
                   f"{count:,} retained publishes received (healthy cluster)", got["floor"], got["renewal"],
                   got["renewal"] / got["floor"], "info")
        )  # fmt: skip
        results.append(
            Result(f"  devices that moved to another node ({count:,})", "devices on the killed node", count / 3,
                   got["moved"], got["moved"] / (count / 3), "info", unit="n")
        )  # fmt: skip
    return results
