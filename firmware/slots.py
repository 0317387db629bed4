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
import shutil
from pathlib import Path
from typing import Any, Final, Protocol

from agent.store.durable import fsync_path

SLOTS: Final = ("a", "b")
CHUNK: Final = 1 << 20
_BLOCK: Final = 4096  # O_DIRECT writes whole blocks (the largest logical block size in use)


class Slot(Protocol):
    name: str

    def write(self, image: Path, version: str, sha256: str) -> None:
        """Write ``image`` into the slot, durably, and record what it is."""

    def digest(self) -> str:
        """The SHA-256 of what the slot holds."""

    def version(self) -> str | None:
        """The version written into the slot, if any."""


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


class DeviceSlot:
    """A slot that is a block device (a partition, or a loop device): written with ``O_DIRECT`` where the
    device takes it, fsync'd, and read back from the device (its cache dropped) to verify. Its version,
    size and SHA-256 are kept in ``data_dir/slots/slot-<name>.json``."""

    def __init__(self, device: Path, meta_dir: Path, name: str) -> None:
        self.name, self.device = name, device
        self._meta = meta_dir / f"slot-{name}.json"
        self.direct: bool | None = None  # whether the last write went around the page cache

    def _meta_read(self) -> dict[str, object]:
        return read_meta(self._meta)

    def write(self, image: Path, version: str, sha256: str) -> None:
        self._meta.parent.mkdir(parents=True, exist_ok=True)
        self._meta.unlink(missing_ok=True)  # a half-written slot has no version
        size = image.stat().st_size
        try:
            fd = os.open(self.device, os.O_WRONLY | os.O_DIRECT)
            self.direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # a file system without O_DIRECT (tmpfs): the page cache then
                raise
            fd = os.open(self.device, os.O_WRONLY)
            self.direct = False
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
        self._meta.write_text(json.dumps({"version": version, "sha256": sha256, "size": size}))
        with self._meta.open("rb+") as meta:
            os.fsync(meta.fileno())
        fsync_path(self._meta.parent)

    def digest(self) -> str:
        size = self._meta_read().get("size")
        if not isinstance(size, int):
            return ""
        digest = hashlib.sha256()
        with self.device.open("rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read the device, not our own writes
            left = size
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        return digest.hexdigest()

    def version(self) -> str | None:
        version = self._meta_read().get("version")
        return version if isinstance(version, str) else None
