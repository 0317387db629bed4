"""The agent's version, as installed (``edge-agent --version``, ``edge_build_info``, the inventory)."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata
from typing import Any

DISTRIBUTION = "smartplus-edge"


@lru_cache(maxsize=1)
def version() -> str:
    """The installed distribution's version ("unknown" when run from a tree that was never installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_info(config: Any) -> dict[str, str]:
    """The labels of ``edge_build_info``: the agent's version, Python's, the device's model (the firmware
    running is in the state report and ``edge_firmware_state``: it changes without a new agent)."""
    return {"version": version(), "python": platform.python_version(), "model": str(config.model)}
