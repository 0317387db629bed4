"""A/B slots and the bootloader's choice between them (docs/firmware.md "Slots on real hardware").

Two interfaces, as RAUC has them: a :class:`Slot` holds one root filesystem image; the
:class:`Bootloader` says which slot boots. The file-backed implementation keeps each slot as a file
in ``data_dir/slots`` and the bootloader's environment as a small ``key=value`` file written
atomically (temp file, fsync, rename, fsync of the directory), the way RAUC's tests stand in for
U-Boot's ``fw_setenv``:

``ORDER``
    the slots in boot order, good first (``a b``);
``GOOD_a`` / ``GOOD_b``
    1 once a slot is committed;
``TRY``
    a slot to boot **once** at the next boot (U-Boot's ``upgrade_available`` + ``bootcount``,
    GRUB's ``next_entry``); :meth:`FileBootloader.boot` clears it as it boots it, so a slot that dies
    before its health check commits it is never booted again;
``BOOTED``
    what the last boot chose.

:meth:`FileBootloader.boot` is what the bootloader does at power-on; the daemon calls it as it
starts, which is when a real device would have just booted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import queue
import shutil
import threading
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from agent.store.durable import fsync_path, write_whole

SLOTS: Final = ("a", "b")
CHUNK: Final = 1 << 20
_BLOCK: Final = 4096  # O_DIRECT writes whole blocks (the largest logical block size in use)
_READ: Final = 4 * CHUNK  # a slot is read back 4 MiB at a time


class Slot(Protocol):
    name: str

    def write(self, image: Path, version: str, sha256: str) -> None:
        """Write ``image`` into the slot, durably, and record what it is."""

    def digest(self) -> str:
        """The SHA-256 of what the slot holds."""

    def version(self) -> str | None:
        """The version written into the slot, if any."""


@runtime_checkable
class StreamingSlot(Slot, Protocol):
    """A slot a download is written straight into (one pass): a block device."""

    def capacity(self) -> int:
        """Bytes the slot can hold."""

    def stream(self, sha256: str, size: int) -> DeviceStream:
        """Where the download of that image goes."""

    def seal(self, version: str, sha256: str, size: int) -> None:
        """The streamed image is verified: record it as the slot's."""


class Bootloader(Protocol):
    def boot(self) -> str:
        """Choose the slot to run (consuming a pending try); the slot chosen."""

    def booted(self) -> str:
        """The slot running now."""

    def other(self) -> str:
        """The slot not running now: where an upgrade goes."""

    def try_once(self, slot: str) -> None:
        """Boot ``slot`` at the next boot only."""

    def mark_good(self, slot: str) -> None:
        """Commit ``slot``: it boots from now on."""

    def mark_bad(self, slot: str) -> None:
        """Never boot ``slot`` again until it is written anew."""


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read a MiB at a time (bench/bench_firmware.py measures it against hashlib)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_meta(path: Path) -> dict[str, Any]:
    """A slot's metadata file (version, size, SHA-256); empty if missing or unreadable (a half-written slot)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class FileSlot:
    """A slot that is a file, with its version beside it."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.path = directory / f"slot-{name}.img"
        self._meta = directory / f"slot-{name}.json"

    def write(self, image: Path, version: str, sha256: str) -> None:
        """Put ``image`` in the slot: fsync'd and moved there when it is on the same file system (no second
        copy), else copied and fsync'd. A write cut short after the move finds the image gone and the slot
        holding it: it only writes the version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._meta.unlink(missing_ok=True)  # a half-written slot has no version
        if not image.exists() and self.path.exists() and self.digest() == sha256:
            pass  # moved here by a write a kill cut short
        elif image.stat().st_dev == self.path.parent.stat().st_dev:
            with image.open("rb+") as downloaded:  # the download is not fsync'd (firmware/download.py)
                os.fsync(downloaded.fileno())
            os.replace(image, self.path)
        else:
            temporary = self.path.with_suffix(".tmp")
            with image.open("rb") as source, temporary.open("wb") as target:
                shutil.copyfileobj(source, target, CHUNK)
                target.flush()
                os.fsync(target.fileno())
            os.replace(temporary, self.path)
        self._meta.write_text(json.dumps({"version": version, "sha256": sha256}))
        with self._meta.open("rb+") as meta:
            os.fsync(meta.fileno())
        fsync_path(self.path.parent)

    def digest(self) -> str:
        return sha256_file(self.path) if self.path.exists() else ""

    def version(self) -> str | None:
        try:
            return str(json.loads(self._meta.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None


class FileBootloader:
    """The bootloader's environment as a file (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "boot.env"
        self.directory = directory

    def env(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"ORDER": "a b", "GOOD_a": "1", "GOOD_b": "0", "TRY": "", "BOOTED": "a"}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def _save(self, env: dict[str, str]) -> None:
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        fsync_path(self.directory)

    def boot(self) -> str:
        env = self.env()
        chosen = env.get("TRY", "")
        if chosen in SLOTS:
            env["TRY"] = ""  # one try: spent now, whatever happens next
        else:
            good = [s for s in env.get("ORDER", "a b").split() if env.get(f"GOOD_{s}") == "1"]
            chosen = good[0] if good else "a"
        env["BOOTED"] = chosen
        self._save(env)
        return chosen

    def booted(self) -> str:
        return self.env().get("BOOTED", "a")

    def other(self) -> str:
        return "b" if self.booted() == "a" else "a"

    def pending_try(self) -> str:
        return self.env().get("TRY", "")

    def try_once(self, slot: str) -> None:
        env = self.env()
        env["TRY"], env[f"GOOD_{slot}"] = slot, "0"
        self._save(env)

    def mark_good(self, slot: str) -> None:
        env = self.env()
        env[f"GOOD_{slot}"] = "1"
        env["ORDER"] = " ".join([slot, *(s for s in SLOTS if s != slot)])
        self._save(env)

    def mark_bad(self, slot: str) -> None:
        env = self.env()
        env[f"GOOD_{slot}"] = "0"
        if env.get("TRY") == slot:
            env["TRY"] = ""
        env["ORDER"] = " ".join([*(s for s in SLOTS if s != slot), slot])
        self._save(env)


def _open_for_writing(device: Path) -> tuple[int, bool]:
    """``device`` opened to write around the page cache (``O_DIRECT``) where it takes it; whether it did."""
    try:
        return os.open(device, os.O_WRONLY | os.O_DIRECT), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a file system without O_DIRECT (tmpfs): the page cache then
            raise
        return os.open(device, os.O_WRONLY), False


def _open_for_reading(device: Path) -> int:
    """``device`` opened to read the device itself, not the page cache: ``O_DIRECT`` where it takes it,
    else its cache dropped first. (Measured on a loop device: a 64 MiB read back in 46 ms with ``O_DIRECT``,
    106 ms through the page cache just dropped.)"""
    try:
        return os.open(device, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    fd = os.open(device, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return fd


def _hash_range(fd: int, digest: hashlib._Hash, start: int, end: int, buffer: mmap.mmap) -> None:
    """Bytes ``start`` (a whole block) up to ``end`` of ``fd`` into ``digest``; a device that ends sooner
    leaves the rest out (the digest then differs)."""
    at = start
    while at < end:
        n = os.preadv(fd, [buffer], at)
        if n <= 0:
            return
        take = min(n, end - at)
        with memoryview(buffer) as view:
            digest.update(view[:take])
        at += take


def _device_digest(device: Path, length: int) -> hashlib._Hash:
    """SHA-256 over the first ``length`` bytes of ``device``, read from the device (not its cache)."""
    digest = hashlib.sha256()
    fd, buffer = _open_for_reading(device), mmap.mmap(-1, _READ)  # page-aligned, as O_DIRECT wants
    try:
        _hash_range(fd, digest, 0, length, buffer)
    finally:
        os.close(fd)
        buffer.close()
    return digest


class _ReadBack:
    """Reads back from the device, in a thread of its own, each part of the image a :class:`DeviceStream`
    has made durable, and hashes it in order: the slot's read-back digest is ready as the download ends,
    instead of a second pass over the device after it (bench/bench_firmware.py)."""

    def __init__(self, device: Path) -> None:
        self.digest = hashlib.sha256()
        self.error: OSError | None = None
        self._fd, self._buffer = _open_for_reading(device), mmap.mmap(-1, _READ)
        self._queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="slot-read-back", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (part := self._queue.get()) is not None:
            try:
                if self.error is None:
                    _hash_range(self._fd, self.digest, *part, self._buffer)
            except OSError as exc:
                self.error = exc

    def check(self, start: int, end: int) -> None:
        """Read back bytes ``start`` up to ``end`` (durable on the device) after those before them."""
        self._queue.put((start, end))

    def finish(self) -> str | None:
        """The digest of all that was read back, or None if a read failed."""
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)
        self._buffer.close()
        return None if self.error is not None else self.digest.hexdigest()


class DeviceStream:
    """A download written straight into a block-device slot (``firmware/download.py``'s ``Sink``): one pass
    over the image, no copy in the data directory.

    Writes go out in whole 1 MiB blocks with ``O_DIRECT``; every ``step`` bytes (an eighth of the image,
    1 to 16 MiB) the device is fsync'd and the offset reached is recorded in ``slot-<name>.partial``
    (with the image's SHA-256 and size: another image starts from zero). After a kill the download
    resumes there with ``Range``, and its digest goes on from the device's first bytes read back. The
    slot's version is removed before its first byte is overwritten: a half-written slot never boots.

    A stream that writes the whole image in one go also reads each durable part back from the device as
    it goes (:class:`_ReadBack`); :attr:`read_back` is then the SHA-256 of the slot as the device holds it
    (None after a resumed or failed stream: the engine reads the slot back after it instead).
    """

    def __init__(self, device: Path, meta_dir: Path, name: str, sha256: str, size: int) -> None:
        self.device, self.sha256, self.size = device, sha256, size
        self._meta = meta_dir / f"slot-{name}.json"
        self._partial = meta_dir / f"slot-{name}.partial"
        self.step = min(max(size // 8 // CHUNK * CHUNK, CHUNK), 16 * CHUNK)
        self._fd: int | None = None
        self._buffer: mmap.mmap | None = None
        self._fill = 0  # bytes waiting in the buffer
        self._at = 0  # where the buffer goes on the device
        self._durable = 0  # offset fsync'd and recorded
        self.direct: bool | None = None
        self._read_back: _ReadBack | None = None
        self.read_back: str | None = None

    def kept(self, size: int) -> int:
        found = read_meta(self._partial)
        offset = found.get("offset")
        if found.get("sha256") != self.sha256 or found.get("size") != size or not isinstance(offset, int):
            return 0
        return offset if 0 <= offset <= size else 0

    def prefix_digest(self, length: int) -> hashlib._Hash:
        return _device_digest(self.device, length)

    def begin(self, have: int) -> None:
        if have % CHUNK and have != self.size:
            raise ValueError(f"a device stream resumes at whole blocks, not at byte {have}")
        self._meta.parent.mkdir(parents=True, exist_ok=True)
        if self._meta.exists():
            self._meta.unlink()  # a half-written slot has no version
            fsync_path(self._meta.parent)
        self._fd, self.direct = _open_for_writing(self.device)
        self._buffer = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT wants
        self._fill, self._at, self._durable = 0, have, have
        self.read_back = None
        self._read_back = _ReadBack(self.device) if have == 0 else None

    def write(self, chunk: bytes) -> None:
        assert self._buffer is not None
        view = memoryview(chunk)
        while view:
            n = min(CHUNK - self._fill, len(view))
            self._buffer[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == CHUNK:
                self._flush(CHUNK)
                if self._at - self._durable >= self.step:
                    self._record()

    def end(self, complete: bool) -> None:
        if self._fd is None:
            return
        try:
            if complete and self._fill:
                self._flush(-(-self._fill // _BLOCK) * _BLOCK if self.direct else self._fill)  # whole blocks
                self._at = self.size
            self._record()  # incomplete: what is buffered is fetched again
        finally:
            os.close(self._fd)
            self._fd = None
            if self._buffer is not None:
                self._buffer.close()
                self._buffer = None
            if self._read_back is not None:
                digest = self._read_back.finish()
                self.read_back = digest if complete and self._durable == self.size else None
                self._read_back = None

    def _flush(self, length: int) -> None:
        assert self._fd is not None
        assert self._buffer is not None
        if length > self._fill:
            self._buffer[self._fill : length] = bytes(length - self._fill)
        view = memoryview(self._buffer)[:length]
        try:
            written = 0
            while written < length:
                written += os.pwrite(self._fd, view[written:], self._at + written)
        finally:
            view.release()
        self._at += self._fill
        self._fill = 0

    def _record(self) -> None:
        """fsync the device, then record how far it holds the image."""
        assert self._fd is not None
        os.fsync(self._fd)
        if self._read_back is not None:
            self._read_back.check(self._durable, min(self._at, self.size))
        self._durable = self._at
        record = {"sha256": self.sha256, "size": self.size, "offset": self._at}
        write_whole(self._partial, json.dumps(record).encode(), 0o644)

    def clear(self) -> None:
        """Forget the partial image (another image, or this one refused)."""
        if self._partial.exists():
            self._partial.unlink()
            fsync_path(self._partial.parent)


class DeviceSlot:
    """A slot that is a block device (a partition, or a loop device): written with ``O_DIRECT`` where the
    device takes it, fsync'd, and read back from the device (its cache dropped) to verify. Its version,
    size and SHA-256 are kept in ``data_dir/slots/slot-<name>.json``.

    A download can go straight into it (:meth:`stream`, then :meth:`seal`): one pass. :meth:`write`
    copies an image file in (what a download into the data directory needs)."""

    def __init__(self, device: Path, meta_dir: Path, name: str) -> None:
        self.name, self.device = name, device
        self._meta_dir = meta_dir
        self._meta = meta_dir / f"slot-{name}.json"
        self.direct: bool | None = None  # whether the last write went around the page cache

    def _meta_read(self) -> dict[str, object]:
        return read_meta(self._meta)

    def capacity(self) -> int:
        """The device's size in bytes."""
        fd = os.open(self.device, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def stream(self, sha256: str, size: int) -> DeviceStream:
        """Where a download of the image with this digest and size goes: straight into the device."""
        return DeviceStream(self.device, self._meta_dir, self.name, sha256, size)

    def seal(self, version: str, sha256: str, size: int) -> None:
        """A streamed image is complete and verified: the slot now holds ``version``."""
        self._write_meta(version, sha256, size)
        self.stream(sha256, size).clear()

    def _write_meta(self, version: str, sha256: str, size: int) -> None:
        self._meta.write_text(json.dumps({"version": version, "sha256": sha256, "size": size}))
        with self._meta.open("rb+") as meta:
            os.fsync(meta.fileno())
        fsync_path(self._meta.parent)

    def write(self, image: Path, version: str, sha256: str) -> None:
        self._meta.parent.mkdir(parents=True, exist_ok=True)
        self._meta.unlink(missing_ok=True)  # a half-written slot has no version
        size = image.stat().st_size
        fd, self.direct = _open_for_writing(self.device)
        buffer = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT wants
        try:
            with image.open("rb", buffering=0) as source:
                while True:
                    n = source.readinto(buffer)
                    if not n:
                        break
                    length = n if not self.direct else -(-n // _BLOCK) * _BLOCK  # whole blocks
                    if length > n:
                        buffer[n:length] = bytes(length - n)
                    view = memoryview(buffer)[:length]
                    try:
                        written = 0
                        while written < length:
                            written += os.write(fd, view[written:])
                    finally:
                        view.release()
            os.fsync(fd)
        finally:
            os.close(fd)
            buffer.close()
        self._write_meta(version, sha256, size)

    def digest(self) -> str:
        size = self._meta_read().get("size")
        if not isinstance(size, int):
            return ""
        return _device_digest(self.device, size).hexdigest()

    def version(self) -> str | None:
        version = self._meta_read().get("version")
        return version if isinstance(version, str) else None
