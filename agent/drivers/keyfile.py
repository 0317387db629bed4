"""Secret key files of the drivers (MR01 sensor keys, OSDP Secure Channel keys): readable by the agent only."""

from __future__ import annotations

import re
from pathlib import Path


def read_private(path: Path) -> str:
    """The text of ``path``; ``ValueError`` if it cannot be read, or if others may read it (a secret)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & 0o077:
        raise ValueError(f"{path} may be read by others (mode {mode & 0o777:o}): chmod 600 it")
    return text


def read_scbk(path: Path) -> bytes:
    """An OSDP Secure Channel Base Key: one line of 32 hex digits (``#`` comments allowed)."""
    lines = [line.split("#", 1)[0].strip() for line in read_private(path).splitlines()]
    keys = [line for line in lines if line]
    if len(keys) != 1 or not re.fullmatch(r"[0-9a-fA-F]{32}", keys[0]):
        raise ValueError(f"{path}: expected one key of 32 hex digits (16 bytes)")
    return bytes.fromhex(keys[0])
