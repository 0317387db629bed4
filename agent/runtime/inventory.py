"""The device's inventory, carried by the state report (docs/operations.md "Inventory").

What a fleet operator filters devices by, as Mender's inventory has it: the agent's version, the kernel,
the data directory's free space, the IP addresses, the hardware revision, and whatever the executables
in ``[inventory] directory`` print as ``key=value`` lines (a site's own attributes: the installer's
name, a cabinet number, a modem's signal). Collected as the daemon starts and every
``interval_seconds`` (the state report goes out again when it changed).

Bounded, since a script is an input like any other: each runs at most ``script_timeout_seconds`` (then
it is killed), its first :data:`MAX_OUTPUT` bytes are read, a key is 1-64 of ``[A-Za-z0-9_.-]``, a value
at most :data:`MAX_VALUE` characters, at most :data:`MAX_SCRIPTS` scripts and :data:`MAX_KEYS` keys in
all (the first script in name order wins a key). Anything else is counted in ``skipped``, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import platform
import re
import shutil
import signal
import socket
import struct
from pathlib import Path
from typing import Any, Final

import structlog

from agent.runtime.version import version

log = structlog.get_logger("agent.inventory")

MAX_SCRIPTS: Final = 32
MAX_KEYS: Final = 64
MAX_VALUE: Final = 256
MAX_OUTPUT: Final = 16 * 1024
_KEY: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SIOCGIFADDR: Final = 0x8915
_DEVICE_TREE_MODEL: Final = Path("/proc/device-tree/model")


def ip_addresses() -> list[str]:
    """The host's IPv4 (one per interface) and global IPv6 addresses, loopback and link-local left out."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address on it
                continue
            found.append(socket.inet_ntoa(answer[20:24]))
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
        for line in table:
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    kept = []
    for text in found:
        address = ipaddress.ip_address(text)
        if not (address.is_loopback or address.is_link_local) and text not in kept:
            kept.append(text)
    return sorted(kept)


def hardware_revision(configured: str | None) -> str | None:
    """The configured revision, else the device tree's model (a board's own name), else None."""
    if configured is not None:
        return configured
    try:
        return _DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00").decode(errors="replace")[:MAX_VALUE] or None
    except OSError:
        return None


def parse(output: bytes, into: dict[str, str]) -> int:
    """Add the ``key=value`` lines of ``output`` to ``into`` (bounded); how many lines were skipped."""
    skipped = 0
    for raw in output.decode(errors="replace").splitlines():
        key, equals, value = raw.partition("=")
        key, value = key.strip(), value.strip()
        if not raw.strip():
            continue
        if not equals or not _KEY.fullmatch(key) or len(value) > MAX_VALUE or len(into) >= MAX_KEYS:
            skipped += 1
        elif key not in into:
            into[key] = value
    return skipped


async def _run(script: Path, seconds: float) -> bytes:
    """The script's first MAX_OUTPUT bytes of output; it and whatever it started are killed at ``seconds``
    (its own process group: a child left behind would hold the pipe open)."""
    process = await asyncio.create_subprocess_exec(
        str(script), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(seconds):
            output = await process.stdout.read(MAX_OUTPUT)
            await process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group: the script and anything it left running
        await process.wait()
    if process.returncode != 0:
        raise OSError(f"exited {process.returncode}")
    return output


def _scripts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and os.access(p, os.X_OK))


async def attributes(directory: Path | None, seconds: float) -> tuple[dict[str, str], int]:
    """What the inventory scripts print; how many lines or scripts were skipped."""
    found: dict[str, str] = {}
    skipped = 0
    if directory is None:
        return found, skipped
    try:
        scripts = await asyncio.to_thread(_scripts, directory)
    except OSError as exc:
        log.warning("inventory_directory_unreadable", directory=str(directory), error=str(exc))
        return found, 1
    skipped += max(0, len(scripts) - MAX_SCRIPTS)
    for script in scripts[:MAX_SCRIPTS]:
        try:
            output = await _run(script, seconds)
        except (OSError, TimeoutError) as exc:
            log.warning("inventory_script_failed", script=script.name, error=str(exc) or "timed out")
            skipped += 1
            continue
        skipped += parse(output, found)
    return found, skipped


async def collect(config: Any) -> dict[str, Any]:
    """The inventory now."""
    settings = config.inventory
    try:
        free: int | None = shutil.disk_usage(config.data_dir).free
    except OSError:
        free = None
    found, skipped = await attributes(settings.directory, settings.script_timeout_seconds)
    return {
        "agent_version": version(),
        "kernel": platform.release(),
        "hardware_revision": hardware_revision(settings.hardware_revision),
        "data_free_bytes": free,
        "ip_addresses": await asyncio.to_thread(ip_addresses),
        "attributes": found,
        "skipped": skipped,
    }
