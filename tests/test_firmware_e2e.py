"""Firmware upgrades end to end: the daemon as a real process under a supervisor that restarts it when
it exits to reboot (75), a real broker (the cloud publishes the signed job, reads the events and the
state), and a local HTTP image server with Range support and faults.

One table of paths (issue "Staged firmware upgrades", item 7), then SIGKILL in every state."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from firmware.backends import backend
from firmware.slots import FileBootloader, FileSlot
from tests.support.bootloaders import bootloader_settings
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import SupervisedDaemon, device_config
from tests.support.images import Fault, FaultyImageServer
from tests.support.loops import loop_slots
from tests.support.rauc import RaucSystem
from tests.support.sync import PAID, Docs, mode_is, provision, status_until

RUNNING = "29.30.2.805"
NEWER = "29.30.10.1"  # numerically newer, though not as text
IMAGE_SIZE = 3 * 1024 * 1024 + 123


@pytest.fixture
def broker(process_broker: Broker) -> Broker:
    return process_broker


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, str]:
    directory = tmp_path / "images"
    directory.mkdir()
    path = directory / "r29.bin"
    path.write_bytes(os.urandom(IMAGE_SIZE))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def firmware_config(tmp_path: Path, broker: Broker, root_pem: Path, bootloader: str = "file", **firmware: Any) -> Path:
    settings = {
        "stall_seconds": 1.0,
        "attempts": 2,
        "health_deadline_seconds": 10.0,
        **bootloader_settings(tmp_path / "boot", bootloader),
        **firmware,
    }
    return device_config(tmp_path / "device", broker, root_pem, firmware=settings)


def kinds(cloud: CloudPeer, job_id: str) -> list[str]:
    events = sorted(
        (e for e in cloud.events.values() if e["type"] == "firmware" and e["data"].get("job_id") == job_id),
        key=lambda e: e["seq"],
    )
    return [e["kind"] for e in events]


def final(kind_list: list[str]) -> bool:
    return bool(kind_list) and kind_list[-1] in {"executed", "failed", "cancelled", "rolled_back", "rejected"}


def job(image: tuple[Path, str], server: FaultyImageServer, **fields: Any) -> dict[str, Any]:
    path, digest = image
    return {"version": NEWER, "url": server.url(path.name), "size": IMAGE_SIZE, "sha256": digest, **fields}


def booted(config_file: Path) -> tuple[str, str | None]:
    """The slot running (as the bootloader chose it) and the version in it (None: the factory image)."""
    chosen = backend(load_config(config_file, {}))
    slot = chosen.bootloader.booted()
    return slot, chosen.slot(slot).version()


@contextlib.asynccontextmanager
async def running(
    broker: Broker, config_file: Path, docs: Docs, image: tuple[Path, str], services: list[dict[str, Any]], **kw: Any
) -> AsyncIterator[tuple[SupervisedDaemon, FaultyImageServer, CloudPeer]]:
    """The supervised daemon holding ``services``, the image server and the cloud; stopped on the way out."""
    daemon = SupervisedDaemon(config_file, **kw)
    async with FaultyImageServer(image[0].parent) as server, CloudPeer(broker) as cloud:
        await provision(cloud, docs, services)
        await daemon.start()
        try:
            yield daemon, server, cloud
        finally:
            await daemon.stop()


# (name, job fields, server fault, firmware config, expected kinds, expected running version, final reason)
PATHS: list[tuple[str, dict[str, Any], Fault | None, dict[str, Any], list[str], str, str | None]] = [
    ("happy path", {}, None, {},
     ["pending", "downloading", "verifying", "installing", "rebooting", "committing", "executed"], NEWER, None),
    ("happy path without reading the slot back", {}, None, {"read_back": False},
     ["pending", "downloading", "verifying", "installing", "rebooting", "committing", "executed"], NEWER, None),
    ("wrong model", {"model": "X916"}, None, {}, ["rejected"], RUNNING, "wrong_model"),
    ("downgrade refused", {"version": "29.30.2.1"}, None, {}, ["rejected"], RUNNING, "downgrade"),
    ("downgrade allowed", {"version": "29.30.2.1", "allow_downgrade": True}, None, {},
     ["pending", "downloading", "verifying", "installing", "rebooting", "committing", "executed"], "29.30.2.1",
     None),
    ("over the size cap", {}, None, {"max_size": 1024 * 1024}, ["rejected"], RUNNING, "too_large"),
    ("no space for the image", {"size": 1 << 50}, None, {"max_size": 1 << 60}, ["rejected"], RUNNING, "no_space"),
    ("corrupt image", {"sha256": "0" * 64}, None, {}, ["pending", "downloading", "verifying", "failed"], RUNNING,
     "verification_failed"),
    ("truncated image", {}, Fault(close_after=IMAGE_SIZE // 2), {}, ["pending", "downloading", "failed"], RUNNING,
     "truncated"),
    ("more than the signed size", {}, Fault(extra=10 * 1024 * 1024), {}, ["pending", "downloading", "failed"],
     RUNNING, "oversize"),
    ("server stalling", {}, Fault(stall_after=1024 * 1024), {}, ["pending", "downloading", "failed"], RUNNING,
     "stalled"),
    ("health check failing", {}, None, {"health_command": ["false"]},
     ["pending", "downloading", "verifying", "installing", "rebooting", "committing", "rolled_back"], RUNNING,
     "health_check_failed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "fault", "settings", "expected", "version", "reason"), [p[1:] for p in PATHS], ids=[p[0] for p in PATHS]
)
async def test_upgrade_path(
    broker: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    image: tuple[Path, str],
    fields: dict[str, Any],
    fault: Fault | None,
    settings: dict[str, Any],
    expected: list[str],
    version: str,
    reason: str | None,
) -> None:
    """The file back end, on each broker."""
    await upgrade_path(broker, tmp_path, root_pem, docs, image, fields, fault, settings, expected, version, reason)


@pytest.mark.parametrize("bootloader", ["uboot", "grub"])
@pytest.mark.parametrize(
    ("fields", "fault", "settings", "expected", "version", "reason"), [p[1:] for p in PATHS], ids=[p[0] for p in PATHS]
)
async def test_upgrade_path_with_a_real_bootloader(
    mosquitto: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    image: tuple[Path, str],
    fields: dict[str, Any],
    fault: Fault | None,
    settings: dict[str, Any],
    expected: list[str],
    version: str,
    reason: str | None,
    bootloader: str,
) -> None:
    """U-Boot (fw_setenv on an environment file) and GRUB (grub-editenv on a grubenv), on Mosquitto."""
    await upgrade_path(
        mosquitto, tmp_path, root_pem, docs, image, fields, fault, settings, expected, version, reason, bootloader
    )


async def upgrade_path(
    broker: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    image: tuple[Path, str],
    fields: dict[str, Any],
    fault: Fault | None,
    settings: dict[str, Any],
    expected: list[str],
    version: str,
    reason: str | None,
    bootloader: str = "file",
) -> None:
    config_file = firmware_config(tmp_path, broker, root_pem, bootloader, **settings)
    # nothing paid: upgrades are never gated by billing
    async with running(broker, config_file, docs, image, []) as (daemon, server, cloud):
        if fault is not None:
            server.faults[image[0].name] = fault
        await cloud.publish("firmware", docs.firmware_job("j-1", **job(image, server, **fields)), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-1")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-1") == expected
        await cloud.wait_until(
            lambda: cloud.state is not None and cloud.state.get("online") is True
            and cloud.state["firmware"]["version"] == version,
            what=f"the state to say {version}",
        )  # fmt: skip
        last = max((e for e in cloud.events.values() if e["type"] == "firmware"), key=lambda e: e["seq"])
        assert last["data"].get("reason") == reason, last
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["version"] == version)
        shown = status["firmware"]["job"]
        assert (shown["state"], shown["reason"]) == (expected[-1], reason) if shown else expected == ["rejected"]
        assert cloud.state is not None
        assert cloud.state["firmware"]["slot"] == status["firmware"]["slot"] in ("a", "b")  # lower case, as documented
    slot, in_slot = booted(config_file)
    assert (in_slot or RUNNING) == version
    if version == NEWER:
        assert FileSlot(daemon.data_dir / "slots", slot).digest() == image[1]  # what boots is what was signed
        assert slot == "b"
    if bootloader != "file":  # the environment, read by the bootloader's own tool, boots the committed slot next
        env = backend(load_config(config_file, {})).bootloader.env.read()  # type: ignore[attr-defined]
        assert env["boot_part"] == slot.upper()
        assert env.get("upgrade_available", "0") == "0"
        assert not env.get("try_part")
    assert daemon.exits.count(75) == (1 if "rebooting" in expected else 0) + (1 if "rolled_back" in expected else 0)


async def test_a_scheduled_job_waits_for_its_time(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    config_file = firmware_config(tmp_path, broker, root_pem)
    async with running(broker, config_file, docs, image, PAID) as (daemon, server, cloud):
        at = time.time() + 4
        at_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at + 1))
        await cloud.publish("firmware", docs.firmware_job("j-2", **job(image, server, at=at_text)), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-2") == ["pending"])
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["job"] is not None)
        assert status["firmware"]["job"]["state"] == "pending"
        assert server.requests == []  # nothing fetched before its time
        await cloud.wait_until(lambda: final(kinds(cloud, "j-2")), seconds=60)
        assert kinds(cloud, "j-2")[-1] == "executed"
        first_request = min(e["occurred_at"] for e in cloud.events.values() if e["kind"] == "downloading")
        assert first_request >= at_text.replace("Z", "")  # RFC 3339 strings compare in time order


async def test_a_cancel_before_the_start_and_a_cancel_too_late(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    """A pending job is cancelled; a cancel arriving once the job is installing or later is refused."""
    slow_check = ["sh", "-c", "sleep 3"]
    config_file = firmware_config(tmp_path, broker, root_pem, health_command=slow_check)
    async with running(broker, config_file, docs, image, PAID) as (_, server, cloud):
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        await cloud.publish("firmware", docs.firmware_job("j-3", **job(image, server, at=later)), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-3") == ["pending"])
        await cloud.publish("firmware", docs.firmware_job("j-3", cancel=True), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-3") == ["pending", "cancelled"])

        await cloud.publish("firmware", docs.firmware_job("j-4", **job(image, server)), retain=True)
        await cloud.wait_until(lambda: "committing" in kinds(cloud, "j-4"), seconds=60)
        await cloud.publish("firmware", docs.firmware_job("j-4", cancel=True), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-4")), seconds=60)
        refused = [e for e in cloud.events.values() if e["kind"] == "rejected" and e["data"]["job_id"] == "j-4"]
        assert [e["data"]["reason"] for e in refused] == ["too_late"]
        await cloud.wait_until(lambda: kinds(cloud, "j-4")[-1] == "executed", seconds=30)


# (crash point, what the job's events must end with after the restart)
CRASHES: list[tuple[str, list[str]]] = [
    ("firmware:pending", ["executed"]),
    ("firmware:downloading", ["executed"]),
    ("firmware:downloading:half", ["executed"]),
    ("firmware:verifying", ["executed"]),
    ("firmware:installing", ["executed"]),
    ("firmware:slot_written", ["executed"]),
    ("firmware:try_set", ["committing", "executed"]),  # the try was set: the new slot boots, no rebooting event
    ("firmware:rebooting", ["committing", "executed"]),
    ("firmware:committing", ["rolled_back"]),  # died before its health check: the try is spent, old slot
    ("firmware:executed", ["executed"]),
]


@pytest.mark.parametrize(("point", "ending"), CRASHES, ids=[c[0] for c in CRASHES])
async def test_sigkill_in_every_state_ends_on_a_bootable_slot_with_a_truthful_status(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str], point: str, ending: list[str]
) -> None:
    """The file back end, on each broker."""
    await sigkill(broker, tmp_path, root_pem, docs, image, point, ending)


@pytest.mark.parametrize("bootloader", ["uboot", "grub"])
@pytest.mark.parametrize(("point", "ending"), CRASHES, ids=[c[0] for c in CRASHES])
async def test_sigkill_in_every_state_with_a_real_bootloader(
    mosquitto: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    image: tuple[Path, str],
    point: str,
    ending: list[str],
    bootloader: str,
) -> None:
    await sigkill(mosquitto, tmp_path, root_pem, docs, image, point, ending, bootloader)


async def sigkill(
    broker: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    image: tuple[Path, str],
    point: str,
    ending: list[str],
    bootloader: str = "file",
) -> None:
    config_file = firmware_config(tmp_path, broker, root_pem, bootloader)
    async with running(broker, config_file, docs, image, PAID, crash_at=point) as (daemon, server, cloud):
        await cloud.publish("firmware", docs.firmware_job("j-9", **job(image, server)), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-9")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-9")[-len(ending) :] == ending, kinds(cloud, "j-9")
        assert -9 in daemon.exits  # it did die at the point
        version = NEWER if ending[-1] == "executed" else RUNNING
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["version"] == version)
        assert status["firmware"]["job"]["state"] == ending[-1]
        await cloud.wait_until(
            lambda: cloud.state is not None and cloud.state.get("online") is True
            and cloud.state["firmware"]["version"] == version
        )  # fmt: skip
    slot, in_slot = booted(config_file)
    assert (in_slot or RUNNING) == version
    if slot != "a":  # never an unverified byte: what boots from the new slot is exactly what was signed
        assert FileSlot(daemon.data_dir / "slots", slot).digest() == image[1]
    if point == "firmware:downloading:half":  # resumed where the killed download stopped, a chunk past half
        [(_, first), (_, resumed)] = server.requests
        assert first is None
        assert resumed is not None
        assert int(resumed.removeprefix("bytes=").rstrip("-")) >= IMAGE_SIZE // 2


async def test_a_newer_job_replaces_a_pending_one_and_a_cancel_stops_a_download(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    config_file = firmware_config(tmp_path, broker, root_pem, stall_seconds=5.0)
    async with running(broker, config_file, docs, image, PAID) as (daemon, server, cloud):
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        await cloud.publish("firmware", docs.firmware_job("j-5", **job(image, server, at=later)), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-5") == ["pending"])
        server.faults[image[0].name] = Fault(delay_per_chunk=0.05)  # about 2.5 s for the whole image
        await cloud.publish("firmware", docs.firmware_job("j-6", **job(image, server)), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-5") == ["pending", "cancelled"])
        replaced = [e for e in cloud.events.values() if e["kind"] == "cancelled" and e["data"]["job_id"] == "j-5"]
        assert "replaced_by" in replaced[0]["data"]
        await status_until(daemon.data_dir, lambda s: (s["firmware"]["job"]["downloaded"] or 0) > 0)
        await cloud.publish("firmware", docs.firmware_job("j-6", cancel=True), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-6") == ["pending", "downloading", "cancelled"])
        sent = server.sent[image[0].name]
        assert sent < IMAGE_SIZE  # stopped mid-way
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["job"]["state"] == "cancelled")
        assert status["firmware"]["version"] == RUNNING
    assert booted(config_file) == ("a", None)


async def test_reset_after_upgrade_wipes_credentials_and_history_but_keeps_identity_and_trust(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    config_file = firmware_config(tmp_path, broker, root_pem)
    async with running(broker, config_file, docs, image, PAID) as (daemon, server, cloud):
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))  # subscribed: a command is not retained
        card = {"id": "c-1", "kind": "card", "value": "1234"}
        await cloud.publish(
            "commands", docs.command("issue_credentials", {"door": "door-1", "credentials": [card]}, "c1")
        )
        await cloud.wait_until(lambda: "c1" in cloud.replies)
        await cloud.publish(
            "firmware", docs.firmware_job("j-7", **job(image, server, reset_after_upgrade=True)), retain=True
        )
        await cloud.wait_until(lambda: final(kinds(cloud, "j-7")), seconds=60)
        [executed] = [e for e in cloud.events.values() if e["kind"] == "executed"]
        assert executed["data"]["reset"]["credentials"] == 1
        assert executed["data"]["reset"]["commands"] == 1
        # the local side reloads its credentials once told of the wipe (asynchronously): wait for it
        status = await status_until(
            daemon.data_dir, lambda s: s["firmware"]["version"] == NEWER and s["drivers"]["credentials"] == 0
        )
        assert status["device_id"] == "0c110512ab34"
        assert status["trust"] is not None  # the trust document and the entitlements stay
        assert status["mode"] == "normal"


async def test_a_job_that_failed_with_its_try_set_never_runs_the_failed_slot(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    """A defect right after the try was set fails the job; the daemon dies after the failure is
    persisted and before the slot is marked bad. The boot that follows spends the try on the failed
    slot: the resume table marks it bad and reboots into the old one, and the status stays true."""
    config_file = firmware_config(tmp_path, broker, root_pem)
    started = running(broker, config_file, docs, image, PAID, crash_at="firmware:failed", fail_at="firmware:try_set")
    async with started as (daemon, server, cloud):
        await cloud.publish("firmware", docs.firmware_job("j-10", **job(image, server)), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-10")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-10") == ["pending", "downloading", "verifying", "installing", "failed"]
        await cloud.wait_until(lambda: 75 in daemon.exits, what="the reboot out of the failed slot")
        assert daemon.exits[:2] == [-9, 75]  # killed at the point, then rebooted by the resume table
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["slot"] == "a")
        assert (status["firmware"]["version"], status["firmware"]["job"]["state"]) == (RUNNING, "failed")
    assert booted(config_file) == ("a", None)
    assert FileBootloader(daemon.data_dir / "slots").env()["GOOD_b"] == "0"


async def test_a_job_in_a_state_this_version_does_not_know_is_rolled_back(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    """A row written by another version of the agent (before a rollback) in a state this one does not
    know: on start it ends rolled back, as mender's LoadStateFromDb does, rather than stopping the daemon."""
    config_file = firmware_config(tmp_path, broker, root_pem)
    async with running(broker, config_file, docs, image, PAID) as (daemon, server, cloud):
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        await cloud.publish("firmware", docs.firmware_job("j-11", **job(image, server, at=later)), retain=True)
        await cloud.wait_until(lambda: kinds(cloud, "j-11") == ["pending"])
        await daemon.stop()
        with contextlib.closing(sqlite3.connect(daemon.data_dir / "agent.db")) as db, db:
            db.execute("UPDATE firmware_jobs SET state = 'awaiting_window' WHERE job_id = 'j-11'")
        await daemon.start()
        await cloud.wait_until(lambda: kinds(cloud, "j-11") == ["pending", "rolled_back"])
        [ended] = [e for e in cloud.events.values() if e["data"].get("job_id") == "j-11" and e["kind"] != "pending"]
        assert ended["data"]["reason"] == "unresumable"
        assert "awaiting_window" in ended["data"]["detail"]
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["job"]["state"] == "rolled_back")
        assert status["firmware"]["version"] == RUNNING
    assert booted(config_file) == ("a", None)


def _hhmm(offset_hours: float) -> str:
    t = time.gmtime(time.time() + offset_hours * 3600)
    return f"{t.tm_hour:02d}:{t.tm_min:02d}"


async def _simulate(data_dir: Path, kind: str, data: dict[str, Any]) -> None:
    from agent.control import server as control

    answer = await control.request(data_dir, {"op": "simulate", "kind": kind, "data": data})
    assert answer["ok"], answer


def _deferrals(cloud: CloudPeer, job_id: str) -> list[str]:
    events = sorted(
        (e for e in cloud.events.values() if e["kind"] == "deferred" and e["data"].get("job_id") == job_id),
        key=lambda e: e["seq"],
    )
    return [e["data"]["reason"] for e in events]


async def test_a_job_with_a_window_downloads_at_once_and_installs_only_inside_it(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    """Outside its window (UTC: the site has no time zone) the job downloads and verifies, then waits,
    reported once as deferred (outside_window), nothing written to the slot; the same job edited with a
    window that is open now installs and reboots."""
    config_file = firmware_config(tmp_path, mosquitto, root_pem)
    async with running(mosquitto, config_file, docs, image, PAID) as (daemon, server, cloud):
        later = {"start": _hhmm(2), "end": _hhmm(3)}
        await cloud.publish("firmware", docs.firmware_job("j-w", **job(image, server, window=later)), retain=True)
        await cloud.wait_until(lambda: _deferrals(cloud, "j-w") == ["outside_window"], what="deferred")
        assert kinds(cloud, "j-w")[:3] == ["pending", "downloading", "verifying"]
        deferred = next(e for e in cloud.events.values() if e["kind"] == "deferred")
        assert deferred["data"]["window"] == {**later, "zone": None}
        status = await status_until(daemon.data_dir, lambda s: s["firmware"]["job"]["state"] == "verifying")
        assert status["firmware"]["version"] == RUNNING
        assert FileSlot(daemon.data_dir / "slots", "b").version() is None  # nothing installed outside it
        now_open = {"start": _hhmm(-1), "end": _hhmm(1)}
        await cloud.publish("firmware", docs.firmware_job("j-w", **job(image, server, window=now_open)), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-w")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-w")[-1] == "executed"
        assert _deferrals(cloud, "j-w") == ["outside_window"]


@pytest.mark.parametrize(
    ("start", "start_data", "end", "reason"),
    [
        ("call", {"door": "door-1", "accounts": ["a-1"]}, "call_ended", "call_in_progress"),
        ("exit_button", {"door": "door-1"}, "door_closed", "door_open"),
    ],
    ids=["a call in progress", "a door it released still open"],
)
async def test_no_reboot_mid_call_or_with_a_door_open(
    mosquitto: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    image: tuple[Path, str],
    start: str,
    start_data: dict[str, Any],
    end: str,
    reason: str,
) -> None:
    config_file = firmware_config(tmp_path, mosquitto, root_pem)
    async with running(mosquitto, config_file, docs, image, PAID) as (daemon, server, cloud):
        await _simulate(daemon.data_dir, start, start_data)
        if start == "exit_button":
            await _simulate(daemon.data_dir, "door_open", {"door": "door-1"})  # released, then opened
        await cloud.publish("firmware", docs.firmware_job("j-b", **job(image, server)), retain=True)
        await cloud.wait_until(lambda: _deferrals(cloud, "j-b") == [reason], what="deferred")
        await status_until(daemon.data_dir, lambda s: s["firmware"]["job"]["state"] == "verifying")
        assert daemon.exits == []  # no reboot
        await _simulate(daemon.data_dir, end, {"door": "door-1"})
        await cloud.wait_until(lambda: final(kinds(cloud, "j-b")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-b")[-1] == "executed"
        assert daemon.exits.count(75) == 1


async def test_busy_past_the_bound_fails_the_job_and_never_reboots(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str]
) -> None:
    config_file = firmware_config(tmp_path, mosquitto, root_pem, defer_max_seconds=2.0)
    async with running(mosquitto, config_file, docs, image, PAID) as (daemon, server, cloud):
        await _simulate(daemon.data_dir, "door_open", {"door": "door-2"})  # propped open
        await cloud.publish("firmware", docs.firmware_job("j-p", **job(image, server)), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-p")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-p")[-1] == "failed"
        last = max((e for e in cloud.events.values() if e["type"] == "firmware"), key=lambda e: e["seq"])
        assert last["data"]["reason"] == "deferred_too_long"
        assert daemon.exits == []
    assert booted(config_file) == ("a", None)


def slot_b_holds(devices: dict[str, str], digest: str) -> bool:
    with open(devices["b"], "rb") as raw:
        return hashlib.sha256(raw.read(IMAGE_SIZE)).hexdigest() == digest


@pytest.mark.parametrize("health", ["healthy", "unhealthy"])
async def test_an_upgrade_onto_block_device_slots_with_u_boot(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str], health: str
) -> None:
    """Two loop devices as the slots (the download streamed straight into slot B with O_DIRECT, read back
    from the device) and U-Boot's environment through fw_setenv: committed, or rolled back to slot A.
    Nothing of the image is ever written in the data directory."""
    with loop_slots(tmp_path, 8 * 1024 * 1024) as devices:
        extra: dict[str, Any] = {"slots": "device", "slot_devices": devices}
        if health == "unhealthy":
            extra["health_command"] = ["false"]
        config_file = firmware_config(tmp_path, mosquitto, root_pem, "uboot", **extra)
        async with running(mosquitto, config_file, docs, image, PAID) as (daemon, server, cloud):
            await cloud.publish("firmware", docs.firmware_job("j-d", **job(image, server)), retain=True)
            images: set[str] = set()

            def ended() -> bool:
                images.update(p.name for p in (daemon.data_dir / "firmware").glob("*"))
                return final(kinds(cloud, "j-d"))

            await cloud.wait_until(ended, seconds=60, what="the job to end")
        assert images == set()  # streamed: no image file beside the database, at any moment looked at
        assert server.requests == [(image[0].name, None)]  # one GET, the whole image, once
        slot, version = booted(config_file)
        if health == "healthy":
            assert kinds(cloud, "j-d")[-1] == "executed"
            assert (slot, version) == ("b", NEWER)
            assert slot_b_holds(devices, image[1])
        else:
            assert kinds(cloud, "j-d")[-1] == "rolled_back"
            assert (slot, version) == ("a", None)


# Where streaming into a device changes what a kill leaves: mid-download (resumed from the device's
# recorded offset), before the verify (the device hashed again), before and after the seal.
DEVICE_CRASHES = [c for c in CRASHES if c[0] in (
    "firmware:downloading:half", "firmware:verifying", "firmware:installing", "firmware:slot_written",
)]  # fmt: skip


@pytest.mark.parametrize(("point", "ending"), DEVICE_CRASHES, ids=[c[0] for c in DEVICE_CRASHES])
async def test_sigkill_while_streaming_into_a_device_slot(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs, image: tuple[Path, str], point: str,
    ending: list[str],
) -> None:  # fmt: skip
    with loop_slots(tmp_path, 8 * 1024 * 1024) as devices:
        config_file = firmware_config(tmp_path, mosquitto, root_pem, "uboot", slots="device", slot_devices=devices)
        async with running(mosquitto, config_file, docs, image, PAID, crash_at=point) as (daemon, server, cloud):
            await cloud.publish("firmware", docs.firmware_job("j-k", **job(image, server)), retain=True)
            await cloud.wait_until(lambda: final(kinds(cloud, "j-k")), seconds=60, what="the job to end")
            assert kinds(cloud, "j-k")[-len(ending) :] == ending, kinds(cloud, "j-k")
            assert -9 in daemon.exits
        assert booted(config_file) == ("b", NEWER)
        assert slot_b_holds(devices, image[1])
        if point == "firmware:downloading:half":  # resumed from the last recorded MiB before the kill
            [(_, first), (_, resumed)] = server.requests
            assert first is None
            assert resumed == f"bytes={1024 * 1024}-"  # the image's eighth rounds up to the 1 MiB step
        else:
            assert len(server.requests) == 1  # never downloaded again


@pytest.fixture
def rauc(tmp_path: Path) -> Iterator[RaucSystem]:
    system = RaucSystem(tmp_path / "rauc").start()
    try:
        yield system
    finally:
        system.stop()


RAUC_PATHS: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("happy path", {}, ["pending", "downloading", "verifying", "installing", "rebooting", "committing", "executed"],
     NEWER),
    ("health check failing", {"health_command": ["false"]},
     ["pending", "downloading", "verifying", "installing", "rebooting", "committing", "rolled_back"], RUNNING),
]  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "expected", "version"), [p[1:] for p in RAUC_PATHS], ids=[p[0] for p in RAUC_PATHS]
)
async def test_an_upgrade_through_rauc(
    mosquitto: Broker,
    tmp_path: Path,
    root_pem: Path,
    docs: Docs,
    rauc: RaucSystem,
    settings: dict[str, Any],
    expected: list[str],
    version: str,
) -> None:
    """The image is a RAUC bundle (plain, signed with the keyring's key): RAUC's service installs it into
    the inactive raw slot, the board's bootloader (the harness) tries it once, the agent commits it with
    mark-good or rolls back with mark-bad."""
    bundle = rauc.bundle(tmp_path / "images", NEWER)
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    config_file = firmware_config(
        tmp_path, mosquitto, root_pem, slots="rauc", bootloader="rauc", rauc_bus=rauc.bus, **settings
    )
    async with running(mosquitto, config_file, docs, (bundle, digest), PAID, power_on=rauc.power_on) as (
        daemon,
        server,
        cloud,
    ):
        fields = {"version": NEWER, "url": server.url(bundle.name), "size": bundle.stat().st_size, "sha256": digest}
        await cloud.publish("firmware", docs.firmware_job("j-r", **fields), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-r")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-r") == expected
        await status_until(daemon.data_dir, lambda s: s["firmware"]["version"] == version)
    state = dict(line.split("=", 1) for line in rauc.state.read_text().split())
    if version == NEWER:
        assert (rauc.booted, state["primary"], state["state_B"]) == ("B", "B", "good")
        image = (tmp_path / "images" / "bundle-content" / "rootfs.img").read_bytes()
        assert (rauc.dir / "slot-b.img").read_bytes()[: len(image)] == image  # RAUC wrote the slot
    else:
        assert (rauc.booted, state["primary"], state["state_B"]) == ("A", "A", "bad")


@pytest.mark.parametrize(("point", "ending"), CRASHES, ids=[c[0] for c in CRASHES])
async def test_sigkill_in_every_state_through_rauc(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs, rauc: RaucSystem, point: str, ending: list[str]
) -> None:
    bundle = rauc.bundle(tmp_path / "images", NEWER)
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    config_file = firmware_config(tmp_path, mosquitto, root_pem, slots="rauc", bootloader="rauc", rauc_bus=rauc.bus)
    image = (bundle, digest)
    async with running(mosquitto, config_file, docs, image, PAID, crash_at=point, power_on=rauc.power_on) as (
        daemon,
        server,
        cloud,
    ):
        fields = {"version": NEWER, "url": server.url(bundle.name), "size": bundle.stat().st_size, "sha256": digest}
        await cloud.publish("firmware", docs.firmware_job("j-9", **fields), retain=True)
        await cloud.wait_until(lambda: final(kinds(cloud, "j-9")), seconds=60, what="the job to end")
        assert kinds(cloud, "j-9")[-len(ending) :] == ending, kinds(cloud, "j-9")
        assert -9 in daemon.exits
        version = NEWER if ending[-1] == "executed" else RUNNING
        await status_until(daemon.data_dir, lambda s: s["firmware"]["version"] == version)
    slot, in_slot = booted(config_file)
    assert (in_slot or RUNNING) == version
    assert rauc.booted == slot.upper()
