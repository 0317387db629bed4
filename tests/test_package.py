"""The agent as it ships: the Debian package (``make deb``), installed with apt in a minimal bookworm,
booted by systemd in systemd-nspawn, and used as an operator would, through nsenter: enabled but not
started; skipped until provisioned; under its full hardening, with and without the board's drop-ins
(serial lines, A/B slots; the container has neither, nor GRUB); retrying with backoff while no broker is
there, then connected to a Mosquitto inside; a signed document taken and a door decided for the door
phone's UI through the control socket's group; warnings at journald's warning priority; restarted by the
watchdog when it hangs; stopped cleanly; and nothing of it left after ``apt purge``.

The root is built once by mmdebstrap (tests/support/debian.py) and each test boots a copy of it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import device_config
from tests.support.debian import Container, arm64_root, bootable_root, emulate_aarch64, package
from tests.support.documents import DEVICE_ID, Keys, svc, write_public_key
from tests.support.sync import Docs, mode_is

T = TypeVar("T")
UNIT = "edge-agent.service"
SOCKET = "/run/edge-agent/control.sock"
# Paths an install, a boot and a purge change for reasons of their own (apt's and dpkg's records, logs,
# the journal, systemd's state, the broker's), and what the test itself put there.
VOLATILE = (
    "/var/lib/apt", "/var/lib/dpkg", "/var/cache", "/var/log", "/var/lib/systemd", "/var/lib/mosquitto",
    "/var/tmp", "/run", "/tmp", "/root", "/etc/ld.so.cache", "/etc/systemd/system/edge-agent.service.d",
)  # fmt: skip


@pytest.fixture(scope="session")
def bootable() -> Path:
    return bootable_root()


@pytest.fixture(scope="session")
def amd64_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package("amd64", tmp_path_factory.mktemp("dist"))


@pytest.fixture
def board(bootable: Path, amd64_package: Path, tmp_path: Path) -> Iterator[Container]:
    container = Container(bootable, tmp_path)
    shutil.copy(amd64_package, container.root / "root" / "edge-agent.deb")
    container.boot()
    try:
        yield container
    finally:
        container.stop()


def until(condition: Callable[[], T | None], what: str, seconds: float = 60) -> T:
    """Poll ``condition`` until it gives something, with a deadline."""
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def journal(board: Container) -> list[dict[str, Any]]:
    """The agent's log lines from the journal: each its JSON event with journald's PRIORITY beside it."""
    lines = []
    listed = board.run("journalctl", "-u", UNIT, "-o", "json", "--no-pager", check=False).stdout
    for entry in map(json.loads, listed.splitlines()):
        message = entry.get("MESSAGE")
        if isinstance(message, str) and message.startswith("{"):
            lines.append({**json.loads(message), "priority": int(entry["PRIORITY"])})
    return lines


def show(board: Container, *properties: str) -> dict[str, str]:
    shown = board.run("systemctl", "show", UNIT, *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def files(board: Container) -> set[str]:
    listed = board.run("find", "/", "-xdev", "-path", "/proc", "-prune", "-o", "-print").stdout.splitlines()
    return {path for path in listed if not path.startswith(VOLATILE)}


def provision(board: Container, keys: Keys, control: str = "") -> None:
    """What provisioning does on a board: the root key beside the configuration, the device's identity."""
    write_public_key(board.root / "etc" / "edge-agent" / "root.pub.pem", keys.root)
    board.run("sh", "-c", "cat > /etc/edge-agent/agent.toml", input=f"""
device_id = "{DEVICE_ID}"
model = "R29"
firmware_version = "29.30.2.805"
data_dir = "/var/lib/edge-agent"
trust_roots = ["root.pub.pem"]

[mqtt]
url = "mqtt://127.0.0.1:1883"
topic_prefix = "smartplus/v1"
reconnect_min = 0.5
reconnect_max = 4.0

[drivers]
kind = "simulated"
{control}""")  # fmt: skip


def publish(board: Container, topic_payloads: list[tuple[str, str]]) -> None:
    """Retained documents on the container's broker, from this machine's python in its network."""
    script = (
        "import sys, json, paho.mqtt.publish as p; "
        "p.multiple([{'topic': t, 'payload': m, 'qos': 1, 'retain': True} for t, m in json.loads(sys.argv[1])],"
        " hostname='127.0.0.1', port=1883)"
    )
    import sys

    done = board.in_network(sys.executable, "-c", script, json.dumps(topic_payloads))
    assert done.returncode == 0, done.stderr


def test_the_package_installs_boots_runs_and_purges(board: Container) -> None:
    before = files(board)
    board.run("apt-get", "install", "-y", "-q", "/root/edge-agent.deb")
    assert board.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    assert board.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "inactive"  # not started
    board.run("systemctl", "start", UNIT)  # unprovisioned: skipped, not refused in a loop
    assert show(board, "ConditionResult", "ActiveState") == {"ConditionResult": "no", "ActiveState": "inactive"}
    assert board.run("runuser", "-u", "edge-agent", "--", "edge-agent", "--version").stdout.startswith("edge-agent ")

    # Provisioned, under the unit's own hardening and nothing else: no broker yet, so it retries.
    keys = Keys(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())
    provision(board, keys)
    board.run("systemctl", "start", UNIT)
    assert show(board, "ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"}
    score = board.run("systemd-analyze", "security", UNIT, "--no-pager").stdout.splitlines()[-1]
    assert float(score.split(":")[1].split()[0]) <= 2.0, score
    waits = until(lambda: [e["seconds"] for e in journal(board) if e["event"] == "mqtt_reconnect_wait"][:4]
                  if len([e for e in journal(board) if e["event"] == "mqtt_reconnect_wait"]) >= 4 else None,
                  "four reconnection attempts")  # fmt: skip
    assert waits[-1] > waits[0], waits  # backing off
    warned = [e for e in journal(board) if e["event"] == "mqtt_disconnected"]
    assert warned
    assert {e["priority"] for e in warned} == {4}  # journald's "warning"
    assert {e["priority"] for e in journal(board) if e["event"] == "mqtt_reconnect_wait"} == {6}  # "info"

    # A broker inside: it connects, takes the fleet's documents, and decides.
    board.run("systemctl", "start", "mosquitto.service")
    until(lambda: any(e["event"] == "mqtt_connected" for e in journal(board)), "the agent connected")
    docs = Docs(keys)
    entitlements = docs.entitlements([svc("door", "door:door-2")])
    publish(board, [("smartplus/v1/trust", docs.trust()), (f"smartplus/v1/devices/{DEVICE_ID}/entitlements",
                                                          entitlements)])  # fmt: skip

    def decided() -> str | None:
        done = board.run("edge-agent", "check", "issue_access", "door:door-2", "--config", "/etc/edge-agent/agent.toml",
                         "--json", user="edge-agent", check=False)  # fmt: skip
        return done.stdout if done.returncode == 0 else None

    assert json.loads(until(decided, "door-2 allowed"))["allowed"] is True

    # The board's drop-ins (serial lines, A/B slots: the container has neither, nor GRUB) and the door
    # phone's UI as a member of the control socket's group; a short watchdog for the hang below.
    dropins = board.root / "etc" / "systemd" / "system" / "edge-agent.service.d"
    dropins.mkdir(parents=True)
    for name in ("hardware.conf", "slots.conf", "control-group.conf"):
        shutil.copy(board.root / "usr" / "share" / "doc" / "edge-agent" / "examples" / "systemd" / name, dropins)
    (dropins / "zz-test.conf").write_text("[Service]\nWatchdogSec=4\n")  # the hang below, found sooner
    board.run("groupadd", "--system", "intercom")
    board.run("useradd", "--system", "--groups", "intercom", "doorui")
    provision(board, keys, control=f'\n[control]\nsocket = "{SOCKET}"\ngroup = "intercom"\n')
    board.run("systemctl", "daemon-reload")
    board.run("systemctl", "restart", UNIT)
    assert show(board, "ActiveState")["ActiveState"] == "active"
    score = board.run("systemd-analyze", "security", UNIT, "--no-pager").stdout.splitlines()[-1]
    assert float(score.split(":")[1].split()[0]) <= 2.0, score
    ask = (
        "import json, socket; s = socket.socket(socket.AF_UNIX); s.connect('" + SOCKET + "'); "
        "s.sendall(json.dumps({'v': 1, 'id': 1, 'op': 'check', 'action': 'issue_access', "
        "'subject': 'door:door-2'}).encode() + b'\\n'); print(s.makefile().readline())"
    )

    def answered() -> dict[str, Any] | None:
        done = board.run("python3", "-c", ask, user="doorui", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    answer = until(answered, "the UI's answer")
    assert answer["decision"]["allowed"] is True, answer
    forbidden = board.run("python3", "-c", ask.replace("'check'", "'simulate'"), user="doorui").stdout
    assert json.loads(forbidden)["error"]["code"] == "forbidden"  # the UI decides nothing but asks

    # A hang: SIGSTOP, and the watchdog restarts it.
    first = show(board, "MainPID")["MainPID"]
    board.run("systemctl", "kill", "--signal=SIGSTOP", UNIT)

    def restarted() -> dict[str, str] | None:
        now = show(board, "MainPID", "ActiveState")
        return now if now["MainPID"] not in ("0", first) and now["ActiveState"] == "active" else None

    until(restarted, "a restart by the watchdog")
    assert show(board, "NRestarts")["NRestarts"] == "1"
    assert "watchdog" in board.run("journalctl", "-u", UNIT, "--no-pager").stdout.lower()

    # A clean stop, then nothing left after purge.
    board.run("systemctl", "stop", UNIT)
    assert show(board, "ActiveState", "Result", "ExecMainStatus") == {
        "ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"
    }  # fmt: skip
    board.run("apt-get", "purge", "-y", "-q", "edge-agent")
    left = files(board) - before
    assert not left, sorted(left)
    assert board.run("systemctl", "is-enabled", UNIT, check=False).stdout.strip() in ("", "not-found")


@pytest.fixture(scope="session")
def arm64_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package("arm64", tmp_path_factory.mktemp("dist"))


async def test_the_arm64_build_runs_under_emulation(arm64_package: Path, mosquitto: Broker, tmp_path: Path) -> None:
    """The arm64 package unpacked into bookworm's arm64 python3.11 and run through qemu-user: its version;
    a document accepted and a door decided offline; then the daemon against a broker on this machine: it
    reports its state, takes a renewal and decides anew, and stops on SIGTERM with exit 0. (A whole
    emulated boot takes ~15 minutes here: the amd64 package gets that test.)"""
    emulate_aarch64()
    root = tmp_path / "root"
    # cp -a: the root's /dev holds device nodes (shutil.copytree would read /dev/zero to the end of the disk)
    await asyncio.to_thread(subprocess.run, ["cp", "-a", "--reflink=auto", str(arm64_root()), str(root)], check=True)
    await asyncio.to_thread(subprocess.run, ["dpkg-deb", "-x", str(arm64_package), str(root)], check=True)
    for extension in (root / "usr/lib/edge-agent").rglob("*.so"):  # every C extension is arm64 code
        assert int.from_bytes(extension.read_bytes()[18:20], "little") == 0xB7, extension  # ELF e_machine: AArch64
    keys = Keys(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())
    docs = Docs(keys)
    etc = root / "etc" / "edge-agent"
    config = device_config(etc, mosquitto, write_public_key(etc / "root.pub.pem", keys.root))
    (root / "var" / "lib" / "edge-agent").mkdir(parents=True)
    text = config.read_text().replace(f'data_dir = "{etc / "data"}"', 'data_dir = "/var/lib/edge-agent"')
    config.write_text(text.replace(str(etc / "root.pub.pem"), "root.pub.pem"))
    (root / "proc").mkdir(exist_ok=True)
    await asyncio.to_thread(subprocess.run, ["mount", "--bind", "/proc", str(root / "proc")], check=True)
    agent = ["chroot", str(root), "/usr/bin/python3.11", "-I", "/usr/bin/edge-agent"]
    settings = ["--config", "/etc/edge-agent/agent.toml"]

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*agent, *args], capture_output=True, text=True, input=stdin, timeout=300, check=False)

    try:
        machine = ["chroot", str(root), "/usr/bin/python3.11", "-c", "import platform; print(platform.machine())"]
        found = await asyncio.to_thread(subprocess.run, machine, capture_output=True, text=True, check=True)
        assert found.stdout.strip() == "aarch64"
        version = await asyncio.to_thread(run, "--version")
        assert version.stdout.startswith("edge-agent "), version
        for document in (docs.trust(), docs.entitlements([svc("door", "door:door-2")])):
            accepted = await asyncio.to_thread(run, "accept", *settings, "-", stdin=document)
            assert accepted.returncode == 0, accepted
        decided = await asyncio.to_thread(run, "check", "issue_access", "door:door-2", *settings, "--json")
        assert (decided.returncode, json.loads(decided.stdout)["allowed"]) == (0, True), decided

        log = (tmp_path / "agent.log").open("wb")
        daemon = subprocess.Popen([*agent, "run", *settings], stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        try:
            async with CloudPeer(mosquitto) as cloud:
                await cloud.wait_until(lambda: mode_is(cloud, "normal"), 240, "the emulated agent's state")
                renewed = docs.entitlements([svc("door", "door:door-2"), svc("door", "door:door-3")], doors=(
                    "door-1", "door-2", "door-3"))  # fmt: skip
                await cloud.publish("entitlements", renewed, retain=True)
                await cloud.wait_until(
                    lambda: (cloud.state or {}).get("entitlements", {}).get("seq") == 2, 120, "the renewal taken"
                )
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(daemon.wait, 120) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                await asyncio.to_thread(daemon.wait, 10)
            log.close()
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "--lazy", str(root / "proc")], check=False)


def test_lintian_finds_nothing_unexplained(amd64_package: Path) -> None:
    """Debian's own checker: no error or warning but the overrides the package carries, each explained in
    deploy/debian/lintian-overrides and docs/operations.md."""
    checked = subprocess.run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(amd64_package)],
                             capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not [line for line in checked.stdout.splitlines() if line[:2] in ("E:", "W:")], checked.stdout
