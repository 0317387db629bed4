"""``smartplus-cloud serve`` from one configuration (a TOML file, SMARTPLUS_SERVE_* variables, its options):
whatever cannot start is one line and exit 2 (a bad key or port, a port in use, a missing file, a key file
the ledger names gone, an unreachable or outdated ledger); SIGTERM stops it gracefully, exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.brokers import free_port
from tests.support.ledger import CLOUD, LedgerAt, cloud, setup_ledger, start_serve
from tests.support.postgres import Cluster


def serve(ledger: LedgerAt, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """serve that must not start: its exit code and output."""
    return subprocess.run(
        [CLOUD, *ledger.args(), "serve", *args], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def ledger(tmp_path: Path) -> LedgerAt:
    where = LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db")
    setup_ledger(where)
    return where


@pytest.mark.parametrize(
    ("args", "env", "toml", "says"),
    [
        (("--port", "0"), {}, None, "broker.embedded_port"),
        (("--port", "70000"), {}, None, "broker.embedded_port"),
        (("--api-port", "65536"), {}, None, "api.port"),
        (("--images-port", "-1"), {}, None, "images.port"),
        (("--ca-file", "/nonexistent/ca.pem", "--broker", "mqtts://127.0.0.1:8883"), {}, None, "no such file"),
        (("--cert-file", "/etc/hostname"), {}, None, "cert_file and key_file go together"),
        (("--image-base", "ftp://x/"), {}, None, "images.base"),
        ((), {"SMARTPLUS_SERVE_API__PORT": "eighty"}, None, "api.port"),
        ((), {"SMARTPLUS_SERVE_API__THREADS": "0"}, None, "api.threads"),
        ((), {}, "interval = 5\nbogus = 1\n", "bogus"),
        ((), {}, "[broker]\nurls = ['tcp://x']\n", "is not mqtt://HOST[:PORT]"),
        ((), {}, "not toml ===", "not TOML"),
    ],
)  # fmt: skip
def test_a_configuration_that_cannot_work_is_one_line_and_exit_2(
    ledger: LedgerAt, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], toml: str | None, says: str
) -> None:
    """Each bad value is named by its key (the option's, the file's or the variable's)."""
    extra = list(args)
    if toml is not None:
        (tmp_path / "serve.toml").write_text(toml)
        extra = ["--config", str(tmp_path / "serve.toml"), *extra]
    result = serve(ledger, *extra, env=env)
    assert result.returncode == 2, result
    assert says in one_line(result)


def test_what_cannot_start_is_one_line_and_exit_2(ledger: LedgerAt, tmp_path: Path) -> None:
    """A port in use; a key file the ledger names, gone; a PostgreSQL that is not there; a ledger at an
    older schema: each one line naming it, exit 2, nothing started."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = serve(ledger, "--port", str(free_port()), "--images-port", str(port))
        assert result.returncode == 2, result
        assert "in use" in one_line(result)
    assert cloud(ledger, "rotate-key", "--purpose", "billing")[0] == 0  # a signer the ledger names
    signer = next((ledger.home / "keys").glob("billing-*.key.pem"))
    signer.unlink()
    result = serve(ledger, "--port", str(free_port()), "--images-port", "0")
    assert result.returncode == 2, result
    assert signer.name in one_line(result)
    nowhere = LedgerAt(f"postgresql://nobody@127.0.0.1:{free_port()}/ledger", tmp_path)
    result = serve(nowhere, "--port", str(free_port()), "--images-port", "0")
    assert result.returncode == 2, result
    assert "cannot be used" in one_line(result)


async def test_sigterm_stops_serve_gracefully(ledger: LedgerAt, tmp_path: Path) -> None:
    """SIGTERM: the fleet side, the API, the image server and the broker stop; exit 0, said in the log."""
    api_port = free_port()
    server = start_serve(ledger, tmp_path / "serve.log", api_port)
    try:
        async with asyncio.timeout(30):
            while True:  # until the API answers: serve is up
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", api_port)
                    writer.close()
                    await writer.wait_closed()
                    break
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                await asyncio.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        assert await _exit_code(server, 30) == 0, (tmp_path / "serve.log").read_text()
    finally:
        await _reap(server)
    text = (tmp_path / "serve.log").read_text()
    assert "serve_stopped" in text
    assert "Traceback" not in text


async def _exit_code(process: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The process's exit code once it exits; None if it is still running after ``seconds``."""
    try:
        return await asyncio.to_thread(process.wait, seconds)
    except subprocess.TimeoutExpired:
        return None


async def _reap(process: subprocess.Popen[bytes]) -> None:
    """Kill the process if it still runs, and reap it (an unreaped one warns in whichever test comes next)."""
    if process.poll() is None:
        process.kill()
        await asyncio.to_thread(process.wait, 10)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def _connections(pid: int, port: int) -> int:
    """How many established TCP connections on ``port`` the process ``pid`` holds (/proc: its descriptors'
    socket inodes, matched in the table of IPv4 sockets)."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(descriptor)).startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_api_alone_in_worker_processes(postgres: Cluster, tmp_path: Path) -> None:
    """``smartplus-cloud api --workers 2`` on PostgreSQL: two worker processes under the first, answering on
    one port (any free one, said on its first line); requests on many connections at once all answered, the
    connections dealt evenly between the workers; SIGTERM stops the workers and the first, exit 0. A port in
    use is one line and exit 2."""
    ledger = LedgerAt(postgres.database(), tmp_path / "cloud")
    setup_ledger(ledger)
    token = cloud(ledger, "api-token", "create", "i1")[1]["result"]["token"]
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(  # noqa: ASYNC220 -- started once, stopped below
            [CLOUD, *ledger.args(), "api", "--port", "0", "--workers", "2", "--threads", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while not (said := re.search(r"http://127\.0\.0\.1:(\d+)/v1/", log_path.read_text())) or (
                len(_children(server.pid)) < 2
            ):
                assert server.poll() is None, log_path.read_text()
                await asyncio.sleep(0.05)
        port = int(said.group(1))
        assert len(_children(server.pid)) == 2
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     limits=httpx.Limits(max_connections=10, max_keepalive_connections=10),
                                     headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
            answers = await asyncio.gather(*(client.get("/v1/sites") for _ in range(40)))
            held = [_connections(worker, port) for worker in sorted(_children(server.pid))]
        assert {answer.status_code for answer in answers} == {200}
        assert held == [5, 5]  # ten kept alive, dealt in turn (accepted by whichever woke first: often 10 and 0)
        with socket.create_server(("127.0.0.1", 0)) as taken:
            refused = subprocess.run(  # noqa: ASYNC221 -- a command that stops at once
                [CLOUD, *ledger.args(), "api", "--port", str(taken.getsockname()[1])],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
        assert refused.returncode == 2, refused
        assert "cannot listen" in one_line(refused)
        workers = _children(server.pid)
        server.send_signal(signal.SIGTERM)
        assert await _exit_code(server, 30) == 0, log_path.read_text()
        assert not any(map(_alive, workers))
    finally:
        await _reap(server)
    assert "Traceback" not in log_path.read_text()
