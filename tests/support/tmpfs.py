"""A small file system that really fills up: a tmpfs mounted by the test (the machine runs the tests as
root), for the daemon's data directory, and a filler file that takes every free block of it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def mounted(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``8m``) mounted at ``path`` (owner-only) for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system has no block left; the bytes written."""
    written = 0
    with path.open("ab", buffering=0) as file:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    written += file.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        with contextlib.suppress(OSError):
            os.fsync(file.fileno())
    return written


def free_bytes(path: Path) -> int:
    """What the file system holding ``path`` has left."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
