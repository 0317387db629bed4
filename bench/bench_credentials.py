"""Credentials held by the access reader: memory per credential and the time to load them at start, for
1,000, 10,000 and 100,000 credentials (issue "Performance": <= 200 bytes each; 100,000 in <= 0.5 s).

Each count runs in a fresh process: the credentials are issued into a real database (the command path's
``credentials.issue``), then :meth:`CredentialIndex.load` is timed, and the Python heap it keeps is measured
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

async def main(directory, count):
    store = await Store.open(Path(directory))
    issued = [Credential(id=f"c-{i}", kind="card", value=f"{i:012X}") for i in range(count)]
    async with store.transaction() as tx:
        for door in ("door-1", "door-2"):
            half = issued[: count // 2] if door == "door-1" else issued[count // 2 :]
            await credentials.issue(tx, door, [(c.id, c.kind, c.stored()) for c in half], 0.0)
    async with store.transaction("DEFERRED") as tx:
        started = time.perf_counter()
        index = await CredentialIndex.load(tx)
        seconds = time.perf_counter() - started
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
    print(json.dumps({"seconds": seconds, "ours": ours / count, "floor": floor / count, "held": len(index),
                      "digests": len(digests)}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, directory, str(count)], capture_output=True, text=True, check=True
        )
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def run() -> list[Result]:
    rows = []
    for count in COUNTS:
        m = _measure(count)
        rows.append(
            Result(f"memory per credential, {count:,} held", "a set of 32-byte digests", m["floor"], m["ours"],
                   m["ours"] / m["floor"], "info", unit="n")
        )  # fmt: skip
        rows.append(
            Result(f"memory per credential, {count:,} held, against 200 bytes", "the goal", 200.0, m["ours"],
                   m["ours"] / 200.0, "<= 1.0", unit="n")
        )  # fmt: skip
        if count == COUNTS[-1]:
            rows.append(
                Result(f"load {count:,} credentials at start, against 0.5 s", "the goal", 0.5, m["seconds"],
                       m["seconds"] / 0.5, "<= 1.0")
            )  # fmt: skip
        else:
            rows.append(
                Result(f"load {count:,} credentials at start", "per credential (info)", m["seconds"] / count,
                       m["seconds"], count, "info")
            )  # fmt: skip
    return rows
