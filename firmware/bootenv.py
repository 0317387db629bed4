"""Real bootloaders: U-Boot (``fw_printenv``/``fw_setenv``) and GRUB (``grub-editenv``), behind
:class:`~firmware.slots.Bootloader` (docs/firmware.md "Wiring a real board").

The agent never writes an environment by hand: it runs the bootloader's own tools, which keep the
environment's CRC, its redundant copy and its lock. Slots ``a`` and ``b`` are ``A`` and ``B`` in the
environment. Which slot is running is read from the kernel command line (``rauc.slot=A``, which the
boot script appends, as RAUC's integration does): the environment says what boots *next*.

**U-Boot**, the standard bootcount scheme: ``boot_part`` is the slot to boot; ``upgrade_available=1``
makes U-Boot count boots in ``bootcount``, and past ``bootlimit`` (1: one try) run ``altbootcmd``,
which boots the other slot and clears ``upgrade_available``.

* try ``S`` once: ``boot_part=S upgrade_available=1 bootcount=0``;
* commit ``S``: ``boot_part=S upgrade_available=0 bootcount=0``;
* mark ``S`` bad: ``boot_part=<the other>`` if it was ``S``, ``upgrade_available=0 bootcount=0``.

**GRUB**, a one-shot entry in ``grubenv`` (``deploy/grub/grub.cfg``): ``boot_part`` is the committed
slot; ``try_part``, when set, is booted once and cleared by GRUB as it boots it (``save_env``).

* try ``S`` once: ``try_part=S``; commit ``S``: ``boot_part=S``, ``try_part`` unset; mark ``S`` bad:
  ``try_part`` unset if it was ``S``, ``boot_part=<the other>`` if it was ``S``.

``simulate_boot`` (tests, the demo): :meth:`boot` plays the boot script at the agent's start, with the
same tools on the same environment, and writes the command line file: what U-Boot or GRUB does at
power-on. On a device it is off: the bootloader has already chosen, and :meth:`boot` only reads.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from agent.errors import BootEnvError
from firmware.slots import SLOTS

TOOL_SECONDS: Final = 30.0
_NAMES: Final = {"a": "A", "b": "B"}
_SLOTS: Final = {v: k for k, v in _NAMES.items()}


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 -- the bootloader's own tools, argv from us, no shell
            args, capture_output=True, text=True, timeout=TOOL_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BootEnvError(f"{args[0]}: {exc}") from None
    if done.returncode != 0:
        raise BootEnvError(f"{' '.join(args[:1])} exited {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout


def _other(slot: str) -> str:
    return "b" if slot == "a" else "a"


class UBootEnv:
    """U-Boot's environment through ``fw_printenv`` / ``fw_setenv`` (libubootenv or u-boot-tools)."""

    def __init__(self, config: Path | None) -> None:
        self._config = ["-c", str(config)] if config is not None else []

    def read(self) -> dict[str, str]:
        out = _run(["fw_printenv", *self._config])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write(self, values: dict[str, str | None]) -> None:
        """Set (None: delete) every value in one write of the environment."""
        script = "".join(f"{k}={'' if v is None else v}\n" for k, v in values.items())
        with tempfile.NamedTemporaryFile("w", prefix="fw_setenv-", suffix=".txt") as f:
            f.write(script)
            f.flush()
            _run(["fw_setenv", *self._config, "-s", f.name])


class GrubEnv:
    """GRUB's ``grubenv`` through ``grub-editenv``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        if not self.path.exists():
            _run(["grub-editenv", str(self.path), "create"])
        out = _run(["grub-editenv", str(self.path), "list"])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write(self, values: dict[str, str | None]) -> None:
        sets = [f"{k}={v}" for k, v in values.items() if v is not None]
        unsets = [k for k, v in values.items() if v is None]
        if sets:
            _run(["grub-editenv", str(self.path), "set", *sets])
        if unsets:
            _run(["grub-editenv", str(self.path), "unset", *unsets])


def _write_cmdline(path: Path, slot: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"console=ttyS0 root=PARTLABEL=root-{_NAMES[slot]} rauc.slot={_NAMES[slot]}\n")
    os.replace(temporary, path)


class _EnvBootloader:
    """What both schemes share: the running slot from the kernel command line."""

    def __init__(self, cmdline: Path, simulate: bool) -> None:
        self._cmdline, self._simulate = cmdline, simulate

    def booted(self) -> str:
        try:
            words = self._cmdline.read_text().split()
        except OSError:
            words = []
        for word in words:
            key, _, value = word.partition("=")
            if key in ("rauc.slot", "edge.slot") and value in _SLOTS:
                return _SLOTS[value]
        return self._committed()  # no marker (a board not wired for it yet): the committed slot

    def other(self) -> str:
        return _other(self.booted())

    def boot(self) -> str:
        if self._simulate:
            _write_cmdline(self._cmdline, self._power_on())
        return self.booted()

    env: UBootEnv | GrubEnv

    def _committed(self) -> str:
        return _SLOTS.get(self.env.read().get("boot_part", "A"), "a")

    def _power_on(self) -> str:
        raise NotImplementedError


class UBootBootloader(_EnvBootloader):
    """The U-Boot bootcount scheme (module docstring)."""

    def __init__(self, env: UBootEnv, cmdline: Path, simulate: bool = False) -> None:
        super().__init__(cmdline, simulate)
        self.env = env

    def _power_on(self) -> str:
        """What U-Boot's boot script does: count a try, past bootlimit run altbootcmd."""
        env = self.env.read()
        part = _SLOTS.get(env.get("boot_part", "A"), "a")
        if env.get("upgrade_available") == "1":
            count = int(env.get("bootcount", "0") or 0) + 1
            if count > int(env.get("bootlimit", "1") or 1):  # altbootcmd: back to the other slot
                part = _other(part)
                self.env.write({"boot_part": _NAMES[part], "upgrade_available": "0", "bootcount": "0"})
            else:
                self.env.write({"bootcount": str(count)})
        return part

    def try_once(self, slot: str) -> None:
        self.env.write({"boot_part": _NAMES[slot], "upgrade_available": "1", "bootcount": "0"})

    def mark_good(self, slot: str) -> None:
        self.env.write({"boot_part": _NAMES[slot], "upgrade_available": "0", "bootcount": "0"})

    def mark_bad(self, slot: str) -> None:
        env = self.env.read()
        values: dict[str, str | None] = {"upgrade_available": "0", "bootcount": "0"}
        if _SLOTS.get(env.get("boot_part", "A"), "a") == slot:
            values["boot_part"] = _NAMES[_other(slot)]
        self.env.write(values)


class GrubBootloader(_EnvBootloader):
    """The GRUB one-shot scheme (module docstring, deploy/grub/grub.cfg)."""

    def __init__(self, env: GrubEnv, cmdline: Path, simulate: bool = False) -> None:
        super().__init__(cmdline, simulate)
        self.env = env

    def _power_on(self) -> str:
        """What grub.cfg does: boot try_part once (cleared as it boots), else boot_part."""
        env = self.env.read()
        tried = env.get("try_part", "")
        if tried in _SLOTS:
            self.env.write({"try_part": None})
            return _SLOTS[tried]
        return _SLOTS.get(env.get("boot_part", "A"), "a")

    def try_once(self, slot: str) -> None:
        self.env.write({"try_part": _NAMES[slot]})

    def mark_good(self, slot: str) -> None:
        self.env.write({"boot_part": _NAMES[slot], "try_part": None})

    def mark_bad(self, slot: str) -> None:
        env = self.env.read()
        values: dict[str, str | None] = {}
        if env.get("try_part") == _NAMES[slot]:
            values["try_part"] = None
        if _SLOTS.get(env.get("boot_part", "A"), "a") == slot:
            values["boot_part"] = _NAMES[_other(slot)]
        if values:
            self.env.write(values)


assert set(_NAMES) == set(SLOTS)
