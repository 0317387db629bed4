"""The HTTP API against its own OpenAPI description: schemathesis (``--checks all``) drives a running
``smartplus-cloud serve`` with data generated from the schema, valid and not, and finds nothing: no server
error, no answer outside the documented statuses and shapes, nothing the schema allows refused as malformed,
nothing it forbids accepted, the Allow header of a 405 naming every method the path takes.

The statuses the schema cannot rule out (a rule's refusal, an Idempotency-Key used before) are listed in
tests/data/schemathesis.toml, with why. A fixed seed keeps the run the same from one CI run to the next;
bounded to a few minutes (``--max-examples``)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.brokers import free_port
from tests.support.ledger import LedgerAt, cloud, setup_ledger, start_serve

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = Path(__file__).parent / "data" / "schemathesis.toml"


def _serving(port: int) -> bool:
    with contextlib.suppress(OSError):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/v1/openapi.json")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    return False


async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    """schemathesis run --checks all against serve's API: every check passes."""
    ledger = LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db")
    setup_ledger(ledger)
    token = cloud(ledger, "api-token", "create", "i1")[1]["result"]["token"]
    api_port = free_port()
    server = start_serve(ledger, tmp_path / "serve.log", api_port)
    try:
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(_serving, api_port):  # polled, with a deadline: serve is starting
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve's API never answered"
            await asyncio.sleep(0.1)
        run = await asyncio.create_subprocess_exec(
            SCHEMATHESIS, "--config-file", str(CONFIG), "--no-color", "run", f"http://127.0.0.1:{api_port}/v1/openapi.json",
            "--checks", "all", "--header", f"Authorization: Bearer {token}", "--max-examples", "25", "--workers", "1",
            "--seed", "23", "--request-timeout", "30", "--generation-database", "none",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(run.communicate(), 600)
        report = out.decode(errors="replace")
        assert run.returncode == 0, report[-6000:]
        assert "No issues found" in report or " passed" in report, report[-3000:]
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.wait, 30)
