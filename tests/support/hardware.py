"""Real peers for the hardware drivers, each a process of its own (tests/peers/): an OSDP reader on a
pseudo-terminal pair, a Modbus module over TCP or over RTU on a pseudo-terminal pair made by socat."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Peer:
    """A peer process: JSON lines in on stdin, JSON lines out on stdout (kept, and waited on)."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def _spawn(self, args: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=pass_fds,
            cwd=ROOT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(json.loads(line))
            self._changed.set()

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(obj) + "\n").encode())
        await self.process.stdin.drain()

    async def wait_for(
        self, test: Callable[[dict[str, Any]], bool], within: float = 20.0, what: str = "a line"
    ) -> dict[str, Any]:
        """The first line (from the start) that passes ``test``."""
        deadline = time.monotonic() + within
        while True:
            for line in self.lines:
                if test(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} from the peer within {within} s; it said {self.lines[-5:]}")
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class PtyPair:
    """A pseudo-terminal pair: the agent opens :attr:`path`; a peer process inherits :attr:`master`."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


class OsdpReaderPeer(Peer):
    """A reader (libosdp peripheral device) at ``address`` with Secure Channel key ``key`` on ``line``."""

    async def start(self, line: PtyPair, address: int, key: bytes | None) -> OsdpReaderPeer:
        self.lines = []
        await self._spawn(
            [
                "tests.peers.osdp_reader",
                "--fd",
                str(line.master),
                "--address",
                str(address),
                "--key",
                key.hex() if key else "-",
            ],
            pass_fds=(line.master,),
        )
        # Only then may the panel start: a pseudo-terminal keeps what the panel wrote meanwhile, and a reader
        # that started late under load found it queued and failed the Secure Channel handshake (CI, once);
        # the panel's watchdog then tries again only after offline_retry_seconds (10 s by default).
        await self.wait_for(lambda line: line.get("started") is True, what="its start")
        return self

    async def card(self, hex_value: str, bits: int | None = None) -> None:
        await self.send({"card": hex_value, "bits": bits or len(hex_value) * 4})

    def commands(self, command: int) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("command") == command]


class ModbusPeer(Peer):
    """A relay / I/O module (pymodbus's server): over TCP on a free port, or RTU on ``serial``."""

    port: int = 0

    async def start_tcp(self, port: int = 0) -> ModbusPeer:
        self.lines = []
        await self._spawn(["tests.peers.modbus_module", "tcp", "--port", str(port)])
        self.port = int((await self.wait_for(lambda line: "port" in line, what="its port"))["port"])
        return self

    async def start_rtu(self, serial: Path) -> ModbusPeer:
        self.lines = []
        await self._spawn(["tests.peers.modbus_module", "rtu", "--port", str(serial)])
        await self.wait_for(lambda line: "listening" in line, what="listening")
        return self

    async def inputs(self, **levels: bool) -> None:
        await self.send({"inputs": {k.removeprefix("i"): v for k, v in levels.items()}})
        await self.wait_for(
            lambda line: line.get("done", {}).get("inputs") == {k.removeprefix("i"): v for k, v in levels.items()}
        )

    def coil_writes(self, coil: int) -> list[bool]:
        return [bool(line["on"]) for line in self.lines if line.get("coil") == coil]


class SocatPair:
    """Two linked pseudo-terminals with paths (socat): one for the agent, one for the peer."""

    def __init__(self, directory: Path) -> None:
        self.a, self.b = directory / "tty-agent", directory / "tty-module"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> SocatPair:
        socat = shutil.which("socat")
        assert socat, "socat is needed (.ci/run installs it)"
        self.process = await asyncio.create_subprocess_exec(
            socat,
            f"pty,raw,echo=0,link={self.a}",
            f"pty,raw,echo=0,link={self.b}",
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.a.exists() and self.b.exists()):
            assert time.monotonic() < deadline, "socat made no pseudo-terminals"
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
