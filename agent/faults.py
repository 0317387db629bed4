"""Crash points: where the tests kill the daemon at a chosen instant (docs/firmware.md "Testing").

``SMARTPLUS_CRASH_AT=<point>`` in a daemon's environment makes it SIGKILL itself when it reaches that
point: the same death as a power cut to the process, at an instant a test could not otherwise hit (a
state persisted, its side effect not yet done). Unset, a crash point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Final

CRASH_ENV: Final = "SMARTPLUS_CRASH_AT"  # not EDGE_AGENT_*: those are settings


def crash_point(name: str) -> None:
    """Die here, as SIGKILL would, if the environment names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
