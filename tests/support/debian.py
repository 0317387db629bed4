"""Debian for the package's tests: the package built by ``deploy/debian/build.py``, a minimal bookworm root
made by mmdebstrap (once, then kept under /var/tmp: three minutes a build), and a :class:`Container` that
boots a copy of it with systemd-nspawn and runs commands in it through nsenter, as an operator at the
board's console would.

``--register=no --keep-unit``: no machined here (without ``--keep-unit`` nspawn fails with "Failed to open
system bus"); ``--private-network``: the container's 127.0.0.1 is its own, so the agent inside can only
reach a broker started inside.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
CACHE: Final = Path(os.environ.get("EDGE_AGENT_TEST_CACHE", "/var/tmp/edge-agent-tests"))
SUITE: Final = "bookworm"
# What a small Debian board has: systemd as init, D-Bus, Python 3.11; Mosquitto for a broker inside
# (disabled: the tests start it when they want the agent to find one); iproute2 for nothing but a human.
BOOTABLE: Final = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "mosquitto")
PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time (two test processes may want the same root)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _root(name: str, arguments: list[str]) -> Path:
    """``mmdebstrap ARGUMENTS`` into CACHE/NAME-<digest of the arguments>, made once and kept."""
    digest = hashlib.sha256("\0".join(arguments).encode()).hexdigest()[:12]
    root = CACHE / f"{name}-{digest}"
    with _locked(name):
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            partial = root.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(["mmdebstrap", "--quiet", *arguments, SUITE, str(partial)], check=True,
                           capture_output=True, timeout=1200)  # fmt: skip
            partial.rename(root)
            (root / ".complete").touch()
    return root


def bootable_root() -> Path:
    """A minimal bookworm that boots with systemd (~3 minutes the first time, then kept)."""
    return _root(
        "bookworm-bootable",
        ["--variant=minbase", f"--include={','.join(BOOTABLE)}",
         "--customize-hook=chroot \"$1\" systemctl disable mosquitto.service"],
    )  # fmt: skip


def arm64_root() -> Path:
    """bookworm's arm64 python3.11 and what it needs, unpacked only (no maintainer script runs: it would
    need emulation), ~12 s the first time."""
    return _root("bookworm-arm64", ["--arch=arm64", "--variant=extract", "--include=python3.11"])


def emulate_aarch64() -> None:
    """arm64 programs run here through qemu-user (Debian's qemu-user-static and binfmt-support, which
    .ci/run installs): binfmt_misc mounted and qemu-aarch64 enabled, as root."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=True, capture_output=True)
    if not (binfmt / "qemu-aarch64").exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True, capture_output=True)
    assert (binfmt / "qemu-aarch64").read_text().startswith("enabled"), "qemu-aarch64 is not enabled"


def package(arch: str, out: Path) -> Path:
    """The edge-agent package for ``arch``, built as ``make deb`` builds it."""
    built = subprocess.run([sys.executable, str(REPO / "deploy" / "debian" / "build.py"), "--arch", arch, "--out",
                            str(out)], check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    return Path(built.stdout.strip().splitlines()[-1])


class Container:
    """A copy of a root booted by systemd-nspawn; :meth:`run` runs a command inside, as root."""

    def __init__(self, source: Path, directory: Path) -> None:
        self.root = directory / "root"
        self.log = directory / "nspawn.log"
        subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(self.root)], check=True, timeout=300)
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = 90) -> None:
        with self.log.open("wb") as log:
            self._nspawn = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", "--private-network",
                 "--console=passive", "-D", str(self.root)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.leader:
            assert self._nspawn.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the container's init never started"
            # nspawn's first child is a copy of itself that sets up the namespaces and forks the container's
            # init: only a child that runs systemd is the leader (an nsenter into the copy fails once it exits).
            self.leader = next((c for c in _children(self._nspawn.pid) if _comm(c) == "systemd"), 0)
            time.sleep(0.1)
        while True:  # systemd up: "running", or "degraded" (a unit of the minimal root that failed)
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, f"the container did not finish booting: {state}"
            time.sleep(0.2)

    def run(
        self, *command: str, check: bool = True, user: str | None = None, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``command`` inside the container, as root (or ``user``), with a clean environment."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        done = subprocess.run(
            ["nsenter", "--target", str(self.leader), "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
             "--root", "--wd", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", *prefix, *command],
            capture_output=True, text=True, timeout=timeout, check=False, input=input,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def in_network(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command of this machine's (the test's own python, say) in the container's network only: it
        reaches the container's 127.0.0.1."""
        return subprocess.run(["nsenter", "--target", str(self.leader), "--net", *command], capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip

    def stop(self) -> None:
        if self._nspawn is None:
            return
        if self._nspawn.poll() is None:
            self._nspawn.terminate()  # nspawn asks the container's systemd to power off
            try:
                self._nspawn.wait(60)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait(30)
        self._nspawn = None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # gone meanwhile
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found
