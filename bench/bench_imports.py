"""What each import costs the daemon and ``edge-agent check``: resident memory (RSS) and time, each module
imported alone in a fresh interpreter (the median of three), as on a device (``rich``, a dev tool that
structlog imports when it is there, made unimportable). The floor of each row is the bare interpreter; the
rows are information (docs/performance.md "What the imports cost"): the daemon's idle memory is compared with
Mender's in bench_idle.py, and its parts here say where it goes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from bench.common import Result, as_on_a_device

# Standard library and dependencies first (what any Python daemon with these would pay), then the agent's
# layers, each including what it imports.
MODULES: Final = (
    "asyncio", "ssl", "sqlite3", "nacl.signing", "structlog", "msgspec",
    "paho.mqtt.client", "aiomqtt", "aiosqlite", "protocol.claims", "agent.config", "agent.store.database",
    "agent.entitlements.intake", "agent.intake.commands", "agent.sync.session", "agent.local.side",
    "firmware.engine", "agent.daemon", "agent.cli", "prometheus_client",
    # what a daemon on its dependencies pays before a line of its own (the floor under the daemon's idle
    # memory: compare bench_idle.py's Mender figures); then with our configuration and wire models on them
    "asyncio,ssl,sqlite3,nacl.signing,structlog,msgspec,aiomqtt,aiosqlite",
    "asyncio,ssl,sqlite3,nacl.signing,structlog,msgspec,aiomqtt,aiosqlite,agent.config,protocol.claims",
    # the libraries the device chose against, each in its choice's place (the evidence: docs/performance.md):
    # pydantic (the client's named library, the device's before msgspec) and cryptography's Ed25519 and PEM
    # loading (the client's named library, the device's before PyNaCl; the cloud signs with it)
    "asyncio,ssl,sqlite3,nacl.signing,structlog,pydantic,aiomqtt,aiosqlite",
    "asyncio,ssl,sqlite3,cryptography.hazmat.primitives.asymmetric.ed25519,cryptography.hazmat.primitives.serialization,"
    "structlog,msgspec,aiomqtt,aiosqlite",
)  # fmt: skip
_PROBE: Final = """
import importlib, json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before, started = rss(), time.perf_counter()
for name in filter(None, sys.argv[1].split(",")):
    importlib.import_module(name)
print(json.dumps([rss(), rss() - before, time.perf_counter() - started]))
"""


def _probe(module: str, env: dict[str, str]) -> tuple[int, int, float]:
    """(RSS after, RSS the import added, seconds it took): the median run of three, by time. ``module``:
    a name, or several separated by commas."""
    runs = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, env=env,
                              check=True)  # fmt: skip
        total, added, seconds = json.loads(done.stdout)
        runs.append((int(total), int(added), float(seconds)))
    runs.sort(key=lambda r: r[2])
    return runs[1]


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as directory:
        env = as_on_a_device(Path(directory))
        bare, _, bare_seconds = _probe("", env)
        rows = []
        for module in MODULES:
            total, _, seconds = _probe(module, env)
            rows += [
                Result(f"import {module}: RSS", "the bare interpreter", bare, total, total / bare, "info", unit="B"),
                Result(f"import {module}: time", "the bare interpreter's start", max(bare_seconds, 1e-6), seconds,
                       seconds / max(bare_seconds, 1e-6), "info"),
            ]  # fmt: skip
    return rows


def table() -> str:
    """The table for docs/performance.md (``python -c 'from bench.bench_imports import table; print(table())'``)."""
    rows = run()
    lines = ["| module (with what it imports) | RSS | time |", "| --- | --- | --- |"]
    for memory, seconds in zip(rows[::2], rows[1::2], strict=True):
        name = memory.name.removeprefix("import ").removesuffix(": RSS")
        lines.append(f"| `{name}` | {memory.ours_seconds / 2**20:.1f} MiB | {seconds.ours_seconds * 1e3:.0f} ms |")
    return "\n".join(lines) + f"\n\nThe bare interpreter: {rows[0].floor_seconds / 2**20:.1f} MiB."
