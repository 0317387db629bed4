"""Real bootloader environments for the firmware tests: a U-Boot environment file made by ``mkenvimage``
and read and written by ``fw_printenv``/``fw_setenv`` through an ``fw_env.config``; a ``grubenv`` made
by ``grub-editenv``. The agent plays the boot script at its start (``simulate_boot``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

ENV_SIZE = 0x4000


def bootloader_settings(directory: Path, kind: str) -> dict[str, Any]:
    """``[firmware]`` settings for ``kind`` (file, uboot, grub) with a fresh environment in ``directory``."""
    if kind == "file":
        return {}
    if kind == "rauc":  # RAUC's own service (tests/support/rauc.py): the caller names its bus
        return {"bootloader": "rauc"}
    directory.mkdir(parents=True, exist_ok=True)
    cmdline = directory / "cmdline"
    cmdline.write_text("console=ttyS0 rauc.slot=A\n")
    if kind == "uboot":
        text = directory / "uboot-env.txt"
        # What a board's default environment holds (docs/firmware.md): one try, then altbootcmd.
        text.write_text("boot_part=A\nbootlimit=1\nbootcount=0\nupgrade_available=0\n")
        image = directory / "uboot.env"
        subprocess.run(["mkenvimage", "-s", hex(ENV_SIZE), "-o", str(image), str(text)], check=True)
        config = directory / "fw_env.config"
        config.write_text(f"{image} 0x0000 {hex(ENV_SIZE)}\n")
        return {"bootloader": "uboot", "uboot_env_config": str(config), "cmdline": str(cmdline), "simulate_boot": True}
    grubenv = directory / "grubenv"
    subprocess.run(["grub-editenv", str(grubenv), "create"], check=True)
    subprocess.run(["grub-editenv", str(grubenv), "set", "boot_part=A"], check=True)
    return {"bootloader": "grub", "grubenv": str(grubenv), "cmdline": str(cmdline), "simulate_boot": True}
