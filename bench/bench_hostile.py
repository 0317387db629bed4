"""Hostile input and the guarantees that outlive the database (issue 12), each beside its floor.

* a refused document through the daemon's inbound path (verify, refusal coalesced, reported), vs.
  deciding the refusal alone (parse and verify the signature): what a flood costs per message, forged
  the costliest way (signed by another key); and, for information, with zeros for a signature, which
  libsodium refuses before any curve arithmetic (the costliest refusal before its sixth stop, under
  cryptography);
* a nesting bomb in the protected header (4 KiB of brackets, the most a header may be), refused by
  measuring before parsing, vs. decoding a flat header of the same size (base64url and ``json.loads``:
  what a harmless header of that size costs; the bomb should cost about as much);
* a document accepted durably (verify, derive, commit with ``synchronous=FULL``, and the sidecar's
  high-water mark written before the commit), vs. the commit alone as ``sqlite3`` does it: what
  refusing a superseded document after a lost database costs per accepted document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import ClockSource
from agent.config import load_config, load_trust_roots
from agent.device import Device
from agent.errors import DocumentRefused
from agent.intake import handlers
from agent.intake.dispatch import Intake
from agent.intake.poison import PoisonList
from agent.outbox import Outbox
from bench.common import Result
from cloud_stub import signing
from protocol import jws
from tests.support.documents import Claims, b64, forge, write_config, write_public_key

ROUNDS = 9


async def _rounds(floor: Callable[[], Awaitable[float]], ours: Callable[[], Awaitable[float]]) -> tuple[float, ...]:
    """Median per-item seconds of floor and ours, and the median ratio, in alternating rounds."""
    floors, mine, ratios = [], [], []
    for round_ in range(ROUNDS):
        if round_ % 2:
            f, o = await floor(), await ours()
        else:
            o, f = await ours(), await floor()
        floors.append(f)
        mine.append(o)
        ratios.append(o / f)
    return statistics.median(floors), statistics.median(mine), statistics.median(ratios)


async def _device(directory: Path, root: Ed25519PrivateKey) -> Device:
    pem = write_public_key(directory / "root.pub.pem", root)
    config = load_config(write_config(directory, [pem]), {})
    return await Device.open(config, load_trust_roots(config), ClockSource.system(), daemon=True)


async def _refusals(directory: Path, *, zeros: bool = False, count: int = 2_000) -> tuple[float, ...]:
    """A forged entitlements document, again and again: signed by another key over the very header and
    payload (the costliest refusal: libsodium does the whole check before it says no), or with ``zeros``,
    64 zero bytes for a signature (refused by libsodium's first checks, before any curve arithmetic)."""
    root = Ed25519PrivateKey.generate()
    device = await _device(directory, root)
    outbox = await Outbox.open(device.store, "0c110512ab34", device.clock, data_dir=directory, max_events=100)
    writer = asyncio.create_task(outbox.run())
    table = {"entitlements": handlers.Holdings()}
    inbound = Intake(
        device.accept, device.store, device.clock.now, outbox, PoisonList([]), table, after=lambda typ, after: None
    )
    claims = Claims(iat=time.time()).entitlements()
    good = forge(root, claims)
    signing_input = good.rsplit(".", 1)[0]
    signature = bytes(64) if zeros else Ed25519PrivateKey.generate().sign(signing_input.encode())
    forged = f"{signing_input}.{b64(signature)}"
    parsed_key = signing.verifier(root.public_key())

    async def floor() -> float:
        start = time.perf_counter()
        for _ in range(count):
            with contextlib.suppress(DocumentRefused):
                jws.verify_signature(jws.parse(forged), parsed_key)
        return (time.perf_counter() - start) / count

    async def ours() -> float:
        start = time.perf_counter()
        for _ in range(count):
            await inbound.take("entitlements", forged.encode())
        return (time.perf_counter() - start) / count

    try:
        return await _rounds(floor, ours)
    finally:
        await outbox.close()
        await writer
        await device.close()


def _bomb_and_flat() -> tuple[float, float, float]:
    depth = (jws.MAX_HEADER_BYTES - 2) // 2
    bomb = f"{b64(b'[' * depth + b']' * depth)}.{b64(b'{}')}.{b64(bytes(64))}"
    flat = json.dumps({"alg": "EdDSA", "kid": "k", "typ": "entitlements", "x": "y" * (jws.MAX_HEADER_BYTES - 60)})
    number = 2_000

    def ours() -> float:
        start = time.perf_counter()
        for _ in range(number):
            with contextlib.suppress(DocumentRefused):
                jws.parse(bomb)
        return (time.perf_counter() - start) / number

    encoded = jws.b64url_encode(flat.encode())

    def floor() -> float:
        start = time.perf_counter()
        for _ in range(number):
            json.loads(jws.b64url_decode(encoded))
        return (time.perf_counter() - start) / number

    floors, mine, ratios = [], [], []
    for round_ in range(ROUNDS):
        if round_ % 2:
            o, f = ours(), floor()
        else:
            f, o = floor(), ours()
        floors.append(f)
        mine.append(o)
        ratios.append(o / f)
    return statistics.median(floors), statistics.median(mine), statistics.median(ratios)


async def _acceptance(directory: Path, count: int = 200) -> tuple[float, ...]:
    root = Ed25519PrivateKey.generate()
    device = await _device(directory / "device", root)
    claims = Claims(iat=time.time())
    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE documents (typ TEXT PRIMARY KEY, seq INTEGER, token TEXT)")

    async def floor() -> float:
        tokens = [forge(root, claims.entitlements()) for _ in range(count)]
        start = time.perf_counter()
        for token in tokens:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO documents VALUES ('entitlements', 1, ?)", (token,))
            db.execute("COMMIT")
        return (time.perf_counter() - start) / count

    async def ours() -> float:
        tokens = [forge(root, claims.entitlements()) for _ in range(count)]
        start = time.perf_counter()
        for token in tokens:
            await device.accept(token, "entitlements")
        return (time.perf_counter() - start) / count

    try:
        return await _rounds(floor, ours)
    finally:
        db.close()
        await device.close()


def run() -> list[Result]:
    """Every row of this module."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        f, o, r = asyncio.run(_refusals(Path(directory)))
    rows = [
        Result("refused document through inbound (coalesced, reported)", "parse + Ed25519 verify", f, o, r, "<= 1.5")
    ]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        f, o, r = asyncio.run(_refusals(Path(directory), zeros=True))
    rows.append(Result("refused document through inbound, zeros for a signature", "parse + Ed25519 verify", f, o, r,
                       "info"))  # fmt: skip
    f, o, r = _bomb_and_flat()
    floor_label = "decoding a flat 4 KiB header (base64url, json.loads)"
    rows.append(Result("nesting bomb header (4 KiB), refused", floor_label, f, o, r, "<= 2.0"))
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        Path(directory, "device").mkdir()
        f, o, r = asyncio.run(_acceptance(Path(directory)))
    rows.append(Result("document accepted durably (+ sidecar mark)", "sqlite3 INSERT + COMMIT, FULL", f, o, r, "info"))
    return rows
