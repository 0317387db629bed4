"""A small file beside the database that survives losing it: the event seq and the trusted clock.

Theory of operation. The database holds the authoritative event counter and clock anchor. If the
database is ever lost (corrupt, quarantined, replaced by a fresh one), two promises would break with
it: event ``seq`` strictly increasing across restarts (PROTOCOL.md), and trusted time never going
back. This file keeps both apart from the database:

* ``next_seq`` is a *reservation* while the daemon runs: the outbox never gives out a seq at or
  above it without first writing a higher one here (in blocks, so a burst costs one small write per
  block). At a clean stop it is written exact. A fresh database starts counting from it: exactly
  where it left off after a clean stop, after the reserved block (a visible gap, where events may
  have been lost with the database) after a crash.
* ``anchor`` is the trusted clock's floor, written at the same moments.

Writes are atomic (temporary file, fsync, rename, fsync of the directory). A missing or unreadable
file is treated as empty: it only ever raises floors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from agent.clock import Anchor

FILE_NAME = "agent.state.json"
RESERVATION = 10_000  # seqs reserved per write: a burst costs one small fsync'd write per block


class Sidecar(NamedTuple):
    """The floors kept outside the database."""

    next_seq: int
    anchor: Anchor | None


def load(data_dir: Path) -> Sidecar:
    """The floors in ``data_dir``; zero and none when the file is missing or unreadable."""
    try:
        raw = json.loads((data_dir / FILE_NAME).read_text())
        anchor = raw.get("anchor")
        return Sidecar(
            next_seq=max(1, int(raw["next_seq"])),
            anchor=None if anchor is None else Anchor(float(anchor[0]), anchor[1], float(anchor[2])),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return Sidecar(next_seq=1, anchor=None)


def save(data_dir: Path, sidecar: Sidecar) -> None:
    """Write atomically and durably (blocking: call it in a thread from async code)."""
    path = data_dir / FILE_NAME
    temporary = path.with_suffix(".tmp")
    payload = json.dumps({"next_seq": sidecar.next_seq, "anchor": sidecar.anchor}).encode()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, payload)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
