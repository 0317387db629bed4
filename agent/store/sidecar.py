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

Storage: a small file of two fixed slots, written in place by turns, each holding a counter, the
JSON and a CRC-32 (the redundant-environment scheme of U-Boot). A write goes to the slot that does
not hold the newest copy and is on disk when :func:`update` returns (``fdatasync``); a write torn by
a power cut leaves a slot whose CRC fails, and the other slot, the state before, is read instead.
The file is allocated whole when it is made, so writing it never needs a free block: on a full disk
the floors can still go up. One ``pwrite`` and one ``fdatasync``, against a temporary file, its
fsync, a rename and a directory fsync before (bench/bench_hostile.py). Writes are serialized across
processes by ``flock`` on the file: each reads what is there and merges (seqs and high-water marks
only go up, the newest anchor and root set win; ``next_seq`` is the outbox's to set), so
``edge-agent accept`` beside a running daemon loses nothing of either. A missing or unreadable file
(both slots bad) is treated as empty: it only ever raises floors. The JSON file of earlier versions
(``agent.state.json``) is read when the slots hold nothing yet.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from agent.clock import Anchor, newest_anchor
from agent.entitlements.marks import HighWater

FILE_NAME = "agent.state"
LEGACY_NAME = "agent.state.json"  # the single JSON file of earlier versions, read until slots exist
RESERVATION = 10_000  # seqs reserved per write: a burst costs one small fsync'd write per block
SLOT = 8192  # bytes per slot: the JSON is well under 4 KiB even with 16 rotated roots
_HEAD = struct.Struct(">4sBxxxQI")  # magic, format, counter, length of the JSON
_MAGIC = b"EDGS"
_FORMAT = 1


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


def _slot(raw: bytes) -> tuple[int, Sidecar] | None:
    """The counter and content of one slot, or None if it is not a whole, valid write."""
    if len(raw) < _HEAD.size + 4:
        return None
    magic, fmt, counter, length = _HEAD.unpack_from(raw)
    end = _HEAD.size + length
    if magic != _MAGIC or fmt != _FORMAT or end + 4 > len(raw):
        return None
    if zlib.crc32(raw[:end]) != int.from_bytes(raw[end : end + 4], "big"):
        return None
    try:
        return counter, _decode(json.loads(raw[_HEAD.size : end]))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def _newest(descriptor: int) -> tuple[int, Sidecar] | None:
    slots = [_slot(os.pread(descriptor, SLOT, i * SLOT)) for i in range(2)]
    valid = [slot for slot in slots if slot is not None]
    return max(valid, key=lambda slot: slot[0]) if valid else None


def _legacy(data_dir: Path) -> Sidecar:
    try:
        return _decode(json.loads((data_dir / LEGACY_NAME).read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return EMPTY


def load(data_dir: Path) -> Sidecar:
    """The floors in ``data_dir``; :data:`EMPTY` when there are none (or none can be read)."""
    try:
        descriptor = os.open(data_dir / FILE_NAME, os.O_RDONLY)
    except OSError:
        return _legacy(data_dir)
    try:
        newest = _newest(descriptor)
    except OSError:
        newest = None
    finally:
        os.close(descriptor)
    return newest[1] if newest is not None else _legacy(data_dir)


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
    """Merge the given floors into the file, durably; what it now holds.

    Blocking (call it in a thread from async code); raises ``OSError`` when it cannot write.
    """
    path = data_dir / FILE_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        made = os.fstat(descriptor).st_size < 2 * SLOT
        if made:  # new: allocate both slots now, so that no later write needs a free block
            os.posix_fallocate(descriptor, 0, 2 * SLOT)
        newest = _newest(descriptor)  # a short file (a crash as it was made) reads as slots missing
        counter, current = newest if newest is not None else (0, _legacy(data_dir))
        merged = merge(current, next_seq=next_seq, anchor=anchor, high_water=high_water, roots=roots)
        payload = _encode(merged)
        if _HEAD.size + len(payload) + 4 > SLOT:
            raise OSError(errno.EFBIG, f"the sidecar's content ({len(payload)} bytes) does not fit a slot")
        counter += 1
        record = _HEAD.pack(_MAGIC, _FORMAT, counter, len(payload)) + payload
        record += zlib.crc32(record).to_bytes(4, "big")
        os.pwrite(descriptor, record, (counter % 2) * SLOT)  # the slot not holding the newest copy
        os.fdatasync(descriptor)
        if made:  # the file's name must be on disk too, once
            directory = os.open(data_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return merged
    finally:
        os.close(descriptor)  # releases the lock
