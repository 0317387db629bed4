"""The trusted clock: time that never goes back (PROTOCOL.md "Trusted time"), and a wall clock that ran
ahead that can be undone (issue 12; the reasoning is in docs/entitlements.md "Trusted time").

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

Two floors are carried: the whole floor, and its **signed** part, the latest accepted ``iat`` (the
cloud vouches that time is at least that). PROTOCOL.md promises only the signed part; the rest was
raised by wall-clock readings nobody signed. A wall clock set far *forward* (a bad NTP server) raises
the whole floor, and the device fails closed: services expire early. When the wall clock later
reads well below that floor again (:data:`SKEW`), the floor is **correctable**: the next document
that is signed, fresher than any accepted of its type (a higher ``seq``) and issued no later than the
wall clock says (plus :data:`SKEW`) vouches for the wall clock, and the floor comes down to the later
of the wall clock and the signed floor, never below the signed floor (:meth:`TrustedClock.correctable`,
then :meth:`TrustedClock.correct`). Each correction counts a *generation*, persisted with the anchor,
so that a corrected floor is never undone by an older, higher copy (the sidecar's).

The sources are injected (:class:`ClockSource`), so tests drive time without touching the system.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, NamedTuple

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

# How far the wall clock may read below the floor before the floor is suspect, and how far after the
# wall clock a vouching document may have been issued (clocks of cloud and device disagree a little).
SKEW: Final = 300.0


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
    """A persisted floor: trusted time ``trusted_at`` (of which ``signed_at`` was vouched for by a signed
    document) was known when ``monotonic`` read ``at_monotonic``; ``generation`` counts corrections."""

    trusted_at: float
    boot_id: str | None
    at_monotonic: float
    signed_at: float = 0.0
    generation: int = 0


def newest_anchor(*anchors: Anchor | None) -> Anchor | None:
    """The anchor that counts among copies of it: the latest generation, then the latest time."""
    known = [a for a in anchors if a is not None]
    return max(known, key=lambda a: (a.generation, a.trusted_at)) if known else None


class Correctable(NamedTuple):
    """The floor may come down to ``to`` if a fresh signed document issued by ``wall + SKEW`` vouches for it."""

    to: float
    wall: float


class TrustedClock:
    """Trusted time in epoch seconds; see the module docstring for the rules."""

    __slots__ = ("_floor", "_floor_mono", "_generation", "_signed", "_signed_mono", "_source")

    def __init__(self, source: ClockSource, anchor: Anchor | None = None) -> None:
        self._source = source
        mono = source.monotonic()
        self._floor_mono = self._signed_mono = mono
        self._floor = self._signed = 0.0
        self._generation = 0
        if anchor is not None:
            self._floor, self._signed = anchor.trusted_at, min(anchor.signed_at, anchor.trusted_at)
            self._generation = anchor.generation
            same_boot = anchor.boot_id is not None and anchor.boot_id == source.boot_id
            if same_boot and mono >= anchor.at_monotonic:
                self._floor += mono - anchor.at_monotonic
                self._signed += mono - anchor.at_monotonic

    @property
    def generation(self) -> int:
        """How many times a floor raised by the wall clock has been corrected."""
        return self._generation

    def now(self) -> float:
        """Trusted time now; never earlier than any value it returned before (unless :meth:`correct`-ed)."""
        return self._read(self._source.monotonic())

    def signed_floor(self) -> float:
        """The latest accepted ``iat``, carried forward: what PROTOCOL.md promises trusted time never goes below."""
        return self._signed + (self._source.monotonic() - self._signed_mono)

    def advance_to(self, instant: float) -> None:
        """Raise the floor, and its signed part, to ``instant`` (an accepted document's ``iat``)."""
        mono = self._source.monotonic()
        if instant > self._read(mono):
            self._floor, self._floor_mono = instant, mono
        if instant > self._signed + (mono - self._signed_mono):
            self._signed, self._signed_mono = instant, mono

    def correctable(self) -> Correctable | None:
        """Whether the wall clock now reads so far below the floor that a fresh signed document may correct it."""
        mono = self._source.monotonic()
        floor = self._read(mono)
        wall = self._source.wall()
        if wall >= floor - SKEW:
            return None
        signed = self._signed + (mono - self._signed_mono)
        return Correctable(to=max(signed, wall), wall=wall)

    def corrected(self, to: float, iat: float) -> Anchor:
        """The anchor after :meth:`correct` (to persist before acting)."""
        mono = self._source.monotonic()
        signed = max(self._signed + (mono - self._signed_mono), iat)
        return Anchor(max(to, signed), self._source.boot_id, mono, signed, self._generation + 1)

    def correct(self, to: float, iat: float) -> None:
        """Bring the floor down to ``to`` (a :class:`Correctable` a fresh document with ``iat`` vouched for)."""
        anchor = self.corrected(to, iat)
        self._floor, self._signed = anchor.trusted_at, anchor.signed_at
        self._floor_mono = self._signed_mono = anchor.at_monotonic
        self._generation = anchor.generation

    def anchor(self, at_least: float = 0.0, *, signed_at_least: float = 0.0) -> Anchor:
        """What to persist so that a later process never reads an earlier time (nor ``at_least``)."""
        mono = self._source.monotonic()
        signed = max(self._signed + (mono - self._signed_mono), signed_at_least)
        trusted = max(self._read(mono), at_least, signed)
        return Anchor(trusted, self._source.boot_id, mono, signed, self._generation)

    def _read(self, mono: float) -> float:
        carried = self._floor + (mono - self._floor_mono)
        wall = self._source.wall()
        if wall > carried:
            self._floor, self._floor_mono = wall, mono
            return wall
        return carried
