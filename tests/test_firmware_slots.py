"""Slots on block devices: loop devices (real block devices, attached by the test) written with O_DIRECT,
fsync'd and read back from the device; a file where O_DIRECT is refused falls back to the page cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.slots import DeviceSlot


@contextlib.contextmanager
def loop_device(backing: Path, size: int) -> Iterator[Path]:
    backing.write_bytes(b"\xff" * size)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


@pytest.mark.parametrize("size", [3 * 1024 * 1024 + 123, 4096, 1])
def test_a_slot_on_a_loop_device_is_written_direct_and_reads_back(tmp_path: Path, size: int) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(size))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    with loop_device(tmp_path / "slot-b.backing", 8 * 1024 * 1024) as device:
        slot = DeviceSlot(device, tmp_path / "meta", "b")
        assert slot.version() is None
        slot.write(image, "29.30.10.1", digest)
        assert slot.direct is True  # around the page cache
        assert slot.digest() == digest  # read back from the device
        assert slot.version() == "29.30.10.1"
        with device.open("rb") as raw:
            assert raw.read(size) == image.read_bytes()
        # a slot whose device no longer holds what was written does not verify (the first byte flipped: a
        # fixed byte would equal a random image's first byte once in 256 runs)
        with device.open("r+b") as raw:
            raw.write(bytes([image.read_bytes()[0] ^ 0xFF]))
            os.fsync(raw.fileno())
        assert slot.digest() != digest


def test_a_slot_that_is_a_plain_file(tmp_path: Path) -> None:
    """A slot may be a file (an image file a board boots from): padded to whole blocks past the image when
    written direct, which the digest, reading only the image's size, never sees."""
    target = tmp_path / "slot-a.img"
    target.write_bytes(b"")
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(100_001))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    slot = DeviceSlot(target, tmp_path / "meta", "a")
    slot.write(image, "29.30.10.1", digest)
    assert slot.digest() == digest
    assert target.stat().st_size >= 100_001
