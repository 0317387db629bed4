"""The trusted clock: time that never goes back (PROTOCOL.md "Trusted time").

Theory of operation. A device may boot with a wrong wall clock, and anyone at the device can set it.
Trusted time is therefore the later of two readings:

* the wall clock, and
* a *floor* carried forward by a monotonic clock: the latest trusted time known, plus the time that
  has passed since on ``CLOCK_BOOTTIME`` (which keeps counting through suspend).

The floor ratchets: every reading that is later than the floor becomes the new floor, so once a time
has been seen, setting the wall clock back cannot bring an earlier time back. Accepting a signed
document raises the floor to its ``iat``. The floor is persisted (:class:`Anchor`) with the boot it
was taken in; a later process of the same boot adds the boot-time elapsed since, a process after a
reboot starts from the floor itself (the downtime is unknown, so it is not counted: trusted time may
lag, never lead, the truth).

A wall clock set far *forward* is believed (nothing on the device can tell it from the truth) and
ratchets the floor; the consequence is that services expire early, never that they last longer.

The sources are injected (:class:`ClockSource`), so tests drive time without touching the system.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ClockSource(NamedTuple):
    """Where readings come from: the wall clock, a monotonic clock, and which boot this is."""

    wall: Callable[[], float]
    monotonic: Callable[[], float]
    boot_id: str | None

    @classmethod
    def system(cls) -> ClockSource:
        """The real clocks of this machine."""
        try:
            boot_id: str | None = _BOOT_ID.read_text().strip() or None
        except OSError:
            boot_id = None
        boottime = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
        return cls(wall=time.time, monotonic=lambda: time.clock_gettime(boottime), boot_id=boot_id)


class Anchor(NamedTuple):
    """A persisted floor: trusted time ``trusted_at`` was known when ``monotonic`` read ``at_monotonic``."""

    trusted_at: float
    boot_id: str | None
    at_monotonic: float


class TrustedClock:
    """Trusted time in epoch seconds; see the module docstring for the rules."""

    __slots__ = ("_floor", "_floor_mono", "_source")

    def __init__(self, source: ClockSource, anchor: Anchor | None = None) -> None:
        self._source = source
        self._floor_mono = source.monotonic()
        self._floor = 0.0
        if anchor is not None:
            self._floor = anchor.trusted_at
            same_boot = anchor.boot_id is not None and anchor.boot_id == source.boot_id
            if same_boot and self._floor_mono >= anchor.at_monotonic:
                self._floor += self._floor_mono - anchor.at_monotonic

    def now(self) -> float:
        """Trusted time now; never earlier than any value it returned before."""
        return self._read(self._source.monotonic())

    def advance_to(self, instant: float) -> None:
        """Raise the floor to ``instant`` (an accepted document's ``iat``) if it is later than now."""
        mono = self._source.monotonic()
        if instant > self._read(mono):
            self._floor, self._floor_mono = instant, mono

    def anchor(self, at_least: float = 0.0) -> Anchor:
        """What to persist so that a later process never reads an earlier time (nor ``at_least``)."""
        mono = self._source.monotonic()
        return Anchor(trusted_at=max(self._read(mono), at_least), boot_id=self._source.boot_id, at_monotonic=mono)

    def _read(self, mono: float) -> float:
        carried = self._floor + (mono - self._floor_mono)
        wall = self._source.wall()
        if wall > carried:
            self._floor, self._floor_mono = wall, mono
            return wall
        return carried
