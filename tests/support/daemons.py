"""The daemon under test: in this process (fast, for logic) or as a real ``edge-agent run`` process
(for SIGKILL, restarts and exit codes). Both are driven through the control socket and MQTT only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.clock import ClockSource
from agent.config import Config, load_config, load_trust_roots
from agent.control import server as control
from agent.daemon import Daemon, Outcome
from agent.errors import ControlError
from tests.support.brokers import Broker
from tests.support.documents import DEVICE_ID, write_config

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
DEVICE_PASSWORD = "device-secret"
USERS = {DEVICE_ID: DEVICE_PASSWORD, "cloud": "cloud"}


def device_config(
    directory: Path, broker: Broker | str, root: Path, *, mqtt: dict[str, Any] | None = None, **tables: Any
) -> Path:
    """A device config for ``broker`` (or a broker URL): named client, fast reconnects (tests wait on
    conditions, not time)."""
    settings = {
        "url": broker if isinstance(broker, str) else broker.url(),
        "username": DEVICE_ID,
        "password": DEVICE_PASSWORD,
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        "refused_min": 0.2,
        "refused_max": 1.0,
        "timeout": 5.0,
        **(mqtt or {}),
    }
    return write_config(directory, [root], mqtt=settings, tables=tables)


class InProcessDaemon:
    """A Daemon in the test's event loop."""

    def __init__(self, config_file: Path, source: ClockSource | None = None) -> None:
        self.config: Config = load_config(config_file, {})
        self.source = source or ClockSource.system()
        self.daemon: Daemon | None = None
        self._task: asyncio.Task[Outcome] | None = None

    @property
    def data_dir(self) -> Path:
        """The daemon's data directory."""
        return self.config.data_dir

    async def open(self) -> Daemon:
        """Open, without serving yet (hooks can be set before it connects)."""
        self.daemon = await Daemon.open(self.config, load_trust_roots(self.config), self.source)
        return self.daemon

    async def serve(self) -> None:
        """Serve what :meth:`open` opened, until stopped."""
        assert self.daemon is not None
        self._task = asyncio.create_task(self.daemon.serve())
        await wait_for_control(self.data_dir)

    async def start(self) -> Daemon:
        """Open and serve."""
        daemon = await self.open()
        await self.serve()
        return daemon

    async def stop(self) -> Outcome:
        """Stop cleanly; how it ended."""
        assert self.daemon is not None
        assert self._task is not None
        self.daemon.stop.set()
        async with asyncio.timeout(10):
            return await self._task

    async def __aenter__(self) -> InProcessDaemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            await self.stop()


class ProcessDaemon:
    """``edge-agent run`` as a process of its own."""

    def __init__(self, config_file: Path, env: dict[str, str] | None = None) -> None:
        self.config_file = config_file
        config = load_config(config_file, {})
        self.data_dir = config.data_dir
        self.control = config.control_socket  # where its control socket is (data_dir/control.sock by default)
        self.env = env
        self.log = config_file.parent / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start and wait until its control socket answers."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 -- started once, waited on below
                [EDGE_AGENT, "run", "--config", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else {**os.environ, **self.env},
            )
        await wait_for_control(self.control, process=self.process)

    async def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send ``signum``; the exit code and how long it took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signum)
        code = await asyncio.to_thread(self.process.wait, 15)
        return code, time.monotonic() - started

    async def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        await self.stop(signal.SIGKILL)

    async def logged(self, event: str, count: int = 1, seconds: float = 20) -> list[dict[str, Any]]:
        """Wait until it has logged ``event`` ``count`` times (or more); those log entries."""
        async with asyncio.timeout(seconds):
            while True:
                found = [e for e in self.log_events() if e.get("event") == event]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)

    def log_events(self) -> list[dict[str, Any]]:
        """The structured log events it wrote (JSON lines)."""
        events = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events


class SupervisedDaemon(ProcessDaemon):
    """``edge-agent run`` under a supervisor that starts it again whenever it exits other than 0: to
    reboot (75) or killed, as the systemd unit does (docs/firmware.md). ``exits`` lists every exit
    code seen. ``crash_at`` names a crash point (agent/runtime/faults.py) for the first run only; ``fail_at`` a
    fault point, armed as long as the crash point is."""

    def __init__(
        self,
        config_file: Path,
        crash_at: str | None = None,
        fail_at: str | None = None,
        build: Callable[[], Path | None] | None = None,
        power_on: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(config_file)
        self.build = build  # which agent build to start, as a slot holds it (None: this one)
        self.power_on = power_on  # the bootloader's part of a boot, before the agent starts (tests/support/rauc.py)
        self.exits: list[int] = []
        self._watch: asyncio.Task[None] | None = None
        self._crash_at = crash_at
        self._fail_at = fail_at

    def _spawn(self) -> None:
        from agent.runtime.faults import CRASH_ENV, FAIL_ENV

        # the crash point stays armed across reboots (it may lie after one) until it has fired once
        env = dict(os.environ)
        if self._crash_at is not None:
            env[CRASH_ENV] = self._crash_at
            if self._fail_at is not None:
                env[FAIL_ENV] = self._fail_at
        if self.power_on is not None:
            self.power_on()
        command = [EDGE_AGENT, "run", "--config", str(self.config_file)]
        build = self.build() if self.build is not None else None
        if build is not None:  # another build of the agent: its own packages first on the path
            command = [sys.executable, "-m", "agent", "run", "--config", str(self.config_file)]
            env["PYTHONPATH"] = str(build)
        with self.log.open("ab") as log:  # -m puts the working directory first on the path: the build's
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=build)

    async def start(self) -> None:
        self._spawn()
        await wait_for_control(self.control, process=self.process)
        self._watch = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while True:
            assert self.process is not None
            code = await asyncio.to_thread(self.process.wait)
            self.exits.append(code)
            if code == 0:
                return
            if code == -signal.SIGKILL:
                self._crash_at = None
            self._spawn()

    async def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Stop the supervisor first (no restart), then the daemon."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        return await super().stop(signum)

    async def kill_and_restart(self) -> None:
        """SIGKILL, then start again as the supervisor would after a crash."""
        await self.stop(signal.SIGKILL)
        await self.start()


async def wait_for_control(where: Path, *, process: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    """Return once the daemon answers on its control socket (``where``: its data_dir, or the socket)."""
    async with asyncio.timeout(seconds):
        while True:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the daemon exited with {process.returncode} before it was ready")
            try:
                response = await control.request(where, {"op": "status"})
            except ControlError:
                await asyncio.sleep(0.05)
                continue
            if response.get("ok"):
                return


async def raise_event(
    data_dir: Path, type_: str, kind: str, source: str = "test", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Raise one event through the control socket; the daemon's answer (once it is durable)."""
    return await control.request(
        data_dir, {"op": "raise", "event": {"type": type_, "kind": kind, "source": source, "data": data or {}}}
    )


async def raise_burst(
    data_dir: Path, count: int, type_: str = "sensor", kind: str = "presence"
) -> list[dict[str, Any]]:
    """Raise ``count`` events on one connection without waiting in between; the answers received.

    If the daemon dies mid-burst, the answers received so far are returned.
    """
    reader, writer = await asyncio.open_unix_connection(str(control.socket_path(data_dir)), limit=control.MAX_LINE)
    answers: list[dict[str, Any]] = []
    try:
        for i in range(count):
            # shaped as the device's own presence reports are (docs/sync.md "Event shapes"), numbered
            event = {"type": type_, "kind": kind, "source": "burst", "data": {"sensor": f"burst-{i}", "present": True}}
            writer.write(json.dumps({"op": "raise", "id": i, "event": event}).encode() + b"\n")
        await writer.drain()
        while len(answers) < count:
            line = await reader.readline()
            if not line:
                break
            answers.append(json.loads(line))
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return answers
