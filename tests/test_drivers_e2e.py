"""The hardware side end to end: ``edge-agent simulate`` against the running daemon (a real process),
events observed by the cloud over a real broker (amqtt and Mosquitto). One test per row of DOMAIN.md
"What expiry means on the device" that a stimulus can show, plus remote opening and the MR01 transport.
The full matrix of stimuli x entitlements is tests/test_reactions.py."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.mr01 import encode
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import EDGE_AGENT, device_config
from tests.support.documents import svc
from tests.support.sync import Docs, provisioned, status_until

CARD = {"id": "c-1", "kind": "card", "value": "04A1B2"}
PAID = [
    svc("door", "door:door-2", days=400),
    svc("personnel_app", "account:a-1", days=400),
    svc("sensor_call_alert", days=400),
]
LAPSED_DOOR = [svc("door", "door:door-2", days=-1), *PAID[1:]]


@pytest.fixture
def broker(process_broker: Broker) -> Broker:
    return process_broker


@pytest.fixture
def config_file(tmp_path: Path, broker: Broker, root_pem: Path) -> Path:
    return device_config(tmp_path / "device", broker, root_pem, drivers={"mr01_udp": "127.0.0.1:0"})


async def simulate(config_file: Path, kind: str, data: dict[str, Any] | None = None, **options: str) -> Any:
    """Run ``edge-agent simulate`` as a user would; (exit code, parsed --json output or stderr)."""
    args = [EDGE_AGENT, "simulate", kind, "--config", str(config_file), "--json"]
    if data is not None:
        args += ["--data", json.dumps(data)]
    for name, value in options.items():
        args += [f"--{name}", value]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    return process.returncode, json.loads(out) if process.returncode == 0 else err.decode()


def at_cloud(cloud: CloudPeer, typ: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in cloud.events.values() if e["type"] == typ and (kind is None or e["kind"] == kind)]


async def test_limited_doors_refuse_new_credentials_keep_held_ones_and_hold_alarms(
    broker: Broker, config_file: Path, docs: Docs
) -> None:
    """Commercial: a lapsed door limits every door. Credentials cannot be issued, held ones still open,
    alarms are held and go out once renewed."""
    async with provisioned(broker, config_file, docs, PAID) as (daemon, cloud):
        await cloud.publish(
            "commands", docs.command("issue_credentials", {"door": "door-1", "credentials": [CARD]}, "c1")
        )
        await cloud.wait_until(lambda: "c1" in cloud.replies)
        assert cloud.replies["c1"][0]["ok"] is True
        await cloud.publish("entitlements", docs.entitlements(LAPSED_DOOR), retain=True)
        await status_until(daemon.data_dir, lambda s: s["mode"] == "limited")
        await cloud.publish(
            "commands", docs.command("issue_credentials", {"door": "door-1", "credentials": [CARD]}, "c2")
        )
        await cloud.wait_until(lambda: "c2" in cloud.replies)
        assert cloud.replies["c2"][0]["error"]["code"] == "service_limited"

        code, card = await simulate(config_file, "card", {"door": "door-1", "value": "04A1B2"})
        assert code == 0
        assert card["actions"] == [
            {"driver": "relay", "op": "open", "args": {"door": "door-1", "seconds": 5}},
            {"driver": "reader", "op": "signal", "args": {"door": "door-1", "pattern": "limited"}},
        ]
        code, tamper = await simulate(config_file, "tamper", {"door": "door-1"})
        assert code == 0
        assert [(e["type"], e["kind"], e["held"]) for e in tamper["events"]] == [("alarm", "tamper", True)]
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "door_log", "granted")), what="the door log")
        assert at_cloud(cloud, "door_log", "granted")[0]["data"] == {
            "door": "door-1",
            "method": "card",
            "credential": "c-1",
        }
        assert not at_cloud(cloud, "alarm")

        await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "alarm", "tamper")), what="the released alarm")
        assert at_cloud(cloud, "alarm", "tamper")[0]["held_since"] is not None


async def test_a_lapsed_app_gets_no_call_and_the_door_log_says_why(
    broker: Broker, config_file: Path, docs: Docs
) -> None:
    services = [*PAID, svc("personnel_app", "account:a-2", days=-2)]
    async with provisioned(broker, config_file, docs, services) as (_, cloud):
        code, call = await simulate(config_file, "call", {"door": "door-1", "accounts": ["a-1", "a-2"]})
        assert code == 0
        assert call["actions"] == [{"driver": "calls", "op": "ring_app", "args": {"account": "a-1", "door": "door-1"}}]
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "door_log", "call_not_opened")))
        logged = at_cloud(cloud, "door_log", "call_not_opened")[0]["data"]
        assert logged["skipped"] == [{"target": "app:a-2", "reason": "expired"}]


async def test_premium_features_stop_when_they_lapse(broker: Broker, config_file: Path, docs: Docs) -> None:
    services = [*PAID, svc("elevator_control", days=-1), svc("attendance", plan="0-200", days=400)]
    async with provisioned(broker, config_file, docs, services):
        code, elevator = await simulate(config_file, "elevator", {"door": "door-1", "floors": ["5"]})
        assert code == 0
        assert elevator["actions"] == []
        assert elevator["decisions"][0]["reason"] == "expired"
        code, attendance = await simulate(config_file, "attendance", {"count": 201})
        assert code == 0
        assert attendance["decisions"][0]["reason"] == "plan_exceeded"


async def test_a_fall_raises_a_call_alert_only_while_the_service_is_active(
    broker: Broker, config_file: Path, docs: Docs
) -> None:
    async with provisioned(broker, config_file, docs, PAID) as (daemon, cloud):
        code, fall = await simulate(config_file, "fall", source="mr01-bed1")
        assert code == 0
        assert [e["type"] for e in fall["events"]] == ["sensor", "call_alert"]
        await cloud.publish("entitlements", docs.entitlements([svc("door", "door:door-2", days=400)]), retain=True)
        await status_until(daemon.data_dir, lambda s: s["document"] is not None and s["document"]["seq"] == 2)
        code, bed = await simulate(config_file, "bed_exit", source="mr01-bed1")
        assert code == 0
        assert [e["type"] for e in bed["events"]] == ["sensor"]
        assert bed["actions"] == [
            {"driver": "monitor", "op": "ring", "args": {"monitor": "local", "caller": "mr01-bed1"}}
        ]
        await cloud.wait_until(lambda: len(at_cloud(cloud, "sensor")) == 2)
        assert [e["kind"] for e in at_cloud(cloud, "call_alert")] == ["fall_detected"]
        # renewed: the bed exit of the lapse brings no late alert; a new fall raises one again
        await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
        await status_until(daemon.data_dir, lambda s: s["document"]["seq"] == 3)
        code, again = await simulate(config_file, "fall", source="mr01-bed2")  # another: bed1 is debounced
        assert [e["type"] for e in again["events"]] == ["sensor", "call_alert"]
        await cloud.wait_until(lambda: len(at_cloud(cloud, "sensor")) == 3)
        await cloud.wait_until(lambda: len(at_cloud(cloud, "call_alert")) == 2)
        assert [e["kind"] for e in at_cloud(cloud, "call_alert")] == ["fall_detected", "fall_detected"]
        assert all(e["held_since"] is None for e in at_cloud(cloud, "call_alert"))


async def test_mr01_frames_over_udp_reach_the_cloud(broker: Broker, config_file: Path, docs: Docs) -> None:
    async with provisioned(broker, config_file, docs, PAID) as (daemon, cloud):
        status = await status_until(daemon.data_dir, lambda s: s["drivers"]["mr01"] is not None)
        port = status["drivers"]["mr01"]["port"]
        mac = bytes.fromhex("0c1105a1b2c3")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for frame in (
                encode("fall", mac, 1, 95),
                encode("fall", mac, 1, 95),
                b"junk",
                encode("battery", mac, 2, 5),
            ):
                sender.sendto(frame, ("127.0.0.1", port))
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "call_alert")) and bool(at_cloud(cloud, "health")))
        assert [e["source"] for e in at_cloud(cloud, "sensor")] == ["mr01-0c1105a1b2c3"]
        assert [e["kind"] for e in at_cloud(cloud, "health")] == ["battery_low"]
        status = await status_until(daemon.data_dir, lambda s: s["drivers"]["mr01"]["received"] == 4)
        assert status["drivers"]["mr01"]["duplicates"] == 1
        assert status["drivers"]["mr01"]["malformed"] == {"short": 1}


async def test_a_remote_open_door_command_opens_and_is_logged(broker: Broker, config_file: Path, docs: Docs) -> None:
    async with provisioned(broker, config_file, docs, PAID) as (_, cloud):
        await cloud.publish("commands", docs.command("open_door", {"door": "door-2", "seconds": 3}, "open-1"))
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "door_log", "granted")), what="the remote opening")
        assert at_cloud(cloud, "door_log", "granted")[0]["data"] == {
            "door": "door-2",
            "method": "remote",
            "command": "open-1",
        }
        await cloud.wait_until(lambda: "open-1" in cloud.replies)  # NATS orders per topic only
        assert cloud.replies["open-1"][0]["ok"] is True


async def test_simulate_refuses_what_it_cannot_do(
    broker: Broker, config_file: Path, docs: Docs, tmp_path: Path
) -> None:
    async with provisioned(broker, config_file, docs, PAID):
        code, err = await simulate(config_file, "retina", {})
        assert (code, "unknown stimulus kind 'retina'" in err) == (2, True), err
        code, err = await simulate(config_file, "card", {"door": "door-1"})
        assert (code, "card needs data.value" in err) == (2, True), err
        process = await asyncio.create_subprocess_exec(
            EDGE_AGENT, "simulate", "card", "--data", "{not json", "--config", str(config_file),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err_bytes = await process.communicate()
        assert (process.returncode, "--data is not JSON" in err_bytes.decode()) == (2, True)
    code, err = await simulate(config_file, "exit_button", {"door": "door-1"})
    assert (code, "no edge-agent is running" in err) == (2, True), err


def _own_address() -> str:
    """This machine's address on its default route (no packet is sent: a UDP connect only routes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.250", 9))  # TEST-NET-1: routed, never reached
        return str(probe.getsockname()[0])


async def test_mr01_frames_from_another_host_need_the_sensors_key(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """Listening on every address with a key file: a plain fall from another host is refused as
    unauthenticated; the same fall tagged under the sensor's key reaches the cloud."""
    from agent.drivers.mr01 import encode_authenticated

    key, mac = bytes(range(32)), bytes.fromhex("0c1105a1b2c3")
    keys = tmp_path / "mr01.keys"
    keys.write_text(f"{mac.hex()} {key.hex()}\n")
    keys.chmod(0o600)
    config_file = device_config(
        tmp_path / "device", broker, root_pem, drivers={"mr01_udp": "0.0.0.0:0", "mr01_keys": str(keys)}
    )
    async with provisioned(broker, config_file, docs, PAID) as (daemon, cloud):
        status = await status_until(daemon.data_dir, lambda s: s["drivers"]["mr01"] is not None)
        assert status["drivers"]["mr01"]["keys"] == 1
        here = _own_address()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind((here, 0))
            target = (here, status["drivers"]["mr01"]["port"])
            sender.sendto(encode("fall", mac, 1, 95), target)
            sender.sendto(encode_authenticated("fall", mac, 2, key, 95), target)
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "call_alert")))
        status = await status_until(daemon.data_dir, lambda s: s["drivers"]["mr01"]["received"] == 2)
        assert status["drivers"]["mr01"]["malformed"] == {"unauthenticated": 1}
        assert len(at_cloud(cloud, "sensor")) == 1


async def test_a_sensor_key_file_others_may_read_stops_the_daemon(
    broker: Broker, tmp_path: Path, root_pem: Path
) -> None:
    """The keys are secrets: a world-readable file is a configuration error (exit 2, one line naming it)."""
    keys = tmp_path / "mr01.keys"
    keys.write_text(f"0c1105a1b2c3 {bytes(32).hex()}\n")
    keys.chmod(0o644)
    config_file = device_config(tmp_path / "device", broker, root_pem, drivers={"mr01_keys": str(keys)})
    process = await asyncio.create_subprocess_exec(
        EDGE_AGENT, "run", "--config", str(config_file), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert "drivers.mr01_keys" in err.decode()
    assert "chmod 600" in err.decode()
