"""Credentials held by the access reader: memory per credential and the time to load them at start, for
1,000, 10,000 and 100,000 credentials (issue "Performance": <= 200 bytes each; 100,000 in <= 0.5 s).

Each count runs in fresh processes: one issues the credentials into a real database (the command path's
``credentials.issue``), the next times :meth:`CredentialIndex.load` and measures how much its resident set
grew, and the Python heap it keeps is measured
with tracemalloc (a second load, so the timing is not tracemalloc's). The floor beside ours is the least a
reader could keep to recognise a credential at all: a set of the 32-byte SHA-256 digests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from bench.common import Result

COUNTS = (1_000, 10_000, 100_000)

_MEASURE = r"""
import asyncio, gc, hashlib, json, sys, time, tracemalloc
from pathlib import Path
from agent.intake.commands import Credential
from agent.local import credentials
from agent.local.credentials import CredentialIndex
from agent.store.database import Store

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

async def main(directory, count, step):
    store = await Store.open(Path(directory))
    if step == "issue":  # in a process of its own: what it allocates does not flatter the load's RSS
        issued = [Credential(id=f"c-{i}", kind="card", value=f"{i:012X}") for i in range(count)]
        async with store.transaction() as tx:
            for door in ("door-1", "door-2"):
                half = issued[: count // 2] if door == "door-1" else issued[count // 2 :]
                await credentials.issue(tx, door, [(c.id, c.kind, c.stored()) for c in half], 0.0)
        await store.close()
        return
    gc.collect()
    rss_before = rss()
    async with store.transaction("DEFERRED") as tx:
        started = time.perf_counter()
        index = await CredentialIndex.load(tx)
        seconds = time.perf_counter() - started
    gc.collect()
    rss_after = rss()
    assert len(index) == count
    assert index.find("door-1", "card", f"{0:012X}") is not None
    del index
    gc.collect()
    tracemalloc.start()
    async with store.transaction("DEFERRED") as tx:
        rows = await tx.fetchall("SELECT 1 FROM credentials LIMIT 1")
    del rows
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    async with store.transaction("DEFERRED") as tx:
        index = await CredentialIndex.load(tx)
    gc.collect()
    ours = tracemalloc.get_traced_memory()[0] - before
    floor_before = tracemalloc.get_traced_memory()[0]
    digests = {hashlib.sha256(f"{i:012X}".encode()).digest() for i in range(count)}
    gc.collect()
    floor = tracemalloc.get_traced_memory()[0] - floor_before
    tracemalloc.stop()
    await store.close()
    print(json.dumps({"seconds": seconds, "ours": ours / count, "floor": floor / count,
                      "rss": (rss_after - rss_before) / count, "held": len(index), "digests": len(digests)}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def _measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        for step in ("issue", "load"):
            out = subprocess.run(
                [sys.executable, "-c", _MEASURE, directory, str(count), step], capture_output=True, text=True,
                check=True,
            )  # fmt: skip
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def run() -> list[Result]:
    rows = []
    for count in COUNTS:
        m = _measure(count)
        last = count == COUNTS[-1]
        rows.append(
            Result(f"memory per credential, {count:,} held (Python heap)", "a set of 32-byte digests", m["floor"],
                   m["ours"], m["ours"] / m["floor"], "info", unit="n")
        )  # fmt: skip
        # The resident set's growth: what the issue measured. At small counts it is mostly SQLite's page
        # cache and pymalloc's arenas (fixed costs spread thin), so the goal is judged at 100,000.
        rows.append(
            Result(f"resident memory per credential, {count:,} held, against 200 bytes", "the goal", 200.0,
                   m["rss"], m["rss"] / 200.0, "<= 1.0" if last else "info", unit="n")
        )  # fmt: skip
        rows.append(
            Result(f"load {count:,} credentials at start, against 0.5 s", "the goal", 0.5, m["seconds"],
                   m["seconds"] / 0.5, "<= 1.0" if last else "info")
        )  # fmt: skip
    return rows
