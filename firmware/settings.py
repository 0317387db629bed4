"""What the firmware engine reads of the agent's config: its ``[firmware]`` section, the model and the
version of slot a, as one value (the engine is handed this, not the whole config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple


class Settings(NamedTuple):
    """What the engine needs of the agent's config (``[firmware]``)."""

    model: str
    base_version: str  # the version of slot a before any upgrade (the config's firmware_version)
    max_size: int
    stall_seconds: float
    deadline_seconds: float
    attempts: int
    health_deadline_seconds: float
    health_command: tuple[str, ...] | None
    ca_file: Path | None
    defer_max_seconds: float = 3600.0  # busy (a call, an open door) this long before installing: the job fails
    read_back: bool = True  # read the written slot back and check it (one more pass over the image)


def firmware_settings(config: Any) -> Settings:
    """The engine's settings from the agent's config."""
    f = config.firmware
    return Settings(
        model=config.model,
        base_version=config.firmware_version,
        max_size=f.max_size,
        stall_seconds=f.stall_seconds,
        deadline_seconds=f.deadline_seconds,
        attempts=f.attempts,
        health_deadline_seconds=f.health_deadline_seconds,
        health_command=f.health_command,
        ca_file=f.ca_file,
        defer_max_seconds=f.defer_max_seconds,
        read_back=f.read_back,
    )
