"""The agent's version (``edge-agent --version``, ``edge_build_info``, the inventory)."""

from __future__ import annotations

import platform
from typing import Any

from agent import __version__


def version() -> str:
    """The agent's version: ``agent.__version__``, which the installed distribution's metadata is built from
    (pyproject.toml), read without importlib.metadata (0.8 MiB an idle daemon would hold for it)."""
    return __version__


def build_info(config: Any) -> dict[str, str]:
    """The labels of ``edge_build_info``: the agent's version, Python's, the device's model (the firmware
    running is in the state report and ``edge_firmware_state``: it changes without a new agent)."""
    return {"version": version(), "python": platform.python_version(), "model": str(config.model)}
