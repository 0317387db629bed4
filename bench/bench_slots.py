"""Installing a 64 MiB image into a slot on a block device (a loop device, attached here) beside ``dd``
with the same flags (``bs=1M oflag=direct conv=fsync``), in alternating rounds of the same run.

Ours is ``DeviceSlot.write`` (O_DIRECT, a page-aligned 1 MiB buffer, fsync); the read-back that
verifies the slot (its cache dropped: from the device) is a second row, as the extra pass it is.
Throughput ratios: above 1 is faster than ``dd``.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Result
from firmware.slots import DeviceSlot

SIZE = 64 * 1024 * 1024
ROUNDS = 9


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        base = Path(directory)
        image = base / "image.bin"
        image.write_bytes(os.urandom(SIZE))
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        backing = base / "slot.backing"
        backing.write_bytes(bytes(SIZE + 1024 * 1024))
        device = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            slot = DeviceSlot(Path(device), base / "meta", "b")
            dd = ["dd", f"if={image}", f"of={device}", "bs=1M", "oflag=direct", "conv=fsync,notrunc", "status=none"]
            floor, ours, checked, ratios = [], [], [], []
            for round_ in range(ROUNDS):
                for which in ("dd", "ours") if round_ % 2 else ("ours", "dd"):
                    started = time.perf_counter()
                    if which == "dd":
                        subprocess.run(dd, check=True)
                        floor.append(time.perf_counter() - started)
                    else:
                        slot.write(image, "bench", digest)
                        ours.append(time.perf_counter() - started)
                        started = time.perf_counter()
                        assert slot.digest() == digest
                        checked.append(time.perf_counter() - started)
                ratios.append(floor[-1] / ours[-1])
        finally:
            subprocess.run(["losetup", "--detach", device], check=False)
    f, o, c = statistics.median(floor), statistics.median(ours), statistics.median(checked)
    rauc_time, ours_file = _rauc()
    return [
        Result(
            "install 64 MiB into a block-device slot (throughput)",
            "dd bs=1M oflag=direct conv=fsync",
            f,
            o,
            statistics.median(ratios),
            ">= 0.9",
        ),
        Result(
            "install and read back to verify (throughput)",
            "dd bs=1M oflag=direct conv=fsync",
            f,
            o + c,
            f / (o + c),
            "info",
        ),
        Result(
            "install 64 MiB into a slot: RAUC 1.8's own install (plain bundle) vs ours",
            "ours: DeviceSlot.write of the same image",
            ours_file,
            rauc_time,
            rauc_time / ours_file,
            "info",
        ),
    ]


def _rauc() -> tuple[float, float]:
    """RAUC's install of a bundle holding the 64 MiB image into a raw file slot, beside ours writing the
    same image into a file slot on the same file system (median of alternating rounds)."""
    from tests.support.rauc import RaucSystem

    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        base = Path(directory)
        system = RaucSystem(base / "rauc").start()
        try:
            bundle = system.bundle(base, "29.30.10.1", size=SIZE)
            image = base / "bundle-content" / "rootfs.img"
            digest = hashlib.sha256(image.read_bytes()).hexdigest()
            env = {"DBUS_SYSTEM_BUS_ADDRESS": system.bus, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            target = base / "slot.img"
            target.write_bytes(b"")
            slot = DeviceSlot(target, base / "meta", "b")
            rauc_times, our_times = [], []
            for _ in range(5):
                started = time.perf_counter()
                subprocess.run(["rauc", "install", str(bundle)], env=env, check=True, capture_output=True)
                rauc_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                slot.write(image, "bench", digest)
                our_times.append(time.perf_counter() - started)
        finally:
            system.stop()
    return statistics.median(rauc_times), statistics.median(our_times)
