"""Loop devices as block-device slots (real block devices the kernel makes of a file): attached by the
tests and the benchmarks, detached on the way out."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def loop_device(backing: Path, size: int, fill: bytes = b"\xff") -> Iterator[Path]:
    """A loop device over ``backing``, made ``size`` bytes of ``fill`` (sparse when ``fill`` is empty)."""
    if fill:
        backing.write_bytes(fill * size)
    else:
        with backing.open("wb") as f:
            f.truncate(size)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


@contextlib.contextmanager
def loop_slots(directory: Path, size: int, fill: bytes = b"\x00") -> Iterator[dict[str, str]]:
    """Slots a and b as two loop devices of ``size`` bytes: {name: device path}."""
    with (
        loop_device(directory / "slot-a.backing", size, fill) as a,
        loop_device(directory / "slot-b.backing", size, fill) as b,
    ):
        yield {"a": str(a), "b": str(b)}
