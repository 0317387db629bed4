"""Space kept back on the data directory's file system for the writes that must not fail on a full disk.

Theory of operation. On a full disk the outbox makes room by evicting low-priority events, but a
queue that holds only alarms has nothing to evict, and a lost alarm is a hardware alarm lost. So
the daemon keeps a *ballast* file (``reserve``, ``store.reserve_bytes``, 1 MiB by default) whose
blocks are really allocated (``posix_fallocate``, never sparse). A write that is entitled to the
reserve (alarms, sensor events, call alerts and door logs; the trust and entitlements documents
whose renewal lets held events out) and fails with a full disk releases the ballast and is tried
once more. The daemon puts the ballast back as soon as the file system has the room again
(:meth:`Reserve.restore`, from housekeeping). When the database is capped (``store.max_bytes``), the
reserve is also kept inside the cap: ordinary writes see the cap minus the reserve (``agent/store/database.py``).

Blocking calls: run them in a thread from async code.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger("agent.reserve")

FILE_NAME: Final = "reserve"


class Reserve:
    """The ballast file of one data directory."""

    def __init__(self, data_dir: Path, size: int) -> None:
        self.path = data_dir / FILE_NAME
        self.size = size
        self.released = 0  # how many times it was given up (for the status and the tests)

    @property
    def held(self) -> bool:
        """Whether the ballast is in place."""
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def figures(self) -> dict[str, Any]:
        """For the status: its size, whether it is in place, how many times it was given up."""
        return {"bytes": self.size, "held": self.held, "released": self.released}

    def restore(self) -> bool:
        """Put the ballast (back) in place if the file system has the room; whether it is in place."""
        if self.size <= 0:
            return False
        if self.held:
            return True
        temporary = self.path.with_suffix(".tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, self.size)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("reserve_not_restored", error=exc.strerror or str(exc))
            return False
        return True

    def release(self) -> bool:
        """Give the ballast's space to the file system (a privileged write needs it); whether there was any."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        self.released += 1
        log.warning("reserve_released", bytes=self.size, times=self.released)
        return True
