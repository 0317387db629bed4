"""Real door hardware end to end: the daemon (a process of its own) drives an OSDP reader (libosdp in
peripheral-device mode, another process, on a pseudo-terminal pair) and a Modbus relay / I/O module
(pymodbus's own server, another process, over TCP, and over RTU on a socat pseudo-terminal pair);
the cloud watches the events through Mosquitto. docs/drivers.md's behaviour table, row by row, for
the hardware that carries it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import EDGE_AGENT, ProcessDaemon, device_config
from tests.support.documents import svc
from tests.support.hardware import ModbusPeer, OsdpReaderPeer, PtyPair, SocatPair
from tests.support.sync import Docs, provisioned, status_until

PAID = [svc("door", "door:door-2", days=400), svc("elevator_control", days=400)]
LAPSED_DOOR = [svc("door", "door:door-2", days=-1), svc("elevator_control", days=400)]
CARD = {"id": "c-1", "kind": "card", "value": "04A1B2C0", "floors": ["3"]}
PIN = {"id": "p-1", "kind": "pin", "value": "2468"}
LED, BUZZER, KEYSET = 2, 3, 5  # osdp.Command
GREEN, RED = 2, 1


class Rig(NamedTuple):
    daemon: ProcessDaemon
    cloud: CloudPeer
    reader: OsdpReaderPeer
    module: ModbusPeer
    line: PtyPair
    key: bytes
    config_file: Path


def wiring(line: str, key_file: Path, module: dict[str, Any]) -> dict[str, Any]:
    return {
        "relay_seconds": 1,
        "held_open_seconds": 5,
        "osdp": {"bus-1": {"port": line, "offline_retry_seconds": 1}},
        "readers": {"entry": {"bus": "bus-1", "address": 1, "door": "door-1", "scbk_file": str(key_file)}},
        "modbus": {"io-1": {"poll_ms": 20, "debounce_ms": 40, "timeout_seconds": 0.5, **module}},
        "doors": {"door-1": {"relay": "io-1:0", "contact": "io-1:0", "exit_button": "io-1:1"}},
        "elevator": {"floors": {"3": "io-1:4"}, "pulse_seconds": 1},
    }


def key_file(directory: Path, key: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "entry.scbk"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def at_cloud(cloud: CloudPeer, typ: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in cloud.events.values() if e["type"] == typ and (kind is None or e["kind"] == kind)]


class Peers(NamedTuple):
    line: PtyPair
    reader: OsdpReaderPeer
    module: ModbusPeer
    config_file: Path


@contextlib.asynccontextmanager
async def peers(
    directory: Path, broker: Broker, root_pem: Path, *, reader_key: bytes | None, our_key: bytes, install: bool = False
) -> AsyncIterator[Peers]:
    """A reader holding ``reader_key`` (None: its factory default) on a pseudo-terminal pair, a Modbus module
    over TCP, and a device config wiring both with ``our_key`` as the reader's key; stopped on the way out."""
    line = PtyPair()
    reader = await OsdpReaderPeer().start(line, 1, reader_key)
    module = await ModbusPeer().start_tcp()
    try:
        drivers = wiring(line.path, key_file(directory / "keys", our_key), {"host": "127.0.0.1", "port": module.port})
        drivers["readers"]["entry"]["install_mode"] = install
        yield Peers(line, reader, module, device_config(directory / "device", broker, root_pem, drivers=drivers))
    finally:
        await reader.kill()
        await module.kill()
        line.close()


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: Broker, root_pem: Path, docs: Docs) -> AsyncIterator[Rig]:
    key = os.urandom(16)
    async with (
        peers(tmp_path, mosquitto, root_pem, reader_key=key, our_key=key) as (line, reader, module, config_file),
        provisioned(mosquitto, config_file, docs, PAID) as (daemon, cloud),
    ):
        await cloud.publish(
            "commands", docs.command("issue_credentials", {"door": "door-1", "credentials": [CARD, PIN]}, "c1")
        )
        await cloud.wait_until(lambda: "c1" in cloud.replies)
        assert cloud.replies["c1"][0]["ok"] is True
        await reader.wait_for(lambda line: line.get("online") is True, what="online in Secure Channel")
        yield Rig(daemon, cloud, reader, module, line, key, config_file)


async def doctor(config_file: Path) -> tuple[int | None, dict[str, dict[str, str]]]:
    """``edge-agent doctor --json``: its exit code and findings by check."""
    process = await asyncio.create_subprocess_exec(
        EDGE_AGENT, "doctor", "--json", "--config", str(config_file), stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    return process.returncode, {f["check"]: f for f in json.loads(out)}


async def pulsed(module: ModbusPeer, coil: int) -> None:
    """The coil was set, then cleared (the relay's pulse)."""
    await module.wait_for(lambda line: line.get("coil") == coil and line["on"] is True, what=f"coil {coil} on")
    await module.wait_for(lambda line: line.get("coil") == coil and line["on"] is False, what=f"coil {coil} off")


async def test_card_and_pin_at_an_osdp_reader_release_the_modbus_relay(rig: Rig) -> None:
    """A card read at the reader sets the door's coil for relay_seconds, calls the lift to the card's
    floor (Elevator Control is paid), lights the reader green, and the door log reaches the cloud; a
    PIN typed at the keypad does the same."""
    await rig.reader.card("04A1B2C0", bits=26)
    await pulsed(rig.module, 0)
    await pulsed(rig.module, 4)  # the floor relay of floor 3
    await rig.reader.wait_for(lambda line: line.get("command") == LED and line["on_color"] == GREEN, what="green")
    await rig.reader.wait_for(lambda line: line.get("command") == BUZZER, what="a beep")
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "door_log", "granted")), what="the door log")
    assert at_cloud(rig.cloud, "door_log", "granted")[0]["data"] == {
        "door": "door-1",
        "method": "card",
        "credential": "c-1",
    }
    assert at_cloud(rig.cloud, "door_log", "granted")[0]["source"] == "entry"

    await rig.reader.send({"keys": "24"})
    await rig.reader.send({"keys": "68#"})
    await rig.cloud.wait_until(lambda: len(at_cloud(rig.cloud, "door_log", "granted")) == 2, what="the PIN's log")
    pin = [e for e in at_cloud(rig.cloud, "door_log", "granted") if e["data"]["method"] == "pin"]
    assert pin[0]["data"]["credential"] == "p-1"
    await rig.module.wait_for(lambda _: len(rig.module.coil_writes(0)) == 4, what="the second pulse")
    assert rig.module.coil_writes(0) == [True, False, True, False]
    # the journal says what the device drove, and for which stimulus, without the credentials' values
    done = [
        (e["driver"], e["op"], e["args"], e["cause"]) for e in rig.daemon.log_events() if e["event"] == "output_action"
    ]
    assert ("relay", "open", {"door": "door-1", "seconds": 1}, "card") in done, done
    assert ("elevator", "call", {"floors": ["3"], "door": "door-1"}, "card") in done, done
    assert ("reader", "signal", {"door": "door-1", "pattern": "granted"}, "pin") in done, done
    logged = rig.daemon.log.read_text()
    assert "04A1B2C0" not in logged
    assert "2468" not in logged
    _code, findings = await doctor(rig.config_file)
    assert findings["reader entry"]["status"] == "ok", findings
    assert findings["module io-1"]["status"] == "ok", findings


async def test_an_unknown_card_is_denied_red_and_opens_nothing(rig: Rig) -> None:
    await rig.reader.card("DEADBEEF")
    await rig.reader.wait_for(lambda line: line.get("command") == LED and line["on_color"] == RED, what="red")
    buzz = await rig.reader.wait_for(lambda line: line.get("command") == BUZZER, what="beeps")
    assert buzz["rep_count"] == 3
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "door_log", "denied")), what="the denied log")
    assert at_cloud(rig.cloud, "door_log", "denied")[0]["data"]["reason"] == "unknown_credential"
    assert rig.module.coil_writes(0) == []


async def test_a_reader_that_dies_is_reported_and_its_return_too(rig: Rig) -> None:
    await rig.reader.kill()
    await rig.cloud.wait_until(
        lambda: bool(at_cloud(rig.cloud, "health", "hardware_offline")), what="the reader offline"
    )
    assert at_cloud(rig.cloud, "health", "hardware_offline")[0]["data"]["device"] == "entry"
    await rig.reader.start(rig.line, 1, rig.key)
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "health", "hardware_online")), what="back online")
    await rig.reader.card("04A1B2C0", bits=26)
    await rig.module.wait_for(lambda line: line.get("coil") == 0 and line["on"] is True, what="the relay again")


async def test_tamper_at_the_reader_is_held_while_doors_are_limited_and_sent_on_renewal(rig: Rig, docs: Docs) -> None:
    """Limited doors: the held card still opens, the reader shows the limited pattern, and the reader's
    tamper alarm is kept (not dropped) until the doors are renewed."""
    await rig.cloud.publish("entitlements", docs.entitlements(LAPSED_DOOR), retain=True)
    await status_until(rig.daemon.data_dir, lambda s: s["mode"] == "limited")
    await rig.reader.card("04A1B2C0", bits=26)
    await rig.module.wait_for(lambda line: line.get("coil") == 0 and line["on"] is True, what="the relay")
    limited = await rig.reader.wait_for(lambda line: line.get("command") == LED, what="the LED")
    assert (limited["on_color"], limited["off_color"]) == (2, 3)  # green and amber: limited
    await rig.reader.send({"tamper": 1, "power": 1})
    await status_until(rig.daemon.data_dir, lambda s: s["outbox"]["held"] >= 2)
    assert not at_cloud(rig.cloud, "alarm")
    await rig.cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
    await rig.cloud.wait_until(lambda: len(at_cloud(rig.cloud, "alarm")) == 2, what="the released alarms")
    for kind in ("tamper", "power_loss"):
        alarm = at_cloud(rig.cloud, "alarm", kind)[0]
        assert alarm["held_since"] is not None
        assert alarm["data"] == {"door": "door-1", "device": "entry"}


async def test_forced_open_exit_button_and_held_open_at_the_modbus_inputs(rig: Rig) -> None:
    """The contact opening without a release is forced_open; the exit button releases the door (egress
    is never gated) and the door opened then is no forced_open, but left open past held_open_seconds
    it is held_open."""
    await rig.module.inputs(i0=True)
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "alarm", "forced_open")), what="forced_open")
    await rig.module.inputs(i0=False)
    await status_until(rig.daemon.data_dir, lambda s: s["drivers"]["doors"].get("door-1") == "closed")
    await rig.module.inputs(i1=True)  # held until the relay answers, as a finger would
    await rig.module.wait_for(lambda line: line.get("coil") == 0 and line["on"] is True, what="the relay")
    await rig.module.inputs(i1=False)
    await rig.module.inputs(i0=True)  # the door opened while released: no alarm, but it stays open
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "door_log", "egress")), what="the egress log")
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "alarm", "held_open")), what="held_open")
    assert at_cloud(rig.cloud, "alarm", "held_open")[0]["data"]["door"] == "door-1"
    assert len(at_cloud(rig.cloud, "alarm", "forced_open")) == 1


async def test_a_module_that_stops_answering_makes_the_door_unknown(rig: Rig) -> None:
    await status_until(rig.daemon.data_dir, lambda s: s["drivers"]["doors"].get("door-1") == "closed")
    port = rig.module.port
    await rig.module.kill()
    await rig.cloud.wait_until(
        lambda: bool(at_cloud(rig.cloud, "health", "hardware_offline")), what="the module offline"
    )
    offline = at_cloud(rig.cloud, "health", "hardware_offline")[0]
    assert offline["data"]["device"] == "modbus:io-1"
    assert offline["data"]["doors"] == ["door-1"]
    status = await status_until(rig.daemon.data_dir, lambda s: s["drivers"]["doors"].get("door-1") == "unknown")
    assert status["drivers"]["modbus:io-1"]["online"] is False
    shown = await _cli_status(rig.config_file, "--json")  # what an installer runs: the daemon's view
    assert shown["daemon"] is True
    assert shown["drivers"]["doors"]["door-1"] == "unknown"
    assert shown["drivers"]["modbus:io-1"]["online"] is False
    assert "door-1 unknown" in await _cli_status(rig.config_file)
    code, findings = await doctor(rig.config_file)
    assert code == 1
    assert findings["module io-1"]["status"] == "fail"
    assert findings["reader entry"]["status"] == "ok"
    await rig.module.start_tcp(port)
    await rig.cloud.wait_until(lambda: bool(at_cloud(rig.cloud, "health", "hardware_online")), what="back online")
    await status_until(rig.daemon.data_dir, lambda s: s["drivers"]["doors"].get("door-1") == "closed")


async def _cli_status(config_file: Path, *flags: str) -> Any:
    """``edge-agent status`` as a separate process (``--json``: parsed)."""
    process = await asyncio.create_subprocess_exec(
        EDGE_AGENT, "status", "--config", str(config_file), *flags, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 0
    return json.loads(out) if flags else out.decode()


async def test_a_pulse_cut_by_a_crash_is_ended_at_the_next_start(rig: Rig) -> None:
    """Persist, then act: the daemon is SIGKILLed while the door is released; at its next start it
    clears the coil (the door is never left released)."""
    await rig.reader.card("04A1B2C0", bits=26)
    await rig.module.wait_for(lambda line: line.get("coil") == 0 and line["on"] is True, what="the relay on")
    await rig.daemon.kill()
    assert rig.module.coil_writes(0) == [True]
    await rig.daemon.start()
    await rig.module.wait_for(lambda line: line.get("coil") == 0 and line["on"] is False, what="the relay off")


@pytest.mark.parametrize("reader_key", ["another", "factory default"])
async def test_a_reader_without_our_key_is_refused_and_raises_an_alarm(
    tmp_path: Path, mosquitto: Broker, root_pem: Path, docs: Docs, reader_key: str
) -> None:
    """Secure Channel is enforced with the reader's own key: a reader holding another key, or still on its
    factory default (install mode not configured), is refused, an alarm raised, and its cards go nowhere."""
    held = os.urandom(16) if reader_key == "another" else None
    async with (
        peers(tmp_path, mosquitto, root_pem, reader_key=held, our_key=os.urandom(16)) as (_, reader, module, config),
        provisioned(mosquitto, config, docs, PAID) as (daemon, cloud),
    ):
        await cloud.wait_until(lambda: bool(at_cloud(cloud, "alarm", "reader_refused")), what="reader_refused")
        alarm = at_cloud(cloud, "alarm", "reader_refused")[0]
        assert alarm["data"]["device"] == "entry"
        await reader.card("04A1B2C0", bits=26)
        await reader.wait_for(lambda line: "submitted" in line, what="the card read")
        status = await status_until(daemon.data_dir, lambda s: "osdp:bus-1" in s["drivers"])
        assert status["drivers"]["osdp:bus-1"]["readers"]["entry"]["online"] is False
        assert status["drivers"]["osdp:bus-1"]["cards"] == 0
        assert module.coil_writes(0) == []


async def test_install_mode_takes_a_new_reader_once_and_gives_it_its_key(
    tmp_path: Path, mosquitto: Broker, root_pem: Path, docs: Docs
) -> None:
    """A reader on its factory default key, with install_mode configured: taken on the default key,
    given its own key (KEYSET), and the installer told to turn install mode off."""
    key = os.urandom(16)
    async with (
        peers(tmp_path, mosquitto, root_pem, reader_key=None, our_key=key, install=True) as (_, reader, _m, config),
        provisioned(mosquitto, config, docs, PAID) as (daemon, _cloud),
    ):
        keyset = await reader.wait_for(lambda line: line.get("command") == KEYSET, what="the KEYSET")
        assert keyset["data"] == key.hex()
        installed = await daemon.logged("osdp_reader_installed")
        assert installed[0]["reader"] == "entry"
        assert key.hex() not in daemon.log.read_text()  # the key is never logged


async def test_a_modbus_rtu_module_on_a_serial_line(
    tmp_path: Path, mosquitto: Broker, root_pem: Path, docs: Docs
) -> None:
    """The same relay and inputs over RTU: a remote opening pulses the coil; the exit button opens."""
    pair = await SocatPair(tmp_path).start()
    module = await ModbusPeer().start_rtu(pair.b)
    drivers = {
        "relay_seconds": 1,
        "modbus": {
            "io-1": {"transport": "rtu", "port": str(pair.a), "baudrate": 115200, "poll_ms": 30, "debounce_ms": 40}
        },
        "doors": {"door-1": {"relay": "io-1:0", "exit_button": "io-1:1"}},
    }
    config_file = device_config(tmp_path / "device", mosquitto, root_pem, drivers=drivers)
    try:
        async with provisioned(mosquitto, config_file, docs, PAID) as (_daemon, cloud):
            await cloud.publish("commands", docs.command("open_door", {"door": "door-1"}, "o1"))
            await pulsed(module, 0)
            await module.inputs(i1=True)
            await module.wait_for(lambda _: len(module.coil_writes(0)) >= 3, what="the exit button's release")
            await module.inputs(i1=False)
            await cloud.wait_until(lambda: bool(at_cloud(cloud, "door_log", "egress")), what="the egress log")
            assert module.coil_writes(0)[:3] == [True, False, True]
    finally:
        await module.kill()
        await pair.stop()
