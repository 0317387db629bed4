"""``edge-agent doctor``: what an installer checks before walking away from a device.

Each check returns a :class:`Finding` (``ok``, ``warn`` or ``fail`` with a one-line detail); the CLI
prints them and exits 1 if any failed. Checks: the config; the trust roots and TLS files (readable,
the right kind, certificates in date); the clock (the wall clock against the trusted time the device
has proven); the broker (TCP, TLS and an MQTT login, with a client id of its own so a running daemon
is not disturbed); the disk (free space, the database's integrity); whether a daemon answers; and
whether each wired OSDP reader and Modbus module answers.
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
from agent.drivers.wiring import ModbusModule

MIN_FREE_BYTES = 64 * 1024 * 1024
EXPIRES_SOON_DAYS = 30  # a certificate this close to its end is a warning


class Finding(NamedTuple):
    check: str
    status: str  # ok, warn, fail
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail}


def trust_roots(config: Config) -> Finding:
    """The configured root keys: each an Ed25519 public key."""
    from agent.config import load_trust_roots
    from agent.errors import ConfigError

    try:
        roots = load_trust_roots(config)
    except ConfigError as exc:
        return Finding("trust roots", "fail", str(exc))
    return Finding("trust roots", "ok", f"{len(roots)} Ed25519 key(s)")


def client_key(config: Config) -> list[Finding]:
    """The client key's file: there, and readable by its owner alone."""
    found = []
    mqtt = config.mqtt
    if mqtt.key_file is not None:
        mode = Path(mqtt.key_file).stat().st_mode & 0o077 if Path(mqtt.key_file).exists() else None
        if mode is None:
            found.append(Finding("client key", "fail", f"{mqtt.key_file} is missing"))
        elif mode:
            found.append(Finding("client key", "warn", f"{mqtt.key_file} is readable by others (chmod 600)"))
        else:
            found.append(Finding("client key", "ok", f"{mqtt.key_file}, owner-only"))
    return found


def _in_date(label: str, path: Path | str, not_after: datetime.datetime) -> Finding:
    left = not_after - datetime.datetime.now(datetime.UTC)
    if left.total_seconds() <= 0:
        return Finding(label, "fail", f"{path} expired on {not_after:%Y-%m-%d}")
    if left.days < EXPIRES_SOON_DAYS:
        return Finding(label, "warn", f"{path} expires in {left.days} days")
    return Finding(label, "ok", f"{path}, valid until {not_after:%Y-%m-%d}")


def certificates(config: Config) -> list[Finding]:
    """The CA file and the client certificate: each a certificate, in date (``edge-agent doctor``).

    Read with cryptography's X.509, which the daemon never imports (its ~10 MiB: docs/performance.md);
    a running daemon checks what the standard library can (:func:`tls_files`)."""
    from cryptography import x509

    found = []
    mqtt = config.mqtt
    for label, path in (("CA file", mqtt.ca_file), ("client certificate", mqtt.cert_file)):
        if path is None:
            continue
        try:
            certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            found.append(Finding(label, "fail", f"{path}: {exc}"))
            continue
        found.append(_in_date(label, path, certificate.not_valid_after_utc))
    return found


def tls_files(config: Config) -> list[Finding]:
    """The TLS files as a running daemon checks them, with the standard library's ``ssl``: the CA file
    loads and its certificates are in date; the client certificate loads with its key (they match).
    The client certificate's own dates are ``edge-agent doctor``'s (:func:`certificates`): ``ssl``
    decodes only CA certificates."""
    import ssl

    found = []
    mqtt = config.mqtt
    if mqtt.ca_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=str(mqtt.ca_file))
        except (OSError, ssl.SSLError) as exc:
            found.append(Finding("CA file", "fail", f"{mqtt.ca_file}: {exc}"))
        else:
            ends = [ssl.cert_time_to_seconds(str(c["notAfter"])) for c in context.get_ca_certs() if "notAfter" in c]
            if ends:
                first = datetime.datetime.fromtimestamp(min(ends), datetime.UTC)
                found.append(_in_date("CA file", mqtt.ca_file, first))
            else:
                found.append(Finding("CA file", "fail", f"{mqtt.ca_file}: no CA certificate in it"))
    if mqtt.cert_file is not None and mqtt.key_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file))
        except (OSError, ssl.SSLError) as exc:
            found.append(Finding("client certificate", "fail", f"{mqtt.cert_file}: {exc}"))
        else:
            found.append(Finding("client certificate", "ok", f"{mqtt.cert_file}, with its key"))
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


def disk(config: Config, *, database: bool = True) -> list[Finding]:
    """Free space in the data directory; with ``database``, the database's quick check too."""
    data_dir = config.data_dir
    found = []
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        return [Finding("disk", "fail", f"{data_dir}: {exc}")]
    status = "ok" if free >= MIN_FREE_BYTES else "warn"
    found.append(Finding("disk", status, f"{free / 2**20:.0f} MiB free in {data_dir}"))
    if not database:
        return found
    database_file = data_dir / "agent.db"
    if database_file.exists():
        try:
            with sqlite3.connect(f"file:{database_file}?mode=ro", uri=True) as db:
                result = db.execute("PRAGMA quick_check").fetchone()[0]
            found.append(Finding("database", "ok" if result == "ok" else "fail", f"{database_file}: {result}"))
        except sqlite3.Error as exc:
            found.append(Finding("database", "fail", f"{database_file}: {exc} (the daemon will quarantine it)"))
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
        tls_context=tls_context(mqtt),
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


async def hardware(config: Config, seconds: float = 4.0) -> list[Finding]:
    """Whether each wired reader and module answers: as the running daemon sees them (it owns the serial
    lines), or, with no daemon running, by asking each one here."""
    from agent.control import server as control
    from agent.errors import ConfigError, ControlError

    drivers = config.drivers
    if not (drivers.readers or drivers.modbus):
        return []
    try:
        async with asyncio.timeout(3):
            answer = await control.request(config.control_socket, {"op": "status"})
        seen = answer.get("status", {}).get("drivers", {})
    except (ControlError, TimeoutError):
        seen = None
    if seen is None:
        try:
            seen = await _probe(config, seconds)
        except ConfigError as exc:
            return [Finding("hardware", "fail", str(exc))]
    found = []
    for name, reader in sorted(drivers.readers.items()):
        online = seen.get(f"osdp:{reader.bus}", {}).get("readers", {}).get(name, {}).get("online")
        where = f"{reader.bus} address {reader.address}, {reader.door}"
        found.append(_answer(f"reader {name}", online, where))
    for name, module in sorted(drivers.modbus.items()):
        online = seen.get(f"modbus:{name}", {}).get("online")
        found.append(_answer(f"module {name}", online, f"{module.transport} {module.where()}"))
    return found


def _answer(check: str, online: object, where: str) -> Finding:
    if online is True:
        return Finding(check, "ok", f"answers ({where})")
    return Finding(check, "fail", f"does not answer ({where})" + (", or not yet" if online is None else ""))


async def _probe(config: Config, seconds: float) -> dict[str, dict[str, object]]:
    """Start the wired drivers here (no daemon holds the lines), wait for answers, stop them."""
    from agent.drivers.osdp import OsdpReaders
    from agent.drivers.registry import scbk_keys

    wiring = config.drivers.wiring()
    keys = scbk_keys(config.drivers)
    buses = [
        OsdpReaders(b, bus, {r: x for r, x in wiring.readers.items() if x.bus == b}, keys, time.time)
        for b, bus in wiring.buses.items()
    ]
    modules = [ModbusProbe(n, m) for n, m in wiring.modules.items()]
    seen: dict[str, dict[str, object]] = {}
    try:
        for bus in buses:
            await bus.start(lambda _stimulus: None)
        async with asyncio.timeout(seconds):
            for module in modules:
                seen[module.name] = {"online": await module.answers()}
            for _ in range(int(seconds * 10)):  # until every reader answers (the timeout bounds it)
                if all(all(bus.online().values()) for bus in buses):
                    break
                await asyncio.sleep(0.1)
    except (TimeoutError, OSError):
        pass
    finally:
        for bus in buses:
            bus.close()
    for bus in buses:
        seen[bus.name] = bus.stats()
    return seen


class ModbusProbe:
    """One read of coil 0 (nothing written: a doctor must not release a door)."""

    def __init__(self, name: str, module: ModbusModule) -> None:
        self.name, self.module = f"modbus:{name}", module

    async def answers(self) -> bool:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.exceptions import ModbusException

        m = self.module
        client = (
            AsyncModbusTcpClient(str(m.host), port=int(str(m.port)), timeout=m.timeout_seconds, retries=0)
            if m.transport == "tcp"
            else AsyncModbusSerialClient(str(m.port), baudrate=m.baudrate, timeout=m.timeout_seconds, retries=0)
        )
        try:
            if not await client.connect():
                return False
            reply = await client.read_coils(0, count=1, device_id=m.unit)
            return not reply.isError()
        except (ModbusException, OSError):
            return False
        finally:
            client.close()
