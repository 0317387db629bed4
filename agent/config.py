"""Configuration: a TOML file overlaid by ``EDGE_AGENT_*`` variables, validated once, then frozen.

The file is named by ``--config FILE`` or ``EDGE_AGENT_CONFIG``. A variable
``EDGE_AGENT_<KEY>`` overrides a top-level key and ``EDGE_AGENT_<TABLE>__<KEY>`` a key of a table
(``EDGE_AGENT_MQTT__URL``); a value that starts with ``[`` or ``{`` is read as JSON, and
``trust_roots`` also takes a comma-separated list. Relative paths are relative to the config file.

The keys every command needs (who the device is, where its data and keys are) are
:class:`~agent.core_config.CoreConfig`'s, read by the same rules; :class:`Config` adds the daemon's sections.

The sections are msgspec structs, converted from the file and variables as TOML gives them (a
variable's ``"30"`` taken for 30): msgspec rather than pydantic costs the device ~1.5 MiB against ~12
and a few milliseconds of a cold start against ~50 (docs/performance.md); the overlay is written here,
so that every error can name the variable it came from. Every problem becomes one
:class:`~agent.errors.ConfigError` naming the key, which the CLI prints as one line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from agent.core_config import (
    ENV_CONFIG,
    ENV_PREFIX,
    ControlConfig,
    CoreConfig,
    Secret,
    Section,
    StoreConfig,
    config_path,
    load_core_config,
    load_trust_roots,
    validated,
)
from agent.drivers.wiring import DoorWiring, Elevator, ModbusModule, OsdpBus, Reader, Wiring
from agent.drivers.wiring import check as check_wiring
from protocol.invalid import member

__all__ = [  # the core's names too: what every command needs is importable from here, as before
    "ENV_CONFIG", "ENV_PREFIX", "Config", "ControlConfig", "CoreConfig", "DriversConfig", "FirmwareConfig",
    "InventoryConfig", "MetricsConfig", "MqttConfig", "OutboxConfig", "Secret", "StoreConfig", "config_path",
    "load_config", "load_core_config", "load_trust_roots",
]  # fmt: skip


def _check_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise member("url", f"must start with mqtt:// or mqtts://, not {value!r}")
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise member("url", f"has a bad port: {value!r}") from None
    if not parts.hostname:
        raise member("url", f"names no host: {value!r}")
    if parts.username or parts.password:
        raise member("url", "must not carry credentials: use mqtt.username and mqtt.password")


class MqttConfig(Section, frozen=True, kw_only=True):
    """``[mqtt]``: how to reach the broker (used by the sync daemon)."""

    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "smartplus/v1"
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive: Annotated[int, Meta(ge=5, le=3600)] = 30
    timeout: Annotated[float, Meta(gt=0, le=300)] = 10.0  # seconds for CONNACK, SUBACK, a PUBACK
    session_expiry: Annotated[int, Meta(ge=60)] = 7 * 24 * 3600  # MQTT 5: how long the broker keeps the session
    in_flight: Annotated[int, Meta(ge=1, le=100)] = 10  # publishes awaiting PUBACK (aiomqtt degrades past 10)
    reconnect_min: Annotated[float, Meta(gt=0, le=60)] = 0.5  # backoff after a lost or failed connection
    reconnect_max: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    refused_min: Annotated[float, Meta(gt=0, le=3600)] = 30.0  # backoff after a refused login or certificate
    refused_max: Annotated[float, Meta(gt=0, le=86400)] = 600.0

    def __post_init__(self) -> None:
        _check_url(self.url)
        # PROTOCOL.md: no dots or spaces in topics (NATS refuses them); no wildcards or empty levels.
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", self.topic_prefix):
            raise member("topic_prefix", "must be levels of [A-Za-z0-9_-] separated by '/', like smartplus/v1")
        if self.reconnect_min > self.reconnect_max or self.refused_min > self.refused_max:
            raise ValueError("reconnect_min/refused_min must not exceed reconnect_max/refused_max")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        if (self.username is None) != (self.password is None) and self.password is not None:
            raise ValueError("password needs a username")
        if (self.cert_file or self.ca_file) and not self.url.startswith("mqtts://"):
            raise ValueError("ca_file/cert_file need an mqtts:// url")

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.url.startswith("mqtts://")

    @property
    def host(self) -> str:
        """The broker's host name or address."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The broker's port (1883, or 8883 with TLS, unless the url names one)."""
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class OutboxConfig(Section, frozen=True, kw_only=True):
    """``[outbox]``: how much the device keeps while it cannot send."""

    max_events: Annotated[int, Meta(ge=10, le=10_000_000)] = 100_000
    # Sent rows kept so the cloud can ask for them again (resync from_seq): a broker that acknowledged
    # a message can still lose it (a crash before it saved, a defect), and only the device has a copy.
    keep_sent: Annotated[int, Meta(ge=0, le=10_000_000)] = 10_000


class DriversConfig(Section, frozen=True, kw_only=True):
    """``[drivers]``: the hardware and the timings of the local logic (docs/drivers.md)."""

    kind: Literal["simulated"] = "simulated"  # the outputs (agent/drivers/registry.py OUTPUTS)
    inputs: tuple[Literal["mr01"], ...] = ()  # input sources to start (INPUTS); mr01 also whenever mr01_udp is set
    relay_seconds: Annotated[int, Meta(ge=1, le=60)] = 5  # how long a granted access keeps the door released
    held_open_seconds: Annotated[int, Meta(ge=5, le=3600)] = 30  # a door open longer than this raises held_open
    debounce_seconds: Annotated[float, Meta(ge=0, le=3600)] = 30.0  # the same MR01 alarm again within this: one
    sensor_silence_seconds: Annotated[int, Meta(ge=10, le=86_400)] = 300  # an MR01 quiet this long: sensor_offline
    battery_low_percent: Annotated[int, Meta(ge=1, le=99)] = 20
    call_seconds: Annotated[int, Meta(ge=10, le=3600)] = 120  # a call without call_ended is over after this
    # MR01 frames over UDP (agent/drivers/mr01.py): "port" (loopback) or "host:port" to listen on; port 0
    # picks a free one. Frames from another host count only when authenticated with a key of mr01_keys.
    mr01_udp: str | None = None
    mr01_keys: Path | None = None  # lines "<sensor mac> <key hex>", readable by the agent only
    # Real door hardware (agent/drivers/wiring.py, docs/drivers.md "Wiring"): OSDP buses and readers,
    # Modbus relay and I/O modules, and what of them each door and the elevator use.
    osdp: dict[str, OsdpBus] = msgspec.field(default_factory=dict)
    readers: dict[str, Reader] = msgspec.field(default_factory=dict)
    modbus: dict[str, ModbusModule] = msgspec.field(default_factory=dict)
    doors: dict[str, DoorWiring] = msgspec.field(default_factory=dict)
    elevator: Elevator = Elevator()

    def __post_init__(self) -> None:
        if self.mr01_udp is not None:
            host, sep, port = self.mr01_udp.rpartition(":")
            if (sep and not host) or not port.isdigit() or int(port) > 65535:
                raise member("mr01_udp", f"must be port or host:port, like 7700 or 0.0.0.0:7700, not {self.mr01_udp!r}")
            if not sep:
                msgspec.structs.force_setattr(self, "mr01_udp", f"127.0.0.1:{port}")
        self.wiring()  # member() names the key

    def wiring(self) -> Wiring:
        """The checked wiring (cheap: a few dict walks)."""
        return check_wiring(self.osdp, self.readers, self.modbus, self.doors, self.elevator)


class FirmwareConfig(Section, frozen=True, kw_only=True):
    """``[firmware]``: the upgrade engine (docs/firmware.md)."""

    max_size: Annotated[int, Meta(ge=1)] = 512 * 1024 * 1024  # a job with a larger image is refused
    stall_seconds: Annotated[float, Meta(gt=0, le=3600)] = 30.0  # no byte for this long: try again
    deadline_seconds: Annotated[float, Meta(gt=0)] = 3600.0  # the whole download
    attempts: Annotated[int, Meta(ge=1, le=100)] = 5
    health_deadline_seconds: Annotated[float, Meta(gt=0, le=3600)] = 60.0  # reach the broker within this
    health_command: tuple[str, ...] | None = None  # a local check: exit 0 healthy (argv, no shell)
    defer_max_seconds: Annotated[float, Meta(gt=0)] = 3600.0  # busy (a call, an open door) longer: the job fails
    ca_file: Path | None = None  # for https image URLs; default: the system's CAs
    read_back: bool = True  # read the written slot back and check its SHA-256: one more pass over the image
    bootloader: Literal["file", "uboot", "grub", "rauc"] = "file"  # who chooses the slot (firmware/backends.py)
    slots: Literal["file", "device", "rauc"] = "file"  # where images are written (firmware/backends.py SLOTS)
    rauc_bus: str | None = None  # the D-Bus address of the RAUC service (default: the system bus)
    # slots = "device": the two partitions (/dev/mmcblk0p2...)
    slot_devices: dict[Literal["a", "b"], Path] = msgspec.field(default_factory=dict)
    uboot_env_config: Path | None = None  # fw_env.config for fw_printenv/fw_setenv (default: /etc/fw_env.config)
    grubenv: Path = Path("/boot/grub/grubenv")
    cmdline: Path = Path("/proc/cmdline")  # where the running slot is read (rauc.slot=A)
    simulate_boot: bool = False  # tests and the demo: play the boot script at start (docs/firmware.md)

    def __post_init__(self) -> None:
        if self.slots == "device" and set(self.slot_devices) != {"a", "b"}:
            raise ValueError("slots = 'device' needs slot_devices for both a and b (their block devices)")
        if (self.slots == "rauc") != (self.bootloader == "rauc"):
            raise ValueError(
                "RAUC writes the slots and chooses the boot: slots and bootloader are both 'rauc' or neither"
            )


class MetricsConfig(Section, frozen=True, kw_only=True):
    """``[metrics]``: Prometheus metrics, on loopback unless an address is given (docs/operations.md)."""

    port: Annotated[int, Meta(ge=0, le=65535)] | None = None  # None: off; 0: any free port (logged)
    address: str = "127.0.0.1"  # an IP address: where a fleet's scraper reaches it (0.0.0.0, an interface's, ::)
    tls_cert: Path | None = None  # with tls_key: served over TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # scrapers must present a certificate it signed (mutual TLS)

    def __post_init__(self) -> None:
        try:
            address = str(ipaddress.ip_address(self.address))
        except ValueError:
            raise member(
                "address", f"{self.address!r} is not an IP address (a host name is not resolved here)"
            ) from None
        msgspec.structs.force_setattr(self, "address", address)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")


class InventoryConfig(Section, frozen=True, kw_only=True):
    """``[inventory]``: what the state report says about the device beyond its entitlements
    (docs/operations.md "Inventory")."""

    directory: Path | None = None  # executables printing key=value lines (as Mender's inventory scripts)
    hardware_revision: Annotated[str, Meta(max_length=64)] | None = None  # default: the device tree's model
    interval_seconds: Annotated[float, Meta(ge=10, le=7 * 86400)] = 3600.0  # collected again this often
    script_timeout_seconds: Annotated[float, Meta(gt=0, le=60)] = 5.0  # a script still running is killed


class Config(CoreConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The agent's whole configuration, frozen once validated: the core keys and the daemon's sections."""

    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    drivers: DriversConfig = DriversConfig()
    inventory: InventoryConfig = InventoryConfig()
    firmware: FirmwareConfig = FirmwareConfig()
    metrics: MetricsConfig = MetricsConfig()


def load_config(path: Path, env: Mapping[str, str]) -> Config:
    """Read, overlay and validate the whole configuration; :class:`ConfigError` names what is wrong."""
    return validated(Config, path, env)
