"""Faults with real processes: broker restarted mid-stream, daemon SIGKILLed mid-burst, broker out of reach
past the keepalive, a full disk, a corrupt database. Each ends with the cloud counting every event the device
acknowledged exactly once (after dedupe by event_id) and no gap in seq."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.control import server as control
from agent.store.database import DB_NAME
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import ProcessDaemon, device_config, raise_burst, raise_event
from tests.support.partition import Partition
from tests.support.sync import PAID, Docs, acknowledged, delivered, mode_is, provisioned, status_until


@pytest.fixture
def broker(process_broker: Broker) -> Broker:
    """The broker, in its own process."""
    return process_broker


async def test_broker_restarted_mid_stream(broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs) -> None:
    """The broker goes down and comes back while events stream; what the device held goes out, once."""
    # The cloud reconnects faster than the device, so amqtt (no persistent sessions across a restart)
    # has the cloud subscribed again before the device sends what it held.
    config_file = device_config(
        tmp_path / "device", broker, root_pem, mqtt={"reconnect_min": 0.5, "reconnect_max": 1.0}
    )
    async with provisioned(broker, config_file, docs) as (daemon, cloud):
        answers = await raise_burst(daemon.data_dir, 300)
        stream = asyncio.create_task(raise_burst(daemon.data_dir, 600))
        await broker.stop()
        answers += await raise_burst(daemon.data_dir, 300)  # raised while the broker is down
        await broker.start()
        answers += await stream
        answers += await raise_burst(daemon.data_dir, 300)
        assert len(acknowledged(answers)) == 1500
        acked = await delivered(cloud, answers, docs)
    cloud.assert_exactly_once(acked)


async def test_daemon_killed_mid_burst_and_restarted(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """SIGKILL while a burst is being taken: everything acknowledged before the kill goes out once, no gap."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    async with provisioned(broker, config_file, docs) as (daemon, cloud):
        burst = asyncio.create_task(raise_burst(daemon.data_dir, 5000))
        # Once an event has reached the cloud, the answers of its commit were written to the burst's socket
        # well before (a row is answered when committed, published after): the kill lands after some answers.
        # (Waiting for a queued row alone, CI once killed between a commit and the flush of its answers.)
        await status_until(daemon.data_dir, lambda s: len(cloud.events) > 0)
        await daemon.kill()
        answers = await burst
        assert 0 < len(acknowledged(answers)) < 5000, "the kill did not land in the middle of the burst"
        await daemon.start()
        answers += await raise_burst(daemon.data_dir, 200)
        acked = await delivered(cloud, answers, docs)
    cloud.assert_exactly_once(acked)


async def test_broker_gone_longer_than_the_keepalive(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """The network to the broker goes quiet without closing (a partition): the keepalive notices, events
    raised meanwhile are kept, and all go out once the broker is reachable again."""
    async with Partition(broker.port) as partition:
        config_file = device_config(
            tmp_path / "device", broker, root_pem, mqtt={"keepalive": 5, "url": partition.url()}
        )
        async with provisioned(broker, config_file, docs) as (daemon, cloud):
            answers = await raise_burst(daemon.data_dir, 50)
            await cloud.wait_until(lambda: len(cloud.events) == 50)
            partition.cut()
            await status_until(daemon.data_dir, lambda s: not s["connected"], seconds=30)
            answers += await raise_burst(daemon.data_dir, 100)
            partition.heal()
            await status_until(daemon.data_dir, lambda s: s["connected"], seconds=30)
            acked = await delivered(cloud, answers, docs)
    cloud.assert_exactly_once(acked)
    assert "mqtt_disconnected" in [e.get("event") for e in daemon.log_events()]


async def test_a_full_disk_refuses_low_priority_events_and_the_device_keeps_working(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """With the broker away and the database capped, health events are refused with a clear error; the
    daemon keeps running and deciding; once the broker is back everything acknowledged goes out."""
    config_file = device_config(tmp_path / "device", broker, root_pem, store={"max_bytes": 320 * 1024})
    async with provisioned(broker, config_file, docs) as (daemon, cloud):
        await broker.stop()
        answers: list[dict[str, Any]] = []
        refused = None
        for i in range(5000):
            answer = await raise_event(daemon.data_dir, "health", "telemetry", data={"pad": "x" * 1000, "i": i})
            if not answer["ok"]:
                refused = answer["error"]
                break
            answers.append(answer)
        assert refused is not None, "the capped database never filled"
        assert refused["code"] == "outbox_full"
        assert "disk is full" in refused["message"]
        decision = (
            await control.request(daemon.data_dir, {"op": "check", "action": "issue_access", "subject": "door:door-1"})
        )["decision"]
        assert decision["allowed"] is True
        assert daemon.process is not None
        assert daemon.process.poll() is None
        await broker.start()
        await delivered(cloud, answers, docs)
        await status_until(daemon.data_dir, lambda s: s["outbox"]["depth"] == 0)
        answers.append(await raise_event(daemon.data_dir, "health", "telemetry", data={"after": True}))
        assert answers[-1]["ok"], answers[-1]
        acked = await delivered(cloud, answers, docs)
    cloud.assert_exactly_once(acked)


async def test_a_corrupt_database_is_quarantined_and_the_device_recovers(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """A database that is not one any more is moved aside; a fresh one takes the retained documents again,
    and seq goes on from where it was (the sidecar), so the cloud sees no gap."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    async with provisioned(broker, config_file, docs) as (daemon, cloud):
        answers = await raise_burst(daemon.data_dir, 100)
        await cloud.wait_until(lambda: acknowledged(answers) <= set(cloud.events))
        code, _ = await daemon.stop()
        assert code == 0
        corrupt_database(daemon.data_dir)
        await daemon.start()
        await status_until(daemon.data_dir, lambda s: s["mode"] == "normal" and s["document"] is not None)
        answers += await raise_burst(daemon.data_dir, 100)
        acked = await delivered(cloud, answers, docs)
        await cloud.wait_until(lambda: any(e["kind"] == "store_quarantined" for e in cloud.events.values()))
    assert list(daemon.data_dir.glob(f"{DB_NAME}.corrupt-*")), "the corrupt file was not kept aside"
    assert "store_quarantined" in [e.get("event") for e in daemon.log_events()]
    cloud.assert_exactly_once(acked)


async def test_after_a_quarantine_a_superseded_document_is_still_a_rollback(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """The database that knew seq 2 is lost; the retained slot now holds seq 1 (replayed by whoever can
    publish there): the fresh database refuses it as a rollback (the sidecar keeps the high-water marks),
    takes seq 2 again when it comes, and a renewal after it."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    daemon = ProcessDaemon(config_file)
    async with CloudPeer(broker) as cloud:
        superseded = docs.entitlements(PAID)
        await cloud.publish("trust", docs.trust(), retain=True)
        await cloud.publish("entitlements", superseded, retain=True)
        await daemon.start()
        try:
            await _superseded_after_quarantine(daemon, cloud, docs, superseded)
        finally:
            await daemon.stop()


async def _superseded_after_quarantine(daemon: ProcessDaemon, cloud: CloudPeer, docs: Docs, superseded: str) -> None:
    """Seq 2 taken, the database corrupted, seq 1 retained in its place; then seq 2 and 3 again."""
    await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
    current = docs.entitlements(PAID)
    await cloud.publish("entitlements", current, retain=True)
    await cloud.wait_until(lambda: mode_is(cloud, "normal", 2))
    code, _ = await daemon.stop()
    assert code == 0
    corrupt_database(daemon.data_dir)
    await cloud.publish("entitlements", superseded, retain=True)  # seq 1 again in the retained slot
    await daemon.start()
    await cloud.wait_until(
        lambda: any(e["kind"] == "rejected" and e["data"]["reason"] == "rollback" for e in cloud.events.values()),
        what="the rollback refused",
    )
    status = await status_until(daemon.data_dir, lambda s: s["trust"] is not None)
    assert status["document"] is None, "the superseded document was accepted after the quarantine"
    await cloud.publish("entitlements", current, retain=True)
    await status_until(daemon.data_dir, lambda s: (s["document"] or {}).get("seq") == 2)
    await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
    await cloud.wait_until(lambda: mode_is(cloud, "normal", 3))


def corrupt_database(data_dir: Path) -> None:
    """Overwrite the (stopped) daemon's database with bytes that are not one, its WAL and index gone."""
    database = data_dir / DB_NAME
    for leftover in (database.with_name(DB_NAME + "-wal"), database.with_name(DB_NAME + "-shm")):
        leftover.unlink(missing_ok=True)
    database.write_bytes(b"\x00corrupted by the test\x00" * 2000)
