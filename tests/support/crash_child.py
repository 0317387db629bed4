"""Child process for test_crash: accepts pre-signed documents in order, printing each accepted seq.

Usage: python -m tests.support.crash_child CONFIG TOKEN_FILE... ; tokens already in force are skipped.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent.clock import ClockSource
from agent.config import load_config, load_trust_roots
from agent.device import Device
from agent.errors import DocumentRefused
from protocol import logs


async def main(config_path: str, tokens: list[str]) -> None:
    """Accept each token; print "accepted SEQ" once it is durable."""
    logs.configure("error")
    config = load_config(Path(config_path), {})
    device = await Device.open(config, load_trust_roots(config), ClockSource.system())
    print("ready", flush=True)
    for token in tokens:
        try:
            outcome = await device.accept(token, "entitlements")
        except DocumentRefused:
            continue  # already superseded before the previous kill
        print(f"accepted {outcome.seq}", flush=True)
    await device.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [Path(name).read_text() for name in sys.argv[2:]]))
