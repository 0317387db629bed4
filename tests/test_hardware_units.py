"""The pure parts of the hardware drivers, and their wiring refused at start with one line naming the key:
the keypad, the input debouncer, the pulse journal, the wiring rules, the key files."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.drivers.keyfile import read_scbk
from agent.drivers.modbus import Debouncer, PulseJournal
from agent.drivers.osdp import PATTERNS, Keypad
from agent.drivers.wiring import Point
from agent.errors import ConfigError
from tests.support.brokers import free_port
from tests.support.documents import write_config

GOOD: dict[str, Any] = {
    "osdp": {"bus-1": {"port": "/dev/ttyUSB0"}},
    "readers": {"entry": {"bus": "bus-1", "address": 1, "door": "door-1", "scbk_file": "keys/entry.scbk"}},
    "modbus": {"io-1": {"host": "10.0.0.5", "port": 502}},
    "doors": {"door-1": {"relay": "io-1:0", "contact": "io-1:0", "exit_button": "io-1:1"}},
}


def test_a_pin_is_the_digits_before_the_enter_key() -> None:
    pad = Keypad()
    assert pad.press(b"12", 0.0) == []
    assert pad.press(b"34#", 1.0) == ["1234"]
    assert pad.press(b"9*56\r", 2.0) == ["56"]  # * clears; 0x0D is enter too
    assert pad.press(b"77", 3.0) == []
    assert pad.press(b"8#", 9.0) == ["8"]  # more than 5 s between keys: started over
    assert pad.press(b"1" * 20 + b"#", 10.0) == ["1" * 12]  # at most 12 digits
    assert pad.press(b"#", 11.0) == []  # enter alone is no PIN


def test_an_input_counts_once_it_has_held_its_new_level() -> None:
    d = Debouncer(0.1)
    assert d.read(False, 0.0) is False  # the first reading is the level
    assert d.read(True, 0.02) is None  # a bounce
    assert d.read(False, 0.04) is None
    assert d.read(True, 0.10) is None
    assert d.read(True, 0.15) is None
    assert d.read(True, 0.20) is True  # held 0.1 s
    assert d.read(True, 0.30) is None


def test_the_three_reader_patterns_are_distinct() -> None:
    assert len({(p.on_color, p.off_color, p.on_count, p.off_count, p.beeps) for p in PATTERNS.values()}) == 3


async def test_the_pulse_journal_survives_a_new_process(tmp_path: Path) -> None:
    journal = PulseJournal(tmp_path)
    await journal.set(Point("io-1", 0), 100.0)
    await journal.set(Point("io-1", 4), 101.0)
    await journal.set(Point("io-2", 0), 102.0)
    await journal.set(Point("io-1", 4), None)
    again = PulseJournal(tmp_path)
    assert again.pending("io-1") == {0: 100.0}
    assert again.pending("io-2") == {0: 102.0}
    (tmp_path / "relay-pulses.json").write_text("{not json")
    assert PulseJournal(tmp_path).pending("io-1") == {}  # unreadable: nothing, and said so in the log


BAD_WIRING: list[tuple[str, dict[str, Any], str]] = [
    ("a reader at an undeclared door", {"readers": {"entry": {**GOOD["readers"]["entry"], "door": "d9"}}}, "d9"),
    ("a reader on an undeclared bus", {"readers": {"entry": {**GOOD["readers"]["entry"], "bus": "b9"}}}, "b9"),
    (
        "two readers at one address",
        {"readers": {**GOOD["readers"], "exit": {**GOOD["readers"]["entry"]}}},
        "is reader",
    ),
    (
        "a relay used twice",
        {"doors": {**GOOD["doors"], "door-2": {"relay": "io-1:0"}}},
        "relay io-1:0 is already doors.door-1.relay",
    ),
    ("a floor on a door's relay", {"elevator": {"floors": {"3": "io-1:0"}}}, "already"),
    ("an input used twice", {"doors": {"door-1": {"contact": "io-1:1", "exit_button": "io-1:1"}}}, "already"),
    ("a point on an undeclared module", {"doors": {"door-1": {"relay": "io-9:0"}}}, "io-9"),
    ("a point that is no point", {"doors": {"door-1": {"relay": "io-1"}}}, "<module>:<n>"),
    ("a reader without a key", {"readers": {"entry": {"bus": "bus-1", "address": 1, "door": "door-1"}}}, "scbk"),
    ("a tcp module without a host", {"modbus": {"io-1": {"port": 502}}}, "host"),
    ("an rtu module without its tty", {"modbus": {"io-1": {"transport": "rtu"}}}, "serial line"),
    ("a name with a dot", {"doors": {"door.1": {}}}, "name"),
]


@pytest.mark.parametrize(("why", "change", "said"), BAD_WIRING, ids=[b[0] for b in BAD_WIRING])
def test_wiring_mistakes_are_refused_naming_the_key(
    tmp_path: Path, root_pem: Path, why: str, change: dict[str, Any], said: str
) -> None:
    path = write_config(tmp_path, [root_pem], tables={"drivers": {**GOOD, **change}})
    with pytest.raises(ConfigError) as error:
        load_config(path, {})
    assert error.value.key.startswith("drivers"), why
    assert said in f"{error.value.key}: {error.value.problem}", error.value


def test_good_wiring_is_taken(tmp_path: Path, root_pem: Path) -> None:
    config = load_config(write_config(tmp_path, [root_pem], tables={"drivers": GOOD}), {})
    wiring = config.drivers.wiring()
    assert wiring.relays == {"door-1": Point("io-1", 0)}
    assert wiring.exits == {"door-1": Point("io-1", 1)}


def test_a_scbk_file_must_be_one_key_and_private(tmp_path: Path) -> None:
    path = tmp_path / "k.scbk"
    path.write_text("00" * 16 + "\n")
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_scbk(path)
    path.chmod(0o600)
    assert read_scbk(path) == bytes(16)
    path.write_text("00" * 15 + "\n")
    with pytest.raises(ValueError, match="32 hex digits"):
        read_scbk(path)


@pytest.mark.parametrize(("content", "mode", "said"), [(None, 0o600, "cannot read"), ("ab" * 16, 0o644, "chmod 600")])
async def test_a_missing_or_readable_key_file_stops_the_start_with_one_line(
    tmp_path: Path, root_pem: Path, content: str | None, mode: int, said: str
) -> None:
    key = tmp_path / "entry.scbk"
    if content is not None:
        key.write_text(content)
        key.chmod(mode)
    readers = {"entry": {"bus": "bus-1", "address": 1, "door": "door-1", "scbk_file": str(key)}}
    path = write_config(tmp_path / "device", [root_pem], tables={"drivers": {**GOOD, "readers": readers}})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--config", str(path), stderr=subprocess.PIPE, stdout=subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _out, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "drivers.readers.entry.scbk_file" in lines[0]
    assert said in lines[0]


async def test_the_panel_keeps_no_events_of_its_own(tmp_path: Path) -> None:
    """libosdp's wrapper queues every event for a get_event() the agent never calls: ours does not,
    so a door that reads cards all day holds no more memory at night (a real reader process)."""
    import os
    import time

    from agent.drivers.osdp import OsdpReaders
    from agent.drivers.wiring import OsdpBus, Reader
    from agent.local.stimuli import Stimulus
    from tests.support.hardware import OsdpReaderPeer, PtyPair

    key = os.urandom(16)
    line = PtyPair()
    peer = await OsdpReaderPeer().start(line, 1, key)
    got: list[Stimulus] = []
    twenty = asyncio.Event()

    def sink(stimulus: Stimulus) -> None:
        got.append(stimulus)
        if len([s for s in got if s.kind == "card"]) == 20:
            twenty.set()

    readers = OsdpReaders(
        "bus-1",
        OsdpBus(port=Path(line.path)),
        {"entry": Reader(bus="bus-1", address=1, door="door-1", scbk_file=tmp_path / "k")},
        {"entry": key},
        time.time,
    )
    try:
        await readers.start(sink)
        await peer.wait_for(lambda line: line.get("online") is True, what="online")
        for n in range(20):
            await peer.card(f"{n:08X}")
        async with asyncio.timeout(20):
            await twenty.wait()
        assert [s.data["value"] for s in got if s.kind == "card"] == [f"{n:08X}" for n in range(20)]
        assert readers._cp.event_queue[0].qsize() == 0
    finally:
        readers.close()
        await peer.kill()
        line.close()


async def test_doctor_asks_each_reader_and_module_itself_when_no_daemon_runs(tmp_path: Path, root_pem: Path) -> None:
    """With no daemon holding the lines, `edge-agent doctor` starts a panel and a Modbus client of its own:
    the reader and the module answer; a module that is gone fails, with where it was looked for."""
    import json
    import os

    from tests.support.hardware import ModbusPeer, OsdpReaderPeer, PtyPair

    key = os.urandom(16)
    line = PtyPair()
    peer = await OsdpReaderPeer().start(line, 1, key)
    module = await ModbusPeer().start_tcp()
    scbk = tmp_path / "entry.scbk"
    scbk.write_text(key.hex())
    scbk.chmod(0o600)
    drivers = {
        "osdp": {"bus-1": {"port": line.path}},
        "readers": {"entry": {"bus": "bus-1", "address": 1, "door": "door-1", "scbk_file": str(scbk)}},
        "modbus": {"io-1": {"host": "127.0.0.1", "port": module.port}, "io-2": {"host": "127.0.0.1", "port": 9}},
        "doors": {"door-1": {"relay": "io-1:0"}},
    }
    path = write_config(tmp_path / "device", [root_pem], tables={"drivers": drivers})

    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "doctor", "--json", "--config", str(path), stdout=subprocess.PIPE
        )
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
        found = {f["check"]: f for f in json.loads(out)}
        assert found["reader entry"]["status"] == "ok", found
        assert found["module io-1"]["status"] == "ok", found
        assert found["module io-2"]["status"] == "fail"
        assert "127.0.0.1:9" in found["module io-2"]["detail"]
        assert process.returncode == 1
        assert module.coil_writes(0) == []  # a doctor releases no door
    finally:
        await peer.kill()
        await module.kill()
        line.close()


async def test_a_modbus_module_stops_even_when_its_client_swallows_the_cancellation(tmp_path: Path) -> None:
    """pymodbus's connect (asyncio.wait_for, Python 3.11) may answer False instead of passing a cancellation
    on: the module's run() still ends when cancelled, so the daemon's stop is not held up by it."""
    from agent.drivers.modbus import ModbusModuleDriver, PulseJournal
    from agent.drivers.wiring import ModbusModule

    module = ModbusModuleDriver(
        "io-1", ModbusModule(host="127.0.0.1", port=free_port(), poll_ms=10, timeout_seconds=5.0),
        contacts={0: "door-1"}, exits={}, inverted=frozenset(), journal=PulseJournal(tmp_path), now=time.time,
    )  # fmt: skip
    connecting = asyncio.Event()

    async def connect_swallowing_cancellation() -> bool:
        connecting.set()
        try:
            await asyncio.Event().wait()  # a connect that never completes
        except asyncio.CancelledError:
            return False  # what wait_for does when the cancellation meets the end of the wait
        return True

    running = asyncio.create_task(module.run(lambda _stimulus: None))
    await asyncio.sleep(0)  # run() made its client before its first await
    assert module._client is not None
    module._client.connect = connect_swallowing_cancellation
    async with asyncio.timeout(5):
        await connecting.wait()
    running.cancel()
    async with asyncio.timeout(5):  # before the fix: it polled on, and this timed out
        await asyncio.gather(running, return_exceptions=True)
    assert running.cancelled()
