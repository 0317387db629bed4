"""RAUC as the slot writer and bootloader, for devices that already run it (docs/firmware.md "RAUC").

The firmware image the job names is then a RAUC **bundle**. The engine downloads it and checks its size
and SHA-256 against the signed job as for any image; :class:`RaucSlot` hands it to the RAUC service
(``rauc install``, over D-Bus), which checks the bundle's own signature against its keyring and the
image hashes of its manifest, writes the inactive slot and makes it primary (its bootloader backend).
The slot then holds the image, not the bundle, so the slot's digest the engine compares is the
bundle's, recorded once RAUC has installed it: RAUC verified what it wrote.

:class:`RaucBootloader` reads the booted slot from ``rauc status`` (once, at start: it cannot change
without a reboot) and maps the engine's calls onto RAUC's: try once = ``mark-active`` of the other
slot (RAUC's install already did), commit = ``mark-good`` and ``mark-active`` of the booted slot, bad =
``mark-bad`` and the other slot made active. How many tries a primary slot gets is the bootloader
integration's (RAUC's bootchooser, or the board's script): one, for this agent's resume table.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Final

from agent.errors import BootEnvError
from firmware.slots import read_meta

TOOL_SECONDS: Final = 600.0  # an install writes a whole slot
_SLOTS: Final = {"A": "a", "B": "b"}


class Rauc:
    """The ``rauc`` command, talking to the RAUC service on the system bus (or ``bus``)."""

    def __init__(self, bus: str | None = None) -> None:
        self._env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus} if bus else None

    def run(self, *args: str) -> str:
        command = ["rauc", *args]
        try:
            done = subprocess.run(  # noqa: S603 -- RAUC's own tool, argv from us, no shell
                command, capture_output=True, text=True, timeout=TOOL_SECONDS, check=False, env=self._env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BootEnvError(f"rauc {args[0]}: {exc}") from None
        if done.returncode != 0:
            raise BootEnvError(f"rauc {args[0]} exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return done.stdout

    def status(self) -> dict[str, Any]:
        data = json.loads(self.run("status", "--output-format=json"))
        return data if isinstance(data, dict) else {}


class RaucSlot:
    """A slot RAUC writes; what it holds is kept in ``data_dir/slots/slot-<name>.json``."""

    def __init__(self, rauc: Rauc, meta_dir: Path, name: str) -> None:
        self.name, self._rauc = name, rauc
        self._meta = meta_dir / f"slot-{name}.json"

    def _read(self) -> dict[str, Any]:
        return read_meta(self._meta)

    def write(self, image: Path, version: str, sha256: str) -> None:
        self._meta.parent.mkdir(parents=True, exist_ok=True)
        self._meta.unlink(missing_ok=True)
        try:
            self._rauc.run("install", str(image))
        except BootEnvError as exc:
            raise OSError(str(exc)) from None  # the engine's install_failed
        self._meta.write_text(json.dumps({"version": version, "sha256": sha256}))
        with self._meta.open("rb+") as meta:
            os.fsync(meta.fileno())

    def digest(self) -> str:
        return str(self._read().get("sha256", ""))

    def version(self) -> str | None:
        version = self._read().get("version")
        return version if isinstance(version, str) else None


class RaucBootloader:
    """RAUC's view of the slots (module docstring)."""

    def __init__(self, rauc: Rauc) -> None:
        self._rauc = rauc
        self._booted: str | None = None

    def boot(self) -> str:
        self._booted = None
        return self.booted()

    def booted(self) -> str:
        if self._booted is None:
            self._booted = _SLOTS.get(str(self._rauc.status().get("booted")), "a")
        return self._booted

    def other(self) -> str:
        return "b" if self.booted() == "a" else "a"

    def _which(self, slot: str) -> str:
        return "booted" if slot == self.booted() else "other"

    def try_once(self, slot: str) -> None:
        self._rauc.run("status", "mark-active", self._which(slot))

    def mark_good(self, slot: str) -> None:
        which = self._which(slot)
        self._rauc.run("status", "mark-good", which)
        self._rauc.run("status", "mark-active", which)

    def mark_bad(self, slot: str) -> None:
        which = self._which(slot)
        self._rauc.run("status", "mark-bad", which)
        self._rauc.run("status", "mark-active", "other" if which == "booted" else "booted")
