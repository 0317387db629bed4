"""A small file beside the database that survives losing it: what must never go back.

Theory of operation. The database holds the authoritative copies; if it is ever lost (corrupt,
quarantined, replaced by a fresh one), these promises would break with it, so this file keeps them
apart from it:

* ``next_seq``: event ``seq`` strictly increasing across restarts (PROTOCOL.md). It is a
  *reservation* while the daemon runs: the outbox never gives out a seq at or above it without
  first writing a higher one here (in blocks, so a burst costs one small write per block). At a
  clean stop it is written exact. A fresh database starts counting from it.
* ``anchor``: the trusted clock's floor (``agent/clock.py``), so that trusted time never goes back;
  with the generation of its last correction, so that a corrected floor is not undone by an older,
  higher one.
* ``high_water``: per document type, the ``seq`` and digest of the last accepted document, written
  *before* the document commits, so that a superseded document is refused as a rollback after a
  quarantine too (issue 12), not accepted again until the retained one arrives.
* ``roots``: the root keys a trust document rotated to (PROTOCOL.md "Root rotation"): after a lost
  database the device must not fall back to the provisioned roots the fleet has retired.

Writes are atomic (temporary file, fsync, rename, fsync of the directory) and serialized across
processes by ``flock`` on a lock file: each write reads what is there and merges (seqs and high-water
marks only go up, the newest anchor and root set win; ``next_seq`` is the outbox's to set), so
``edge-agent accept`` beside a running daemon loses nothing of either. A missing or unreadable file
is treated as empty: it only ever raises floors.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from agent.clock import Anchor, newest_anchor
from agent.entitlements.intake import HighWater

FILE_NAME = "agent.state.json"
LOCK_NAME = "agent.state.lock"
RESERVATION = 10_000  # seqs reserved per write: a burst costs one small fsync'd write per block


class Roots(NamedTuple):
    """Root keys set by the trust document ``trust_seq``: ``(kid, raw 32-byte key)`` pairs."""

    trust_seq: int
    keys: tuple[tuple[str, bytes], ...]


class Sidecar(NamedTuple):
    """The floors kept outside the database."""

    next_seq: int
    anchor: Anchor | None
    high_water: Mapping[str, HighWater] = {}
    roots: Roots | None = None


EMPTY = Sidecar(next_seq=1, anchor=None)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _encode(sidecar: Sidecar) -> bytes:
    anchor = sidecar.anchor
    return json.dumps(
        {
            "next_seq": sidecar.next_seq,
            "anchor": None if anchor is None else list(anchor),
            "high_water": {typ: [hw.seq, hw.digest.hex()] for typ, hw in sorted(sidecar.high_water.items())},
            "roots": None
            if sidecar.roots is None
            else {"trust_seq": sidecar.roots.trust_seq, "keys": [[kid, _b64(x)] for kid, x in sidecar.roots.keys]},
        }
    ).encode()


def _decode(raw: Any) -> Sidecar:
    anchor = raw.get("anchor")
    roots = raw.get("roots")
    return Sidecar(
        next_seq=max(1, int(raw["next_seq"])),
        # Older files hold three fields (no signed floor, generation 0).
        anchor=None if anchor is None else Anchor(float(anchor[0]), anchor[1], float(anchor[2]), *anchor[3:5]),
        high_water={
            str(typ): HighWater(int(seq), bytes.fromhex(digest))
            for typ, (seq, digest) in (raw.get("high_water") or {}).items()
        },
        roots=None
        if roots is None
        else Roots(int(roots["trust_seq"]), tuple((str(k), base64.b64decode(x)) for k, x in roots["keys"])),
    )


def load(data_dir: Path) -> Sidecar:
    """The floors in ``data_dir``; :data:`EMPTY` when the file is missing or unreadable."""
    try:
        return _decode(json.loads((data_dir / FILE_NAME).read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return EMPTY


def merge(
    current: Sidecar,
    *,
    next_seq: int | None = None,
    anchor: Anchor | None = None,
    high_water: Mapping[str, HighWater] | None = None,
    roots: Roots | None = None,
) -> Sidecar:
    """``current`` with the given floors merged in (pure): see the module docstring for the rules."""
    marks = dict(current.high_water)
    for typ, mark in (high_water or {}).items():
        held = marks.get(typ)
        if held is None or mark.seq > held.seq:
            marks[typ] = mark
    kept_roots = current.roots
    if roots is not None and (kept_roots is None or roots.trust_seq > kept_roots.trust_seq):
        kept_roots = roots
    return Sidecar(
        next_seq=current.next_seq if next_seq is None else next_seq,
        anchor=newest_anchor(current.anchor, anchor),
        high_water=marks,
        roots=kept_roots,
    )


def update(
    data_dir: Path,
    *,
    next_seq: int | None = None,
    anchor: Anchor | None = None,
    high_water: Mapping[str, HighWater] | None = None,
    roots: Roots | None = None,
) -> Sidecar:
    """Merge the given floors into the file, atomically and durably; what it now holds.

    Blocking (call it in a thread from async code); raises ``OSError`` when it cannot write.
    """
    lock = os.open(data_dir / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = merge(load(data_dir), next_seq=next_seq, anchor=anchor, high_water=high_water, roots=roots)
        _write(data_dir, _encode(merged))
        return merged
    finally:
        os.close(lock)  # releases the lock


def _write(data_dir: Path, payload: bytes) -> None:
    path = data_dir / FILE_NAME
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
