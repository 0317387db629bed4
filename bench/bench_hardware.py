"""Real door hardware: a card read at an OSDP reader -> the door's coil set at a Modbus module.

The reader is libosdp's peripheral device and the module pymodbus's server, each a process of its own
(tests/peers/), the reader on a pseudo-terminal pair, the module on loopback TCP. Each card read is
timed from the reader's ``submit_event`` returning to the module's coil write arriving, both stamped
with the system's monotonic clock. Ours: the daemon (``edge-agent run``, no broker reachable: the
door works offline) holding 10,000 credentials, through the whole path (the panel's thread, the
stimulus, the credential lookup, the decisions, the pulse journal's fsync, the coil write). The
floor: the same two libraries wired directly (bench/floor_door.py: every card read sets the coil).
The two take turns on the same line in rounds; each card meets an idle line (for the agent: once the
reader has had its LED and buzzer answer to the last card), then 50-100 ms at random, so that neither
locks into step with the panel's poll.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.config import load_config
from bench.bench_access import _credentials, _nobody, _store_credentials
from bench.bench_outbox import _percentile
from bench.common import Result
from tests.support.daemons import ProcessDaemon, device_config
from tests.support.documents import write_public_key
from tests.support.hardware import ModbusPeer, OsdpReaderPeer, PtyPair

READS = 100  # per side per round
ROUNDS = 3


def _ons(module: ModbusPeer) -> list[dict[str, Any]]:
    return [line for line in module.lines if line.get("coil") == 0 and line["on"]]


def _submitted(reader: OsdpReaderPeer) -> list[dict[str, Any]]:
    return [line for line in reader.lines if "submitted" in line]


async def _reads(
    reader: OsdpReaderPeer, module: ModbusPeer, values: list[str], rng: random.Random, *, answers: bool
) -> list[float]:
    """Present each value; the time from the reader's submit to the coil set, per read. With ``answers``
    (the agent), each card is presented once the reader has had its answer to the last (LED, buzzer)."""
    times: list[float] = []
    for value in values:
        if answers and times:
            beeps = len(times)
            await reader.wait_for(lambda _: len(reader.commands(3)) >= beeps, what="the last answer")  # noqa: B023
        # The card comes to an idle line. A card read while the panel is still sending the reader its answer
        # to the last one (LED, buzzer: each command takes the place of a poll, ~50 ms) waits behind them.
        await asyncio.sleep(rng.uniform(0.05, 0.1))
        sent, set_ = len(_submitted(reader)), len(_ons(module))
        await reader.card(value, bits=len(value) * 4)
        await reader.wait_for(lambda _: len(_submitted(reader)) > sent, what="the read submitted")  # noqa: B023
        await module.wait_for(lambda _: len(_ons(module)) > set_, what="the coil")  # noqa: B023
        times.append(_ons(module)[set_]["at"] - _submitted(reader)[sent]["at"])
    return times


async def _run(directory: Path) -> tuple[list[float], list[float]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = os.urandom(16)
    line = PtyPair()
    reader = await OsdpReaderPeer().start(line, 1, key)
    module = await ModbusPeer().start_tcp()
    key_file = directory / "entry.scbk"
    key_file.write_text(key.hex())
    key_file.chmod(0o600)
    drivers = {
        "relay_seconds": 1,
        "osdp": {"bus-1": {"port": line.path}},
        "readers": {"entry": {"bus": "bus-1", "address": 1, "door": "door-1", "scbk_file": str(key_file)}},
        "modbus": {"io-1": {"host": "127.0.0.1", "port": module.port, "poll_ms": 50}},
        "doors": {"door-1": {"relay": "io-1:0"}},
    }
    root = write_public_key(directory / "root.pub.pem", Ed25519PrivateKey.generate())
    config_file = device_config(directory / "device", _nobody(), root, drivers=drivers)
    held = _credentials()
    await _store_credentials(load_config(config_file, {}).data_dir, held)
    door_1 = [c.value or "" for door, c in held if door == "door-1"]
    rng = random.Random(3)
    ours: list[float] = []
    floor: list[float] = []
    try:
        for _ in range(ROUNDS):
            panel = subprocess.Popen(  # noqa: ASYNC220 -- started once, stopped below
                [sys.executable, "-m", "bench.floor_door", line.path, key.hex(), str(module.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert panel.stdout is not None
            assert panel.stdin is not None
            ready = await asyncio.to_thread(panel.stdout.readline)
            assert ready.strip() == "ready", ready
            floor += await _reads(reader, module, [rng.choice(door_1) for _ in range(READS)], rng, answers=False)
            panel.stdin.close()
            await asyncio.to_thread(panel.wait, 10)

            daemon = ProcessDaemon(config_file)
            await daemon.start()
            started = time.monotonic()
            while time.monotonic() - started < 30:  # until the panel has the reader (Secure Channel)
                if any(e.get("event") == "osdp_reader_online" for e in daemon.log_events()[-50:]):
                    break
                await asyncio.sleep(0.05)
            reader.lines.clear()
            ours += await _reads(reader, module, [rng.choice(door_1) for _ in range(READS)], rng, answers=True)
            await daemon.stop()
    finally:
        await reader.kill()
        await module.kill()
        line.close()
    return ours, floor


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        ours, floor = asyncio.run(_run(Path(directory)))
    rows = []
    for label, q, goal in (("p50", 0.50, "info"), ("p99", 0.99, "<= 1.2")):
        o, f = _percentile(ours, q), _percentile(floor, q)
        rows.append(
            Result(
                f"OSDP card read -> Modbus coil set, via the daemon, 10,000 credentials, {label}",
                "bare control panel setting the coil",
                f,
                o,
                o / f,
                goal,
            )
        )
    return rows
