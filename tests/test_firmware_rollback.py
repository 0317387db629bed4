"""A rollback that survives a new schema: two builds of the agent, this one and the same with one extra
migration, each started by the supervisor as the slot that boots holds it. The newer build migrates the
database, fails its health check and rolls back; the older one starts, reports ``rolled_back`` once,
and every event is delivered, the alarms the newer build raised (held, doors limited) included.

Two kinds of extra migration: one that only adds (older agents may use the database as it is) and one
that says older agents may not (the older agent restores the copy taken before it and carries over
the outbox and the firmware jobs)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from agent.config import load_config
from agent.store.database import DB_NAME, snapshot_path
from agent.store.migrations import SCHEMA_VERSION
from cloud_stub.images import ImageServer
from firmware.slots import SLOTS, FileBootloader, FileSlot
from tests.support.bootloaders import bootloader_settings
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import SupervisedDaemon, device_config, raise_event
from tests.support.documents import svc
from tests.support.sync import Docs, provision, status_until

ROOT = Path(__file__).resolve().parents[1]
RUNNING, NEWER = "29.30.2.805", "29.30.10.1"
LIMITED = [svc("door", "door:door-2", days=-1)]  # doors limited: alarms are held, not sent
PAID = [svc("door", "door:door-2", days=400)]


def newer_build(directory: Path, *, breaking: bool) -> Path:
    """This agent with one extra migration; ``breaking``: older agents may not use the database after it."""
    for package in ("agent", "firmware", "protocol"):
        shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
    readable_from = "len(MIGRATIONS)" if breaking else "READABLE_FROM[-1]"
    with (directory / "agent" / "store" / "migrations.py").open("a") as f:
        f.write(
            "\n# The newer build's one extra migration (tests/test_firmware_rollback.py).\n"
            'MIGRATIONS = (*MIGRATIONS, ("CREATE TABLE later_feature (id INTEGER PRIMARY KEY, note TEXT)",\n'
            '                           "ALTER TABLE credentials ADD COLUMN note TEXT"))\n'
            f"READABLE_FROM = (*READABLE_FROM, {readable_from})\n"
            "SCHEMA_VERSION = len(MIGRATIONS)\n"
        )
    return directory


def kinds(cloud: CloudPeer, job_id: str) -> list[str]:
    events = sorted(
        (e for e in cloud.events.values() if e["type"] == "firmware" and e["data"].get("job_id") == job_id),
        key=lambda e: e["seq"],
    )
    return [e["kind"] for e in events]


@pytest.mark.parametrize("breaking", [False, True], ids=["an added table", "a migration older agents cannot follow"])
async def test_a_rollback_after_a_new_schema_starts_the_old_agent_and_loses_no_event(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs, breaking: bool
) -> None:
    build = newer_build(tmp_path / "newer-build", breaking=breaking)
    image = tmp_path / "images" / "r29.bin"
    image.parent.mkdir()
    image.write_bytes(b"newer firmware " * 4096)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    firmware = {
        "stall_seconds": 2.0,
        "health_deadline_seconds": 20.0,
        "health_command": ["sh", "-c", "sleep 3; exit 1"],  # the newer build is unhealthy
        **bootloader_settings(tmp_path / "boot", "file"),
    }
    config_file = device_config(tmp_path / "device", mosquitto, root_pem, firmware=firmware)
    data_dir = load_config(config_file, {}).data_dir
    slots = data_dir / "slots"

    def which_build() -> Path | None:
        """The build in the slot that boots next (as the file bootloader will choose it)."""
        env = FileBootloader(slots).env()
        slot = env.get("TRY") if env.get("TRY") in SLOTS else None
        if slot is None:
            good = [s for s in env.get("ORDER", "a b").split() if env.get(f"GOOD_{s}") == "1"]
            slot = good[0] if good else "a"
        return build if FileSlot(slots, slot).version() == NEWER else None

    daemon = SupervisedDaemon(config_file, build=which_build)
    async with ImageServer(image.parent) as server, CloudPeer(mosquitto) as cloud:
        await provision(cloud, docs, LIMITED)
        await daemon.start()
        try:
            job = {"version": NEWER, "url": server.url(image.name), "size": image.stat().st_size, "sha256": digest}
            await cloud.publish("firmware", docs.firmware_job("j-1", **job), retain=True)
            await status_until(data_dir, lambda s: (s["firmware"]["job"] or {}).get("state") == "committing", 60)
            with sqlite3.connect(data_dir / DB_NAME) as db:  # the newer build has migrated
                assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
            raised = [await raise_event(data_dir, "alarm", "tamper", data={"device": f"panel-{n}"}) for n in range(3)]
            assert all(r["ok"] and r["held"] for r in raised), raised
            await cloud.wait_until(lambda: "rolled_back" in kinds(cloud, "j-1"), seconds=60, what="rolled_back")
            status = await status_until(
                data_dir, lambda s: s["firmware"]["version"] == RUNNING and s["connected"], seconds=30
            )
            assert status["firmware"]["job"]["state"] == "rolled_back"
            await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)  # alarms may go out now
            await cloud.wait_until(
                lambda: len([e for e in cloud.events.values() if e["kind"] == "tamper"]) == 3,
                seconds=30,
                what="the alarms the newer build raised",
            )
        finally:
            await daemon.stop()
    assert kinds(cloud, "j-1") == [
        "pending", "downloading", "verifying", "installing", "rebooting", "committing", "rolled_back"
    ]  # fmt: skip
    alarms = [e for e in cloud.events.values() if e["kind"] == "tamper"]
    assert sorted(e["data"]["device"] for e in alarms) == ["panel-0", "panel-1", "panel-2"]
    assert all(e["held_since"] is not None for e in alarms)
    assert daemon.exits.count(75) == 2  # into the newer build, and back
    restored = [e for e in daemon.log_events() if e.get("event") == "store_restored_after_rollback"]
    with sqlite3.connect(data_dir / DB_NAME) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    if breaking:
        assert len(restored) == 1
        assert restored[0]["events_carried"] >= 3
        assert version == SCHEMA_VERSION  # the copy, from before the newer build's migration
        assert snapshot_path(data_dir, SCHEMA_VERSION).exists()
    else:
        assert restored == []
        assert version == SCHEMA_VERSION + 1  # used as it is: the newer build only added
