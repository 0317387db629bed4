"""Identifiers on the wire (PROTOCOL.md "Identifiers"): event ids are RFC 9562 UUIDs of version 7."""

from __future__ import annotations

import os
from typing import Final

_random_hex = ""
_random_at = 0
_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # variant 10, two random bits
_last_ms = -1
_ms_prefix = ""


def uuid7(now: float) -> str:
    """An RFC 9562 UUID version 7: 48 bits of Unix milliseconds, then 74 random bits.

    Made as text, as it is stored and sent: the time part formatted once per millisecond (a burst
    shares it), the random part hex from the OS's random source, read 4 KiB at a time (one system
    call per ~420 ids): 12 bits, the variant with 2 more, then 60. This runs for every event raised.
    """
    global _random_hex, _random_at, _last_ms, _ms_prefix
    ms = int(now * 1000) & 0xFFFF_FFFF_FFFF
    if ms != _last_ms:
        text = f"{ms:012x}"
        _last_ms, _ms_prefix = ms, f"{text[:8]}-{text[8:]}-7"
    at = _random_at
    if at + 19 > len(_random_hex):
        _random_hex, at = os.urandom(4096).hex(), 0
    _random_at = at + 19
    r = _random_hex[at : at + 19]
    return f"{_ms_prefix}{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:]}"
