"""SIGKILL of a real process while it stores documents leaves either the old or the new one in force."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

from agent.config import Config
from agent.store.database import DB_NAME
from tests.support.devices import DeviceFactory
from tests.support.documents import DAY, Claims, Keys, forge, svc

SERVICES_PER_DOCUMENT = 1200  # a large document: the transaction takes a while, so kills land inside it
KILLS = 30  # with a non-atomic store, ~1 kill in 3 lands in the gap: 30 miss it with p < 1e-5
ROOT = Path(__file__).resolve().parents[1]
ACCEPT_SECONDS = 0.04  # one acceptance of such a document takes ~15-35 ms here (measured)


def _documents(tmp_path: Path, keys: Keys, count: int) -> list[Path]:
    claims = Claims(iat=time.time())
    paths = []
    for seq in range(1, count + 1):
        services = [svc("app", f"account:s{seq}-{i}", days=100) for i in range(SERVICES_PER_DOCUMENT)]
        token = forge(keys.root, claims.entitlements(services=services, seq=seq, exp=int(time.time() + 30 * DAY)))
        path = tmp_path / f"doc-{seq:03}.jws"
        path.write_text(token)
        paths.append(path)
    return paths


def _accepted_seq(line: bytes) -> int:
    """The seq of an "accepted SEQ" line from the child, 0 for anything else."""
    words = line.split()
    return int(words[1]) if len(words) == 2 and words[0] == b"accepted" else 0


def _in_force(config: Config) -> tuple[int, int, set[int]] | None:
    """(seq in force, number of service rows, seqs the rows derive from), read straight from SQLite."""
    with sqlite3.connect(config.data_dir / DB_NAME) as db:
        row = db.execute("SELECT seq FROM documents WHERE typ = 'entitlements'").fetchone()
        rows = db.execute("SELECT doc_seq FROM services").fetchall()
    if row is None:
        assert rows == []
        return None
    return row[0], len(rows), {r[0] for r in rows}


async def _run_and_kill(config_file: Path, documents: list[Path], rng: random.Random) -> int:
    """Start the writer on ``documents``, kill it at a random instant; the highest seq it reported."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.crash_child",
        str(config_file),
        *map(str, documents),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
    reported = 0
    for _ in range(rng.randint(0, 2)):
        reported = max(reported, _accepted_seq(await asyncio.wait_for(child.stdout.readline(), 30)))
    await asyncio.sleep(rng.uniform(0, ACCEPT_SECONDS))  # a random instant of the next acceptance
    child.kill()
    for line in (await child.stdout.read()).splitlines():
        reported = max(reported, _accepted_seq(line))
    await child.wait()
    return reported


async def test_sigkill_while_storing_leaves_a_consistent_store(
    tmp_path: Path, keys: Keys, config: Config, config_file: Path, devices: DeviceFactory
) -> None:
    """Kill the writer at random instants; each time, exactly one whole document is in force."""
    rng = random.Random(0xC0FFEE)
    documents = _documents(tmp_path, keys, 3 * KILLS)
    durable = in_force = 0
    for _ in range(KILLS):
        # Only what is not in force yet, so that each kill lands on a fresh acceptance.
        durable = max(durable, await _run_and_kill(config_file, documents[in_force:], rng))
        state = _in_force(config)
        assert state is not None or durable == 0
        if state is not None:
            seq, count, derived_from = state
            assert seq >= durable, "a document reported accepted was lost"
            assert count == SERVICES_PER_DOCUMENT
            assert derived_from == {seq}, "services from two documents are mixed"
            in_force = seq
        device = await devices.open()  # loads and cross-checks documents against derived rows
        assert (device.entitlements.seq if device.entitlements else 0) == in_force
        devices.opened.remove(device)
        await device.close()
    assert durable > 0, "no document was ever accepted: the test did not exercise anything"
