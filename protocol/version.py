"""Firmware versions: dotted numbers compared component by component (``29.30.2.805 < 29.30.10.1``)."""

from __future__ import annotations

import re
from typing import Final

_VERSION: Final = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,7}")


def parse(version: str) -> tuple[int, ...]:
    """``"29.30.2.805"`` -> ``(29, 30, 2, 805)``; ``ValueError`` for anything else."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"{version!r} is not a dotted version like 29.30.2.805")
    return tuple(int(part) for part in version.split("."))


def newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` is newer than ``current``; missing components count as 0 (1.2 == 1.2.0)."""
    a, b = parse(candidate), parse(current)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) > b + (0,) * (width - len(b))
