"""Slots on block devices: loop devices (real block devices, attached by the test) written with O_DIRECT,
fsync'd and read back from the device; a file where O_DIRECT is refused falls back to the page cache."""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import DownloadError
from firmware.download import fetch
from firmware.slots import CHUNK as SLOT_CHUNK
from firmware.slots import DeviceSlot
from tests.support.images import Fault, FaultyImageServer
from tests.support.loops import loop_device


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


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[FaultyImageServer, bytes]]:
    (tmp_path / "www").mkdir()
    data = os.urandom(5 * SLOT_CHUNK + 4321)  # not a whole number of blocks
    (tmp_path / "www" / "img").write_bytes(data)
    async with FaultyImageServer(tmp_path / "www") as server:
        yield server, data


async def test_a_download_streams_straight_into_a_device_slot(
    served: tuple[FaultyImageServer, bytes], tmp_path: Path
) -> None:
    """One pass: the bytes go from the socket into the device (O_DIRECT), hashed on the way; nothing is
    written in the data directory but the slot's small records; sealing gives the slot its version."""
    server, data = served
    digest = hashlib.sha256(data).hexdigest()
    meta = tmp_path / "meta"
    with loop_device(tmp_path / "slot-b.backing", 8 * 1024 * 1024) as device:
        slot = DeviceSlot(device, meta, "b")
        assert slot.capacity() == 8 * 1024 * 1024
        stream = slot.stream(digest, len(data))
        assert await fetch(server.url("img"), stream, len(data), stall=2, deadline=10) == digest
        assert stream.direct is True
        assert stream.kept(len(data)) == len(data)  # recorded complete
        assert stream.read_back == digest  # each durable part read back from the device as it went
        assert slot.version() is None  # not until it is sealed (verified by the engine)
        slot.seal("29.30.10.1", digest, len(data))
        assert (slot.version(), slot.digest()) == ("29.30.10.1", digest)  # read back from the device
        assert sorted(p.name for p in meta.iterdir()) == ["slot-b.json"]  # the partial record is gone
        with device.open("rb") as raw:
            assert raw.read(len(data)) == data


async def test_a_streamed_download_cut_short_resumes_at_the_recorded_offset(
    served: tuple[FaultyImageServer, bytes], tmp_path: Path
) -> None:
    """The connection drops mid-image: the device was fsync'd and its offset recorded every step, so the
    next attempt asks for the rest with Range from there (whole MiB), and the digest goes on from the
    device's first bytes. The slot's old version was removed before its first byte was overwritten."""
    server, data = served
    digest = hashlib.sha256(data).hexdigest()
    with loop_device(tmp_path / "slot-b.backing", 8 * 1024 * 1024) as device:
        slot = DeviceSlot(device, tmp_path / "meta", "b")
        old = tmp_path / "old.bin"
        old.write_bytes(b"\x01" * 4096)
        slot.write(old, "29.30.2.805", hashlib.sha256(old.read_bytes()).hexdigest())
        server.faults["img"] = Fault(close_after=3 * SLOT_CHUNK + 1000)
        stream = slot.stream(digest, len(data))
        assert stream.step == SLOT_CHUNK  # an eighth of the image, at least a MiB
        with pytest.raises(DownloadError):
            await fetch(server.url("img"), stream, len(data), stall=2, deadline=10)
        assert stream.read_back is None  # incomplete: nothing to vouch for
        assert slot.version() is None
        assert stream.kept(len(data)) == 3 * SLOT_CHUNK
        assert slot.stream("0" * 64, len(data)).kept(len(data)) == 0  # another image starts from zero
        del server.faults["img"]
        resumed = slot.stream(digest, len(data))
        assert await fetch(server.url("img"), resumed, len(data), stall=2, deadline=10) == digest
        assert resumed.read_back is None  # not all of it read back as it went: the engine reads the slot
        assert server.requests[-1] == ("img", f"bytes={3 * SLOT_CHUNK}-")
        with device.open("rb") as raw:
            assert raw.read(len(data)) == data
        slot.stream(digest, len(data)).clear()
        assert slot.stream(digest, len(data)).kept(len(data)) == 0


async def test_a_device_that_keeps_other_bytes_than_written_is_caught_as_it_streams(
    served: tuple[FaultyImageServer, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes received hash right, but the device stores one of them wrong (a failing flash, stood in for
    by a write that flips a byte on its way down): the stream's read-back, from the device, differs."""
    server, data = served
    digest = hashlib.sha256(data).hexdigest()
    real_pwrite = os.pwrite
    flipped: list[int] = []

    def failing_flash(fd: int, buffer: Any, offset: int) -> int:
        if offset == 2 * SLOT_CHUNK and not flipped:
            flipped.append(offset)
            with mmap.mmap(-1, len(buffer)) as spoiled:  # page-aligned, as O_DIRECT wants
                spoiled[:] = bytes(buffer)
                spoiled[100] ^= 0xFF
                return real_pwrite(fd, spoiled, offset)
        return real_pwrite(fd, buffer, offset)

    with loop_device(tmp_path / "slot-b.backing", 8 * 1024 * 1024) as device:
        slot = DeviceSlot(device, tmp_path / "meta", "b")
        stream = slot.stream(digest, len(data))
        monkeypatch.setattr(os, "pwrite", failing_flash)
        assert await fetch(server.url("img"), stream, len(data), stall=2, deadline=10) == digest  # as received
        assert flipped == [2 * SLOT_CHUNK]
        assert stream.read_back is not None
        assert stream.read_back != digest
        slot.seal("29.30.10.1", digest, len(data))
        assert slot.digest() == stream.read_back  # the same bytes, read back again after the stream
