"""Real brokers for the tests, each on a free port: amqtt (in this process, or as its own process) and
Mosquitto (a process started here with a generated configuration; .ci/run installs it where missing).

Every broker requires a user name (amqtt keeps persistent sessions only for named clients) and can
check passwords from a password file. Processes are stopped with SIGTERM ("killed" as an operator
would restart a broker; Mosquitto then saves its persistent sessions and queues) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from cloud_stub.broker import password_line
from tests.support.pki import Pki

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int, seconds: float = 15.0) -> None:
    """Return once something accepts connections on ``port``; fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class Broker(ABC):
    """A broker the tests can start, stop and restart on the same port."""

    kind: str
    speaks_v5 = False

    def __init__(
        self, directory: Path, users: dict[str, str] | None = None, *, pki: Pki | None = None, mutual: bool = False
    ) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.directory = directory
        self.users = users
        self.pki = pki  # serve TLS with its server certificate
        self.mutual = mutual  # and require client certificates (Mosquitto only)

    @abstractmethod
    async def start(self) -> None:
        """Start listening (again, after a stop, with the same port and persistence)."""

    @abstractmethod
    async def stop(self, *, hard: bool = False) -> None:
        """Stop: gracefully, or at once (SIGKILL) with ``hard``."""

    def url(self) -> str:
        """The agent's mqtt.url for this broker."""
        return f"{'mqtts' if self.pki else 'mqtt'}://{self.host}:{self.port}"

    def _tls(self) -> tuple[Path, Path] | None:
        return None if self.pki is None else (self.pki.server.cert, self.pki.server.key)


class AmqttInProcess(Broker):
    """amqtt in the test's own event loop."""

    kind = "amqtt"

    def __init__(self, directory: Path, users: dict[str, str] | None = None, **tls: Any) -> None:
        super().__init__(directory, users, **tls)
        self._broker: Any = None

    def _password_file(self) -> Path | None:
        if self.users is None:
            return None
        path = self.directory / "amqtt.passwd"
        path.write_text("".join(password_line(u, p) + "\n" for u, p in self.users.items()))
        return path

    async def start(self) -> None:
        from cloud_stub.broker import start

        self._broker = await start(self.host, self.port, self._password_file(), self._tls())

    async def stop(self, *, hard: bool = False) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


class _Process(Broker):
    """A broker in its own process."""

    def __init__(self, directory: Path, users: dict[str, str] | None = None, **tls: Any) -> None:
        super().__init__(directory, users, **tls)
        self._process: subprocess.Popen[bytes] | None = None
        self._log = directory / f"{type(self).__name__}.log"
        self._started = False  # once it has listened, its port is known to clients: a restart keeps it

    @abstractmethod
    def _command(self) -> list[str]: ...

    def _movable(self) -> bool:
        """Whether a first start may move to another port (nobody was told this one yet)."""
        return not self._started

    def _move(self) -> None:
        self.port = free_port()

    async def start(self) -> None:
        """Start and wait until it listens. A free port can be taken between choosing it and binding it
        (an outgoing connection's source port, from the same range): a process that exits before it
        listens is started again on another port, if it may move; otherwise its log's end is the error."""
        for _ in range(3):
            with self._log.open("ab") as log:
                process = self._process = subprocess.Popen(  # noqa: ASYNC220 -- started once, waited on below
                    self._command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
            try:
                async with asyncio.timeout(30.0):  # JetStream (NATS) takes its time on a loaded machine
                    while process.poll() is None:
                        with contextlib.suppress(TimeoutError):
                            await wait_listening(self.port, seconds=0.5)
                            self._started = True
                            return
            except TimeoutError:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
                raise RuntimeError(f"{type(self).__name__} did not listen on {self.port} within 30 s") from None
            if not self._movable():
                break
            self._move()
        ending = self._log.read_text(errors="replace").splitlines()[-3:]
        raise RuntimeError(f"{type(self).__name__} exited before it listened: {' | '.join(ending)}")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): its connections stay open, nothing is answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a frozen broker go on (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    async def stop(self, *, hard: bool = False) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGCONT)  # a frozen broker cannot stop
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:  # a graceful stop that hangs (amqtt, with clients connected)
            process.kill()
            await asyncio.to_thread(process.wait, 10)


class AmqttProcess(_Process):
    """amqtt as its own process (python -m cloud_stub.broker), for tests that kill the broker."""

    kind = "amqtt"

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "cloud_stub.broker", "--port", str(self.port)]
        if self.users is not None:
            path = self.directory / "amqtt.passwd"
            path.write_text("".join(password_line(u, p) + "\n" for u, p in self.users.items()))
            command += ["--password-file", str(path)]
        if self.pki is not None:
            command += ["--certfile", str(self.pki.server.cert), "--keyfile", str(self.pki.server.key)]
        return command


class Mosquitto(_Process):
    """Mosquitto, the reference broker, with persistence in the test's directory."""

    kind = "mosquitto"
    speaks_v5 = True

    def __init__(self, directory: Path, users: dict[str, str] | None = None, extra: str = "", **tls: Any) -> None:
        super().__init__(directory, users, **tls)
        self.extra = extra

    def _command(self) -> list[str]:
        conf = self.directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.directory}/",
            "max_queued_messages 0",  # no per-client limit: the default 1000 drops QoS 1 messages beyond it
            "max_inflight_messages 20",
            "log_type error",
            "log_type warning",
            "user root",  # started as root, Mosquitto would drop to its own user, who cannot read the test's files
        ]
        if self.pki is not None:
            lines += [f"cafile {self.pki.ca}", f"certfile {self.pki.server.cert}", f"keyfile {self.pki.server.key}"]
        if self.mutual:
            lines += ["require_certificate true", "use_identity_as_username true", "allow_anonymous false"]
        elif self.users is None:
            lines.append("allow_anonymous true")
        else:
            passwd = self.directory / "mosquitto.passwd"
            passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            passwd.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        conf.write_text("\n".join(lines) + "\n" + self.extra)
        return [MOSQUITTO, "-c", str(conf)]


NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class Nats(_Process):
    """nats-server with its MQTT listener on JetStream (a NATS port of its own, unused by the tests);
    with ``routes``, one node of a cluster (:class:`NatsCluster`)."""

    kind = "nats"

    def __init__(
        self, directory: Path, users: dict[str, str] | None = None, *, routes: list[int] | None = None, **tls: Any
    ) -> None:
        super().__init__(directory, users, **tls)
        self.nats_port = free_port()
        self.cluster_port = free_port()
        self.routes = routes  # the other nodes' cluster ports

    def _movable(self) -> bool:
        return super()._movable() and self.routes is None  # a cluster node's peers know its ports

    def _move(self) -> None:
        super()._move()
        self.nats_port, self.cluster_port = free_port(), free_port()

    def _command(self) -> list[str]:
        conf = self.directory / "nats.conf"
        if self.routes is not None:  # a cluster node: the configuration deploy/ ships
            text = (ROOT / "deploy" / "nats" / "node.conf").read_text()
            for name, value in {
                "NAME": f"node_{self.port}", "HOST": self.host, "CLIENT_PORT": self.nats_port,
                "CLUSTER_PORT": self.cluster_port, "MQTT_PORT": self.port, "STATE": self.directory,
                "ROUTES": ", ".join(f'"nats://{self.host}:{port}"' for port in self.routes),
            }.items():  # fmt: skip
                text = text.replace(f"@{name}@", str(value))
            lines = [text]
        else:
            lines = [
                f'listen: "{self.host}:{self.nats_port}"',
                f'server_name: "test_{self.port}"',
                f'jetstream {{ store_dir: "{self.directory}/js" }}',
                f'mqtt {{ listen: "{self.host}:{self.port}", max_ack_pending: 256 }}',  # as deploy/nats/node.conf
            ]
        if self.users is not None:
            users = ", ".join(f'{{user: "{u}", password: "{p}"}}' for u, p in self.users.items())
            lines.append(f"authorization {{ users: [{users}] }}")
        conf.write_text("\n".join(lines) + "\n")
        return [NATS_SERVER, "-c", str(conf)]


class NatsCluster:
    """Three NATS nodes in one cluster (deploy/nats/node.conf), MQTT on each, every MQTT stream and
    consumer replicated on all three.

    Three, not two: MQTT on NATS lives in JetStream, whose metadata and streams are Raft groups; two
    nodes lose their quorum when either dies (measured: the survivor logs "no metadata leader" and
    refuses every MQTT login), three survive the loss of any one.
    """

    kind = "nats"

    def __init__(self, directory: Path, users: dict[str, str] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.nodes = [Nats(directory / f"node{i}", users, routes=[]) for i in range(3)]  # node.conf says 3
        for node in self.nodes:
            node.directory.mkdir(exist_ok=True)
            node.routes = [other.cluster_port for other in self.nodes if other is not node]

    def addresses(self) -> list[tuple[str, int]]:
        """(host, MQTT port) of every node."""
        return [(node.host, node.port) for node in self.nodes]

    async def start(self) -> None:
        """Start every node; return once each of them takes an MQTT session (JetStream elected)."""
        for node in self.nodes:
            await node.start()
        user, password = next(iter(self.users.items())) if self.users else (None, None)
        for node in self.nodes:
            await ready(node.host, node.port, user, password, seconds=60.0)

    async def stop(self, *, hard: bool = False) -> None:
        for node in self.nodes:
            await node.stop(hard=hard)


async def ready(host: str, port: int, user: str | None, password: str | None, *, seconds: float) -> None:
    """Wait until the broker on ``port`` takes an MQTT session and subscription (NATS answers TCP long
    before JetStream can hold a session); fail after ``seconds``."""
    import aiomqtt

    async with asyncio.timeout(seconds):
        while True:
            try:
                async with asyncio.timeout(5), aiomqtt.Client(
                    host, port, identifier=f"ready-{port}", username=user, password=password, clean_session=True
                ) as client:  # fmt: skip
                    await client.subscribe("ready/probe", qos=1)
                    return
            except (aiomqtt.MqttError, TimeoutError):
                await asyncio.sleep(0.2)


def make_broker(
    kind: str,
    directory: Path,
    *,
    process: bool = False,
    users: dict[str, str] | None = None,
    pki: Pki | None = None,
    mutual: bool = False,
) -> Broker:
    """A broker of ``kind`` (``amqtt``, ``mosquitto`` or ``nats``); amqtt in its own process when ``process``."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "nats":
        return Nats(directory, users, pki=pki, mutual=mutual)
    if kind == "mosquitto":
        return Mosquitto(directory, None if mutual else users, pki=pki, mutual=mutual)
    kind_class = AmqttProcess if process else AmqttInProcess
    return kind_class(directory, users, pki=pki, mutual=mutual)
