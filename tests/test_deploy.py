"""The operations kit: deploy/pki/make-certs.sh and deploy/mosquitto/ (mutual TLS, per-device ACLs),
end to end with a real Mosquitto: a device can neither read nor write another device's topics, and
the real agent works under them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest

from protocol import jws
from protocol.topics import DEFAULT_PREFIX
from tests.support.brokers import MOSQUITTO, Broker, free_port
from tests.support.daemons import ProcessDaemon
from tests.support.documents import DEVICE_ID, write_config
from tests.support.sync import Docs

REPO = Path(__file__).parent.parent
OTHER = "0c1105aaaaaa"
PREFIX = DEFAULT_PREFIX


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    subprocess.run(
        [REPO / "deploy" / "pki" / "make-certs.sh", str(out), "--server", "127.0.0.1", "--device", DEVICE_ID,
         "--device", OTHER],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def test_make_certs_refuses_a_bad_mac(tmp_path: Path) -> None:
    result = subprocess.run(
        [REPO / "deploy" / "pki" / "make-certs.sh", str(tmp_path), "--server", "x", "--device", "AA:BB"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "12 lowercase hex digits" in result.stderr


@contextlib.asynccontextmanager
async def broker(certs: Path, tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    state = tmp_path / "state"
    state.mkdir()
    conf = (REPO / "deploy" / "mosquitto" / "edge.conf").read_text()
    conf = conf.replace("@DIR@", str(certs)).replace("@PORT@", str(port)).replace("@STATE@", str(state))
    conf = conf.replace("@ACL@", str(REPO / "deploy" / "mosquitto" / "acl"))
    (tmp_path / "mosquitto.conf").write_text(conf + "user root\n")  # the tests run as root
    with (tmp_path / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)  # noqa: ASYNC220
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        yield port
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


def client(certs: Path, name: str, port: int) -> aiomqtt.Client:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(certs / f"{name}.crt", certs / f"{name}.key")
    return aiomqtt.Client("127.0.0.1", port, tls_context=context, identifier=f"test-{name}")


async def next_message(c: aiomqtt.Client, seconds: float = 3) -> aiomqtt.Message | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in c.messages:
                return message
    return None


async def test_a_device_cannot_write_another_devices_topics(certs: Path, tmp_path: Path) -> None:
    """Mosquitto 2.0 drops the forged publish and disconnects the client that sent it."""
    async with broker(certs, tmp_path) as port, client(certs, "cloud", port) as cloud:
        await cloud.subscribe(f"{PREFIX}/devices/+/events", qos=1)
        with contextlib.suppress(aiomqtt.MqttError):
            async with client(certs, DEVICE_ID, port) as device:
                await device.publish(f"{PREFIX}/devices/{OTHER}/events", b"forged", qos=1)
        async with client(certs, DEVICE_ID, port) as device:  # the control: its own topic is allowed
            await device.publish(f"{PREFIX}/devices/{DEVICE_ID}/events", b"own", qos=1)
        message = await next_message(cloud)
        assert message is not None
        assert (str(message.topic), message.payload) == (f"{PREFIX}/devices/{DEVICE_ID}/events", b"own")
        assert await next_message(cloud, 0.5) is None


async def test_a_device_cannot_read_another_devices_topics(certs: Path, tmp_path: Path) -> None:
    async with (
        broker(certs, tmp_path) as port,
        client(certs, "cloud", port) as cloud,
        client(certs, DEVICE_ID, port) as device,
    ):
        await cloud.publish(f"{PREFIX}/devices/{OTHER}/entitlements", b"theirs", qos=1, retain=True)
        await cloud.publish(f"{PREFIX}/devices/{DEVICE_ID}/entitlements", b"ours", qos=1, retain=True)
        await device.subscribe(f"{PREFIX}/devices/{OTHER}/entitlements", qos=1)
        await device.subscribe(f"{PREFIX}/devices/+/entitlements", qos=1)  # a wildcard does not widen it
        message = await next_message(device)
        assert message is not None
        assert (str(message.topic), message.payload) == (f"{PREFIX}/devices/{DEVICE_ID}/entitlements", b"ours")
        assert await next_message(device, 0.5) is None


async def test_the_agent_runs_under_the_acl_with_its_certificate(certs: Path, tmp_path: Path) -> None:
    async with broker(certs, tmp_path) as port, client(certs, "cloud", port) as cloud:
        await cloud.subscribe(f"{PREFIX}/devices/{DEVICE_ID}/state", qos=1)
        root = tmp_path / "root.pub.pem"
        shutil.copy(REPO.parent / "shared" / "vectors" / "root.pub.pem", root)
        mqtt = {
            "url": f"mqtts://127.0.0.1:{port}",
            "ca_file": str(certs / "ca.crt"),
            "cert_file": str(certs / f"{DEVICE_ID}.crt"),
            "key_file": str(certs / f"{DEVICE_ID}.key"),
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
        }
        daemon = ProcessDaemon(write_config(tmp_path / "device", [root], mqtt=mqtt))
        await daemon.start()
        try:
            message = await next_message(cloud, 15)
            assert message is not None
            assert isinstance(message.payload, bytes)
            assert b'"online":true' in message.payload.replace(b" ", b"")
        finally:
            await daemon.stop()


async def test_the_daemon_speaks_systemds_notify_protocol(tmp_path: Path) -> None:
    """Type=notify: READY=1 once serving, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on SIGTERM."""
    from tests.support.daemons import device_config

    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)
    root = tmp_path / "root.pub.pem"
    shutil.copy(REPO.parent / "shared" / "vectors" / "root.pub.pem", root)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"mqtt://127.0.0.1:{closed.getsockname()[1]}"
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
    daemon = ProcessDaemon(device_config(tmp_path / "device", nobody, root), env=env)
    received: list[str] = []
    loop = asyncio.get_running_loop()

    async def until(word: str) -> None:
        async with asyncio.timeout(10):
            while not any(word in m for m in received):
                received.append((await loop.sock_recv(listener, 4096)).decode())

    try:
        await daemon.start()
        await until("READY=1")
        pings = sum("WATCHDOG=1" in m for m in received)
        await until("WATCHDOG=1")
        while sum("WATCHDOG=1" in m for m in received) < pings + 3:  # pinged again and again
            received.append((await asyncio.wait_for(loop.sock_recv(listener, 4096), 5)).decode())
        code, _ = await daemon.stop()
        assert code == 0
        await until("STOPPING=1")
    finally:
        listener.close()


def test_the_systemd_unit() -> None:
    unit = (REPO / "deploy" / "systemd" / "edge-agent.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] == "30"
    assert settings["RestartForceExitStatus"] == "75"
    assert settings["ExecStart"].split()[1:3] == ["run", "--config"]


@pytest.mark.parametrize(
    "drop_ins",
    [
        (),
        ("hardware.conf",),
        ("slots.conf",),
        ("control-group.conf",),
        ("hardware.conf", "slots.conf", "control-group.conf"),
    ],
)
def test_the_unit_is_hardened_with_and_without_its_drop_ins(tmp_path: Path, drop_ins: tuple[str, ...]) -> None:
    """systemd's own judge, ``systemd-analyze security``: 2.0 or lower ("OK") for the unit alone and with
    the drop-ins a board adds (serial lines, A/B slots, a control socket open to a group: each gives back
    only what it names). That the agent still works under all of it is tests/test_package.py's (a real
    systemd boot)."""
    shutil.copy(REPO / "deploy" / "systemd" / "edge-agent.service", tmp_path)
    (tmp_path / "edge-agent.service.d").mkdir()
    for name in drop_ins:
        shutil.copy(REPO / "deploy" / "systemd" / "edge-agent.service.d" / name, tmp_path / "edge-agent.service.d")
    judged = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(tmp_path / "edge-agent.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    score = re.search(r"Overall exposure level for edge-agent.service: ([0-9.]+) (\w+)", judged.stdout)
    assert score is not None, judged.stdout + judged.stderr
    assert float(score.group(1)) <= 2.0, judged.stdout


async def test_log_lines_carry_their_syslog_priority_under_journald(tmp_path: Path) -> None:
    """With stderr the journal's stream (JOURNAL_STREAM is its device:inode, as systemd sets it), each
    line starts with its priority, which journald strips and records (`journalctl -p err`); the JSON
    after it is unchanged. Any other stderr gets plain JSON lines (every other test reads them)."""
    import re

    from protocol.logs import PRIORITIES, under_journald
    from tests.support.daemons import device_config

    root = tmp_path / "root.pub.pem"
    shutil.copy(REPO.parent / "shared" / "vectors" / "root.pub.pem", root)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"mqtt://127.0.0.1:{closed.getsockname()[1]}"
    config_file = device_config(tmp_path / "device", nobody, root)
    log = config_file.parent / "daemon.log"
    log.touch()
    journal = f"{log.stat().st_dev}:{log.stat().st_ino}"
    daemon = ProcessDaemon(config_file, env={"JOURNAL_STREAM": journal})
    await daemon.start()
    try:
        async with asyncio.timeout(20):  # started (info), then the broker is not there (a warning)
            while True:
                if re.search(r"^<4>", log.read_text(), re.MULTILINE):
                    break
                await asyncio.sleep(0.05)
    finally:
        await daemon.stop()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    for line in lines:
        match = re.fullmatch(r"<([0-7])>(\{.*\})", line)
        assert match is not None, line
        assert int(match[1]) == PRIORITIES[json.loads(match[2])["level"]], line
    assert {line[:3] for line in lines} >= {"<6>", "<4>"}
    with log.open("a") as other:
        assert under_journald({"JOURNAL_STREAM": journal}, other)
        assert not under_journald({"JOURNAL_STREAM": "1:2"}, other)
        assert not under_journald({"JOURNAL_STREAM": "nonsense"}, other)
        assert not under_journald({}, other)


async def _scrape(port: int, tls: ssl.SSLContext | None = None) -> str:
    """GET /metrics once the exporter listens (it starts beside the MQTT session, not before it)."""
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    assert re.match(r"HTTP/1\.[01] 200 ", head), head
    return body


@pytest.mark.parametrize("tls", [False, True], ids=["loopback", "mutual TLS"])
async def test_prometheus_metrics_follow_the_conventions(
    process_broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, tls: bool
) -> None:
    """Scraped and parsed by prometheus_client's own parser: counters end in _total, the expiries are
    timestamps in seconds (the document's and each service's), the build and the process are there. Over
    mutual TLS, a scraper without a client certificate is refused."""
    from prometheus_client.parser import text_string_to_metric_families

    from agent.control import server as control
    from tests.support.cloud import CloudPeer
    from tests.support.daemons import device_config
    from tests.support.pki import make_pki
    from tests.support.sync import PAID, mode_is, provision

    port = free_port()
    metrics: dict[str, object] = {"port": port}
    client: ssl.SSLContext | None = None
    anonymous: ssl.SSLContext | None = None
    if tls:
        pki = make_pki(tmp_path / "pki", DEVICE_ID)
        metrics |= {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key), "tls_client_ca": str(pki.ca)}
        client = ssl.create_default_context(cafile=str(pki.ca))
        client.load_cert_chain(str(pki.cloud.cert), str(pki.cloud.key))
        anonymous = ssl.create_default_context(cafile=str(pki.ca))
    daemon = ProcessDaemon(device_config(tmp_path / "device", process_broker, root_pem, metrics=metrics))
    async with CloudPeer(process_broker) as cloud:
        await provision(cloud, docs)
        await daemon.start()
        try:
            await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
            await control.request(daemon.data_dir, {"op": "check", "action": "issue_access", "subject": "door:door-1"})
            body = await _scrape(port, client)
            if anonymous is not None:
                with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError, asyncio.IncompleteReadError)):
                    await _scrape(port, anonymous)
        finally:
            await daemon.stop()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    types = {name: f.type for name, f in families.items()}
    for name in ("edge_mqtt_connections", "edge_mqtt_failures", "edge_outbox_evicted", "edge_decisions"):
        assert types[name] == "counter", name
        assert all(s.name == f"{name}_total" for s in families[name].samples if not s.name.endswith("_created"))
    for name in ("edge_outbox_depth", "edge_outbox_held", "edge_mqtt_connected", "edge_document_seq"):
        assert types[name] == "gauge", name

    def value(name: str, **labels: str) -> float:
        family = families[name] if name in families else families[name.removesuffix("_total")]
        [found] = [s.value for s in family.samples if s.name == name and s.labels == labels]
        return found

    assert value("edge_mqtt_connections_total") >= 1
    assert value("edge_mqtt_connected") == 1
    assert value("edge_document_seq", typ="entitlements") == 1
    assert value("edge_decisions_total", action="issue_access", reason="active") == 1
    [build] = families["edge_build_info"].samples
    assert (build.value, build.labels["model"]) == (1, "R29")
    assert build.labels["version"]
    assert "process_resident_memory_bytes" in families
    exp = json.loads(jws.parse(docs.entitlements(PAID)).payload)["exp"]  # as provisioned (the same iat)
    assert abs(value("edge_document_expiry_timestamp_seconds", typ="entitlements") - exp) < 1
    expiries = {
        (s.labels["service"], s.labels["subject"]): s.value
        for s in families["edge_service_expiry_timestamp_seconds"].samples
    }
    assert set(expiries) == {(svc["service"], svc["subject"]) for svc in PAID}
    for svc in PAID:
        expected = datetime.fromisoformat(svc["expires"]).timestamp()
        assert abs(expiries[(svc["service"], svc["subject"])] - expected) < 1


async def doctor(config_file: Path) -> tuple[int, list[dict[str, str]]]:
    from tests.support.daemons import EDGE_AGENT

    process = await asyncio.create_subprocess_exec(
        EDGE_AGENT, "doctor", "--config", str(config_file), "--json", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, json.loads(out)


async def test_doctor_passes_a_healthy_device_and_names_what_is_wrong(
    process_broker: Broker, tmp_path: Path, root_pem: Path
) -> None:
    from tests.support.daemons import device_config

    healthy = device_config(tmp_path / "ok", process_broker, root_pem)
    daemon = ProcessDaemon(healthy)
    await daemon.start()
    try:
        code, findings = await doctor(healthy)
    finally:
        await daemon.stop()
    assert code == 0, findings
    by_check = {f["check"]: f for f in findings}
    assert {f["check"] for f in findings} >= {"config", "trust roots", "clock", "disk", "database", "broker", "daemon"}
    assert by_check["broker"]["status"] == "ok"
    assert by_check["daemon"]["status"] == "ok"

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"mqtt://127.0.0.1:{closed.getsockname()[1]}"
    broken = device_config(tmp_path / "bad", nobody, root_pem)
    code, findings = await doctor(broken)
    by_check = {f["check"]: f for f in findings}
    assert code == 1
    assert by_check["broker"]["status"] == "fail"
    assert by_check["daemon"]["status"] == "warn"


async def test_serve_connects_with_mutual_tls_and_names_images_from_its_base_url(certs: Path, tmp_path: Path) -> None:
    """``smartplus-cloud serve`` against the deploy kit's Mosquitto (client certificates required): it
    connects with the cloud's certificate, and the firmware job a device receives names its image under
    ``--image-base``."""
    from tests.support.ledger import CLOUD, cloud, setup_ledger

    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    image = tmp_path / "build.bin"
    image.write_bytes(bytes(4096))
    assert cloud(ledger, "add-firmware", "R29", "29.30.9.1", str(image))[0] == 0
    assert cloud(ledger, "upgrade", "up-1", "--project", "office", "--model", "R29", "--version", "29.30.9.1",
                 actor="i1")[0] == 0  # fmt: skip
    async with broker(certs, tmp_path) as port:
        args = [
            *(CLOUD, "--ledger", str(ledger), "serve", "--broker", f"mqtts://127.0.0.1:{port}", "--images-port", "0"),
            *("--interval", "0.2", "--ca-file", str(certs / "ca.crt"), "--image-base", "https://cdn.example/fw/"),
        ]
        with (tmp_path / "serve.log").open("wb") as log:
            server = subprocess.Popen(  # noqa: ASYNC220 -- stopped below
                [*args, "--cert-file", str(certs / "cloud.crt"), "--key-file", str(certs / "cloud.key")],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            async with client(certs, DEVICE_ID, port) as device:
                await device.subscribe(f"{PREFIX}/devices/{DEVICE_ID}/firmware", qos=1)
                message = await next_message(device, 30)
            assert message is not None, (tmp_path / "serve.log").read_text()
            claims = json.loads(jws.parse(bytes(message.payload)).payload)
            assert claims["url"] == "https://cdn.example/fw/R29-29.30.9.1.bin"
        finally:
            server.send_signal(signal.SIGINT)
            await asyncio.to_thread(server.wait, 15)


def test_versions_completions_and_man_pages_come_from_the_cli_definitions(tmp_path: Path) -> None:
    """Both CLIs say their version; the completion scripts and man pages shipped in deploy/ are what
    deploy/generate.py makes from the click commands now (a new option cannot ship without its page);
    the completion the scripts ask for answers."""
    import importlib.util
    from importlib import metadata

    from tests.support.daemons import EDGE_AGENT

    version = metadata.version("smartplus-edge")
    for program in ("edge-agent", "smartplus-cloud"):
        out = subprocess.run([str(Path(EDGE_AGENT).parent / program), "--version"], capture_output=True, text=True)
        assert (out.returncode, out.stdout) == (0, f"{program} {version}\n")
    spec = importlib.util.spec_from_file_location("generate", REPO / "deploy" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    made = {p.relative_to(tmp_path): p.read_text() for p in generate.generate(tmp_path)}
    shipped = {
        p.relative_to(REPO / "deploy"): p.read_text()
        for directory in ("completions", "man")
        for p in (REPO / "deploy" / directory).iterdir()
    }
    assert set(made) == set(shipped), "run: make deploy-files"
    stale = [str(name) for name, text in made.items() if shipped[name] != text]
    assert stale == [], f"run: make deploy-files ({stale})"
    assert {"man/edge-agent.1", "man/edge-agent-check.1", "man/smartplus-cloud-pay.1"} <= {str(n) for n in made}
    assert made[Path("man/edge-agent-check.1")].startswith(".TH")
    assert "_EDGE_AGENT_COMPLETE" in made[Path("completions/edge-agent.bash")]
    env = {**os.environ, "_EDGE_AGENT_COMPLETE": "bash_complete", "COMP_WORDS": "edge-agent ch", "COMP_CWORD": "1"}
    completed = subprocess.run([EDGE_AGENT], capture_output=True, text=True, env=env)
    assert "plain,check" in completed.stdout.splitlines()


def test_the_system_user_and_directories_with_systemds_own_tools(tmp_path: Path) -> None:
    """sysusers.d makes the edge-agent user (no login, in dialout for its serial lines); tmpfiles.d its
    data directory (0700, its own) and the configuration's (0750, root:edge-agent). Applied by
    systemd-sysusers and systemd-tmpfiles to a scratch root."""
    (tmp_path / "etc").mkdir()
    unit = REPO / "deploy" / "systemd"
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(unit / "sysusers.d" / "edge-agent.conf")],
        check=True, capture_output=True,
    )  # fmt: skip
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "group").read_text().splitlines()}
    user = users["edge-agent"]
    assert (user[5], user[6]) == ("/var/lib/edge-agent", "/usr/sbin/nologin")
    assert "edge-agent" in groups["dialout"][3].split(",")
    subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(unit / "tmpfiles.d" / "edge-agent.conf")],
        check=True, capture_output=True,
    )  # fmt: skip
    data, config = (tmp_path / "var" / "lib" / "edge-agent").stat(), (tmp_path / "etc" / "edge-agent").stat()
    uid, gid = int(user[2]), int(groups["edge-agent"][2])
    assert (data.st_mode & 0o777, data.st_uid, data.st_gid) == (0o700, uid, gid)
    assert (config.st_mode & 0o777, config.st_uid, config.st_gid) == (0o750, 0, gid)
    service = (unit / "edge-agent.service").read_text()
    assert "User=edge-agent" in service
    assert "StateDirectory=edge-agent" in service
