"""Crash points and fault points: where the tests kill the daemon, or make it fail, at a chosen instant.

``SMARTPLUS_CRASH_AT=<point>`` in a daemon's environment makes it SIGKILL itself when it reaches that
point: the same death as a power cut to the process, at an instant a test could not otherwise hit (a
state persisted, its side effect not yet done; docs/firmware.md "Testing"). ``SMARTPLUS_FAIL_AT=<point>``
makes it raise :class:`InjectedFault` there instead: a defect, to show that one message that trips
a bug is reported and dropped and the daemon goes on (docs/sync.md). Unset, either is one dictionary
lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Final

from agent.errors import InjectedFault

CRASH_ENV: Final = "SMARTPLUS_CRASH_AT"  # not EDGE_AGENT_*: those are settings
FAIL_ENV: Final = "SMARTPLUS_FAIL_AT"


def crash_point(name: str) -> None:
    """Die here, as SIGKILL would, if the environment names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fault_point(name: str) -> None:
    """Fail here, as a bug would, if the environment names this point."""
    if os.environ.get(FAIL_ENV) == name:
        raise InjectedFault(f"fault injected at {name}")
