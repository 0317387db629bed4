"""Files written so that a power cut leaves the old content or the new, never a mix: the one place that
knows the fsync dance (a file's data, then the rename, then its directory)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(source: Path, target: Path) -> None:
    """``source`` (already written) made durable and renamed over ``target``, the rename durable too."""
    fsync_path(source)
    os.replace(source, target)
    fsync_path(target.parent)


def write_whole(path: Path, data: bytes, mode: int = 0o600) -> None:
    """``path`` replaced by ``data`` whole and durably (a temporary beside it, then renamed)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    durable_replace(temporary, path)
