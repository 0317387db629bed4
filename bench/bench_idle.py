"""Idle memory of the daemon beside the Mender client 3.4 (Debian's ``mender-client``), running at the same
time, each pointed at a local server that refuses it (issue "Performance": PSS <= 1.0x Mender's).

Mender is installed here if it is missing (``apt-get install mender-client``); if it cannot be installed or
does not start, the benchmark says so and exits non-zero: nothing is skipped. Both processes are measured
after they have settled (their first connection attempts made): PSS from ``/proc/PID/smaps_rollup`` (each
shared page counted in proportion), and RSS beside it.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import load_config
from bench.common import Result, as_on_a_device, tool
from tests.support.daemons import EDGE_AGENT, device_config, wait_for_control
from tests.support.documents import write_public_key

SETTLE = 15.0  # seconds both run before they are measured


class _Refuse(http.server.BaseHTTPRequestHandler):
    """A Mender server that refuses every device: 401 to every request."""

    def _refuse(self) -> None:
        body = json.dumps({"error": "unauthorized"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = _refuse  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


def _memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Rss"):
            fields[name] = int(rest.split()[0]) * 1024
    return fields["Pss"], fields["Rss"]


def _nobody() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return int(closed.getsockname()[1])


def run() -> list[Result]:
    mender = tool("idle", "mender", "mender-client")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        home = Path(directory)
        (home / "mender").mkdir()
        (home / "mender" / "device_type").write_text("device_type=R29\n")
        conf = home / "mender.conf"
        conf.write_text(json.dumps({
            "ServerURL": f"http://127.0.0.1:{server.server_address[1]}",
            "UpdatePollIntervalSeconds": 1800, "InventoryPollIntervalSeconds": 28800,
            "RetryPollIntervalSeconds": 30, "TenantToken": "",
        }))  # fmt: skip
        root = write_public_key(home / "root.pub.pem", Ed25519PrivateKey.generate())
        configs = [device_config(home / name, f"mqtt://127.0.0.1:{_nobody()}", root) for name in ("dev", "device")]
        outputs = [(home / name).open("wb") for name in ("mender.log", "agent-dev.log", "agent-device.log")]
        theirs = subprocess.Popen(
            [mender, "--config", str(conf), "--fallback-config", str(conf), "--data", str(home / "mender"),
             "daemon"], stdout=outputs[0], stderr=outputs[0],
        )  # fmt: skip
        # The first agent runs as installed on a device (rich not importable), the second in this environment.
        environments = [as_on_a_device(home), dict(os.environ)]
        measured = []
        try:
            for config_file, env, output in zip(configs[::-1], environments, outputs[:0:-1], strict=True):
                # one agent at a time beside Mender: two would share their libraries' pages, halving their PSS
                agent = subprocess.Popen(
                    [EDGE_AGENT, "run", "--config", str(config_file)], stdout=output, stderr=output, env=env
                )
                try:
                    asyncio.run(wait_for_control(load_config(config_file, {}).data_dir, process=agent))
                    deadline = time.monotonic() + SETTLE
                    while time.monotonic() < deadline:  # both keep running, trying their servers
                        if theirs.poll() is not None:
                            log = (home / "mender.log").read_text(errors="replace")[-2000:]
                            sys.exit(f"bench idle: mender exited with {theirs.returncode}:\n{log}")
                        time.sleep(0.5)
                    measured.append((_memory(theirs.pid), _memory(agent.pid)))
                finally:
                    agent.terminate()
                    agent.wait(15)
        finally:
            theirs.terminate()
            theirs.wait(15)
            for output in outputs:
                output.close()
            server.shutdown()
    ((their_pss, their_rss), (our_pss, our_rss)), ((dev_their_pss, _), (dev_pss, _)) = measured
    return [
        Result("daemon idle memory, PSS (as on a device: no rich)", "Mender client 3.4 (mender-client), PSS",
               their_pss, our_pss, our_pss / their_pss, "<= 1.0", unit="B"),
        # issue 26: RSS is the headline, a board running one Python process (no libpython shared to halve)
        Result("daemon idle memory, RSS (as on a device: no rich)", "Mender client 3.4 (mender-client), RSS",
               their_rss, our_rss, our_rss / their_rss, "<= 1.0", unit="B"),
        Result("daemon idle memory, PSS (this dev environment, with rich)", "Mender client 3.4, PSS",
               dev_their_pss, dev_pss, dev_pss / dev_their_pss, "info", unit="B"),
    ]  # fmt: skip
