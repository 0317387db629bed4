"""``edge-agent doctor``: what an installer checks before walking away from a device.

Each check returns a :class:`Finding` (``ok``, ``warn`` or ``fail`` with a one-line detail); the CLI
prints them and exits 1 if any failed. Checks: the config; the trust roots and TLS files (readable,
the right kind, certificates in date); the clock (the wall clock against the trusted time the device
has proven); the broker (TCP, TLS and an MQTT login, with a client id of its own so a running daemon
is not disturbed); the disk (free space, the database's integrity); and whether a daemon answers.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from agent.config import Config

MIN_FREE_BYTES = 64 * 1024 * 1024


class Finding(NamedTuple):
    check: str
    status: str  # ok, warn, fail
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail}


def keys(config: Config) -> list[Finding]:
    from cryptography import x509

    from agent.config import load_trust_roots
    from agent.errors import ConfigError

    found = []
    try:
        roots = load_trust_roots(config)
        found.append(Finding("trust roots", "ok", f"{len(roots)} Ed25519 key(s)"))
    except ConfigError as exc:
        found.append(Finding("trust roots", "fail", str(exc)))
    mqtt = config.mqtt
    for label, path in (("CA file", mqtt.ca_file), ("client certificate", mqtt.cert_file)):
        if path is None:
            continue
        try:
            certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            found.append(Finding(label, "fail", f"{path}: {exc}"))
            continue
        left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        if left.total_seconds() <= 0:
            found.append(Finding(label, "fail", f"{path} expired on {certificate.not_valid_after_utc:%Y-%m-%d}"))
        elif left.days < 30:
            found.append(Finding(label, "warn", f"{path} expires in {left.days} days"))
        else:
            found.append(Finding(label, "ok", f"{path}, valid until {certificate.not_valid_after_utc:%Y-%m-%d}"))
    if mqtt.key_file is not None:
        mode = Path(mqtt.key_file).stat().st_mode & 0o077 if Path(mqtt.key_file).exists() else None
        if mode is None:
            found.append(Finding("client key", "fail", f"{mqtt.key_file} is missing"))
        elif mode:
            found.append(Finding("client key", "warn", f"{mqtt.key_file} is readable by others (chmod 600)"))
        else:
            found.append(Finding("client key", "ok", f"{mqtt.key_file}, owner-only"))
    return found


def clock(trusted_floor: float | None, now: float | None = None) -> Finding:
    """The wall clock against the latest trusted time the device has proven (its floor)."""
    wall = time.time() if now is None else now
    if wall < 1_700_000_000:
        return Finding("clock", "fail", f"the wall clock says {time.strftime('%Y-%m-%d', time.gmtime(wall))}: not set")
    if trusted_floor is not None and wall < trusted_floor - 60:
        behind = trusted_floor - wall
        return Finding("clock", "warn", f"the wall clock is {behind:.0f} s behind trusted time (the floor is used)")
    return Finding("clock", "ok", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall)))


def disk(config: Config) -> list[Finding]:
    data_dir = config.data_dir
    found = []
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        return [Finding("disk", "fail", f"{data_dir}: {exc}")]
    status = "ok" if free >= MIN_FREE_BYTES else "warn"
    found.append(Finding("disk", status, f"{free / 2**20:.0f} MiB free in {data_dir}"))
    database = data_dir / "agent.db"
    if database.exists():
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                result = db.execute("PRAGMA quick_check").fetchone()[0]
            found.append(Finding("database", "ok" if result == "ok" else "fail", f"{database}: {result}"))
        except sqlite3.Error as exc:
            found.append(Finding("database", "fail", f"{database}: {exc} (the daemon will quarantine it)"))
    else:
        found.append(Finding("database", "ok", "none yet (made on first start)"))
    return found


async def broker(config: Config, seconds: float = 5.0) -> Finding:
    import aiomqtt

    from agent.sync.client import tls_context

    mqtt = config.mqtt
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=f"{config.device_id}-doctor",
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        tls_context=tls_context(config),
        timeout=seconds,
    )
    try:
        async with asyncio.timeout(seconds + 1):
            async with client:
                pass
    except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
        return Finding("broker", "fail", f"{mqtt.url}: {exc or type(exc).__name__}")
    return Finding("broker", "ok", f"{mqtt.url}: logged in")


async def daemon(config: Config) -> Finding:
    from agent.control import server as control
    from agent.errors import ControlError

    try:
        async with asyncio.timeout(3):
            answer = await control.request(config.control_socket, {"op": "status"})
    except (ControlError, TimeoutError):
        return Finding("daemon", "warn", "no edge-agent is running on this data directory")
    status = answer.get("status", {})
    connected = "connected" if status.get("connected") else "not connected"
    return Finding("daemon", "ok", f"running, {connected}, mode {status.get('mode')}")
