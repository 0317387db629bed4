"""The control socket's protocol (version 1, docs/control.md) and who may use it: owner-only by default;
opened to a configured group, whose members may ask (hello, check, status) and nothing else."""

from __future__ import annotations

import asyncio
import grp
import json
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.control import server as control
from agent.errors import ConfigError
from tests.support.brokers import Broker
from tests.support.daemons import ProcessDaemon, device_config
from tests.support.sync import Docs, provisioned

NOBODY = 65534  # the test runs as root; the client of the group runs as nobody


@pytest.fixture
def broker(process_broker: Broker) -> Broker:
    return process_broker


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory of its own for the socket, reachable by other users (not under the tests' tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="edge-control-") as directory:
        yield Path(directory)


_CLIENT = """
import asyncio, json, sys
async def main():
    reader, writer = await asyncio.open_unix_connection(sys.argv[1])
    for line in sys.stdin.read().splitlines():
        writer.write(line.encode() + b"\\n")
        await writer.drain()
        print((await reader.readline()).decode().strip())
asyncio.run(main())
"""


def _as_nobody(socket: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send ``requests`` on one connection as user nobody in group nogroup; the answers."""
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")  # the venv's is under /root
    assert python is not None, "a system python3 runs the other user's client"
    result = subprocess.run(
        [python, "-I", "-c", _CLIENT, str(socket)],
        cwd="/",
        input="\n".join(json.dumps(r) for r in requests),
        capture_output=True, text=True, timeout=30, check=True,
        user=NOBODY, group=grp.getgrnam("nogroup").gr_gid, extra_groups=[],
    )  # fmt: skip
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_the_protocol_is_versioned_and_says_what_a_peer_may_do(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """hello gives the version and every op to the owner; each answer carries v; another version is refused."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    async with provisioned(broker, config_file, docs) as (daemon, _):
        hello = await control.request(daemon.data_dir, {"op": "hello", "id": 1})
        assert hello == {"v": 1, "id": 1, "ok": True, "protocol": 1,
                         "ops": ["check", "hello", "raise", "simulate", "status"]}  # fmt: skip
        later = await control.request(daemon.data_dir, {"op": "status", "v": 2})
        assert later["error"]["code"] == "unsupported_version"
        assert stat.S_IMODE((daemon.data_dir / "control.sock").stat().st_mode) == 0o600


async def test_the_group_may_ask_and_nothing_else(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs, socket_dir: Path
) -> None:
    """With [control] group, the socket is 0660 in that group; a member that is not the agent's user may
    ask for decisions and the status, and is refused raising events or driving the hardware."""
    socket = socket_dir / "control.sock"
    config_file = device_config(
        tmp_path / "device", broker, root_pem, control={"socket": str(socket), "group": "nogroup"}
    )
    async with provisioned(broker, config_file, docs) as (_, _cloud):
        mode = socket.stat()
        assert (stat.S_IMODE(mode.st_mode), mode.st_gid) == (0o660, grp.getgrnam("nogroup").gr_gid)
        answers = _as_nobody(socket, [
            {"op": "hello", "id": 1},
            {"op": "check", "id": 2, "action": "issue_access", "subject": "door:door-1"},
            {"op": "raise", "id": 3, "event": {"type": "alarm", "kind": "tamper"}},
            {"op": "simulate", "id": 4, "kind": "exit_button", "data": {"door": "door-1"}},
        ])  # fmt: skip
        assert answers[0]["ops"] == ["check", "hello", "status"]
        assert answers[1]["ok"] is True
        assert answers[1]["decision"]["allowed"] is True
        assert [a["error"]["code"] for a in answers[2:]] == ["forbidden", "forbidden"]
        owner = await control.request(socket, {"op": "raise", "event": {"type": "health", "kind": "ok"}})
        assert owner["ok"] is True


def test_a_group_needs_a_socket_outside_the_data_directory(tmp_path: Path, root_pem: Path) -> None:
    """data_dir is owner-only: a group could never reach a socket in it, so the config says so."""
    config_file = device_config(tmp_path / "device", "mqtt://127.0.0.1:1", root_pem, control={"group": "nogroup"})
    with pytest.raises(ConfigError) as error:
        load_config(config_file, {})
    assert "control.socket" in str(error.value)


async def test_an_unknown_group_stops_the_daemon_with_one_line(
    tmp_path: Path, root_pem: Path, socket_dir: Path
) -> None:
    """A group that does not exist is a configuration error naming control.group (exit 2)."""
    config_file = device_config(
        tmp_path / "device", "mqtt://127.0.0.1:1", root_pem,
        control={"socket": str(socket_dir / "c.sock"), "group": "no-such-group-here"},
    )  # fmt: skip
    daemon = ProcessDaemon(config_file)
    with pytest.raises(AssertionError, match="exited with 2"):
        await daemon.start()
    assert "control.group" in daemon.log.read_text()


async def test_a_socket_that_cannot_be_made_stops_the_daemon_with_one_line(tmp_path: Path, root_pem: Path) -> None:
    """A socket in a directory that is not there (a unit without RuntimeDirectory=): one line naming it,
    exit 2, at once (the store closed: its thread once kept the process alive until systemd's timeout)."""
    config_file = device_config(
        tmp_path / "device", "mqtt://127.0.0.1:1", root_pem, control={"socket": str(tmp_path / "gone" / "c.sock")}
    )
    daemon = ProcessDaemon(config_file)
    with pytest.raises(AssertionError, match="exited with 2"):
        await daemon.start()
    text = daemon.log.read_text()
    assert "cannot make the control socket" in text
    assert "Traceback" not in text


async def test_a_socket_under_a_long_path_is_made_and_reached(broker: Broker, tmp_path: Path, root_pem: Path) -> None:
    """A data directory deeper than a Unix socket's 107-byte path: the daemon makes its socket there and
    the CLI's client reaches it (through a descriptor of the directory); before, the daemon could not
    start its socket and the demo, run from a deep directory, waited for it in vain."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    config_file = device_config(deep / "device", broker, root_pem)
    config = load_config(config_file, {})
    assert len(str(config.control_socket)) > 107
    daemon = ProcessDaemon(config_file)
    await daemon.start()
    try:
        answer = await control.request(config.data_dir, {"op": "hello", "id": 1})
    finally:
        await daemon.stop()
    assert answer["ok"] is True


async def test_a_stop_with_a_control_connection_open_is_quiet(broker: Broker, tmp_path: Path, root_pem: Path) -> None:
    """A client still connected (a status poller, an installer's shell) when the daemon stops: it stops
    cleanly, without a traceback of the connection's cancelled task in its log."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    config = load_config(config_file, {})
    daemon = ProcessDaemon(config_file)
    await daemon.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(config.control_socket))
        writer.write(b'{"op": "hello", "id": 1}\n')
        await writer.drain()
        assert json.loads(await reader.readline())["ok"] is True  # served, and the connection kept open
    finally:
        await daemon.stop()
    writer.close()
    logged = daemon.log.read_text()
    assert "Traceback" not in logged, logged[-3000:]
    assert "CancelledError" not in logged
    assert daemon.log_events()[-1]["event"] == "daemon_stopped"
