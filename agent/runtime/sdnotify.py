"""systemd's notify protocol (sd_notify(3)), the few lines of it the daemon needs.

``Type=notify``: the daemon says ``READY=1`` once it serves (control socket up, tasks running) and
``STOPPING=1`` when it stops. ``WatchdogSec=``: systemd sets ``WATCHDOG_USEC``; the daemon sends
``WATCHDOG=1`` at half that period from its event loop, so a loop that hangs is killed and restarted.
Without ``NOTIFY_SOCKET`` (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` to systemd; whether there was anyone to send it to."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
        return True
    return False


def watchdog_period() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when not asked for."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2
