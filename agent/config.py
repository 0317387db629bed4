"""Configuration: a TOML file overlaid by ``EDGE_AGENT_*`` variables, validated once, then frozen.

The file is named by ``--config FILE`` or ``EDGE_AGENT_CONFIG``. A variable
``EDGE_AGENT_<KEY>`` overrides a top-level key and ``EDGE_AGENT_<TABLE>__<KEY>`` a key of a table
(``EDGE_AGENT_MQTT__URL``); a value that starts with ``[`` or ``{`` is read as JSON, and
``trust_roots`` also takes a comma-separated list. Relative paths are relative to the config file.

The overlay is written here rather than taken from pydantic-settings: that package costs 35 MB and
0.28 s to import on the device against pydantic's 18 MB (docs/performance.md), and here every error
can name the variable it came from. Every problem becomes one :class:`~agent.errors.ConfigError`
naming the key, which the CLI prints as one line.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.drivers.wiring import DoorWiring, Elevator, ModbusModule, OsdpBus, Reader, Wiring, relative_to_config
from agent.drivers.wiring import check as check_wiring
from agent.errors import ConfigError
from protocol import boundedjson

ENV_PREFIX: Final = "EDGE_AGENT_"
ENV_CONFIG: Final = "EDGE_AGENT_CONFIG"
_LIST_KEYS: Final = frozenset({"trust_roots"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttConfig(_Frozen):
    """``[mqtt]``: how to reach the broker (used by the sync daemon)."""

    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "smartplus/v1"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0  # seconds for CONNACK, SUBACK, a PUBACK
    session_expiry: Annotated[int, Field(ge=60)] = 7 * 24 * 3600  # MQTT 5: how long the broker keeps the session
    in_flight: Annotated[int, Field(ge=1, le=100)] = 10  # publishes awaiting PUBACK (aiomqtt degrades past 10)
    reconnect_min: Annotated[float, Field(gt=0, le=60)] = 0.5  # backoff after a lost or failed connection
    reconnect_max: Annotated[float, Field(gt=0, le=3600)] = 30.0
    refused_min: Annotated[float, Field(gt=0, le=3600)] = 30.0  # backoff after a refused login or certificate
    refused_max: Annotated[float, Field(gt=0, le=86400)] = 600.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"must start with mqtt:// or mqtts://, not {value!r}")
        try:
            parts.port  # noqa: B018 -- raises on a bad port
        except ValueError:
            raise ValueError(f"has a bad port: {value!r}") from None
        if not parts.hostname:
            raise ValueError(f"names no host: {value!r}")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: use mqtt.username and mqtt.password")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        # PROTOCOL.md: no dots or spaces in topics (NATS refuses them); no wildcards or empty levels.
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", value):
            raise ValueError("must be levels of [A-Za-z0-9_-] separated by '/', like smartplus/v1")
        return value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_min > self.reconnect_max or self.refused_min > self.refused_max:
            raise ValueError("reconnect_min/refused_min must not exceed reconnect_max/refused_max")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        if (self.username is None) != (self.password is None) and self.password is not None:
            raise ValueError("password needs a username")
        if (self.cert_file or self.ca_file) and not self.url.startswith("mqtts://"):
            raise ValueError("ca_file/cert_file need an mqtts:// url")
        return self

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


class OutboxConfig(_Frozen):
    """``[outbox]``: how much the device keeps while it cannot send."""

    max_events: Annotated[int, Field(ge=10, le=10_000_000)] = 100_000
    # Sent rows kept so the cloud can ask for them again (resync from_seq): a broker that acknowledged
    # a message can still lose it (a crash before it saved, a defect), and only the device has a copy.
    keep_sent: Annotated[int, Field(ge=0, le=10_000_000)] = 10_000


class StoreConfig(_Frozen):
    """``[store]``: the database."""

    max_bytes: Annotated[int, Field(ge=0)] = 0  # 0: no cap; else writes beyond it fail as a full disk
    # Space kept back for what must be written on a full disk: alarms, sensor events, call alerts, door
    # logs and the documents that renew service (agent/store/reserve.py). Under max_bytes, at most a quarter of it.
    reserve_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1 << 20


class DriversConfig(_Frozen):
    """``[drivers]``: the hardware and the timings of the local logic (docs/drivers.md)."""

    kind: Literal["simulated"] = "simulated"  # the outputs (agent/drivers/registry.py OUTPUTS)
    inputs: tuple[Literal["mr01"], ...] = ()  # input sources to start (INPUTS); mr01 also whenever mr01_udp is set
    relay_seconds: Annotated[int, Field(ge=1, le=60)] = 5  # how long a granted access keeps the door released
    held_open_seconds: Annotated[int, Field(ge=5, le=3600)] = 30  # a door open longer than this raises held_open
    debounce_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0  # the same MR01 alarm again within this: one
    sensor_silence_seconds: Annotated[int, Field(ge=10, le=86_400)] = 300  # an MR01 quiet this long: sensor_offline
    battery_low_percent: Annotated[int, Field(ge=1, le=99)] = 20
    call_seconds: Annotated[int, Field(ge=10, le=3600)] = 120  # a call without call_ended is over after this
    # MR01 frames over UDP (agent/drivers/mr01.py): "port" (loopback) or "host:port" to listen on; port 0
    # picks a free one. Frames from another host count only when authenticated with a key of mr01_keys.
    mr01_udp: str | None = None
    mr01_keys: Path | None = None  # lines "<sensor mac> <key hex>", readable by the agent only
    # Real door hardware (agent/drivers/wiring.py, docs/drivers.md "Wiring"): OSDP buses and readers,
    # Modbus relay and I/O modules, and what of them each door and the elevator use.
    osdp: dict[str, OsdpBus] = {}
    readers: dict[str, Reader] = {}
    modbus: dict[str, ModbusModule] = {}
    doors: dict[str, DoorWiring] = {}
    elevator: Elevator = Elevator()

    @model_validator(mode="after")
    def _wiring(self) -> DriversConfig:
        self.wiring()  # ValueError names the key
        return self

    def wiring(self) -> Wiring:
        """The checked wiring (cheap: a few dict walks)."""
        return check_wiring(self.osdp, self.readers, self.modbus, self.doors, self.elevator)

    @field_validator("mr01_udp")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if (sep and not host) or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"must be port or host:port, like 7700 or 0.0.0.0:7700, not {value!r}")
        return value if sep else f"127.0.0.1:{port}"

    @field_validator("mr01_keys")
    @classmethod
    def _keys_path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)


class FirmwareConfig(_Frozen):
    """``[firmware]``: the upgrade engine (docs/firmware.md)."""

    max_size: Annotated[int, Field(ge=1)] = 512 * 1024 * 1024  # a job with a larger image is refused
    stall_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0  # no byte for this long: try again
    deadline_seconds: Annotated[float, Field(gt=0)] = 3600.0  # the whole download
    attempts: Annotated[int, Field(ge=1, le=100)] = 5
    health_deadline_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0  # reach the broker within this
    health_command: tuple[str, ...] | None = None  # a local check: exit 0 healthy (argv, no shell)
    defer_max_seconds: Annotated[float, Field(gt=0)] = 3600.0  # busy (a call, an open door) longer: the job fails
    ca_file: Path | None = None  # for https image URLs; default: the system's CAs
    read_back: bool = True  # read the written slot back and check its SHA-256: one more pass over the image
    bootloader: Literal["file", "uboot", "grub", "rauc"] = "file"  # who chooses the slot (firmware/backends.py)
    slots: Literal["file", "device", "rauc"] = "file"  # where images are written (firmware/backends.py SLOTS)
    rauc_bus: str | None = None  # the D-Bus address of the RAUC service (default: the system bus)
    slot_devices: dict[Literal["a", "b"], Path] = {}  # slots = "device": the two partitions (/dev/mmcblk0p2...)
    uboot_env_config: Path | None = None  # fw_env.config for fw_printenv/fw_setenv (default: /etc/fw_env.config)
    grubenv: Path = Path("/boot/grub/grubenv")
    cmdline: Path = Path("/proc/cmdline")  # where the running slot is read (rauc.slot=A)
    simulate_boot: bool = False  # tests and the demo: play the boot script at start (docs/firmware.md)

    @field_validator("ca_file", "uboot_env_config", "grubenv", "cmdline")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)

    @model_validator(mode="after")
    def _devices(self) -> FirmwareConfig:
        if self.slots == "device" and set(self.slot_devices) != {"a", "b"}:
            raise ValueError("slots = 'device' needs slot_devices for both a and b (their block devices)")
        if (self.slots == "rauc") != (self.bootloader == "rauc"):
            raise ValueError(
                "RAUC writes the slots and chooses the boot: slots and bootloader are both 'rauc' or neither"
            )
        return self


class ControlConfig(_Frozen):
    """``[control]``: the local control socket (docs/control.md)."""

    socket: Path | None = None  # default: data_dir/control.sock (owner-only, like data_dir)
    group: str | None = None  # members may ask hello, check and status; needs a socket outside data_dir

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)


class MetricsConfig(_Frozen):
    """``[metrics]``: Prometheus metrics, on loopback unless an address is given (docs/operations.md)."""

    port: Annotated[int, Field(ge=0, le=65535)] | None = None  # None: off; 0: any free port (logged)
    address: str = "127.0.0.1"  # an IP address: where a fleet's scraper reaches it (0.0.0.0, an interface's, ::)
    tls_cert: Path | None = None  # with tls_key: served over TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # scrapers must present a certificate it signed (mutual TLS)

    @field_validator("tls_cert", "tls_key", "tls_client_ca")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (a host name is not resolved here)") from None

    @model_validator(mode="after")
    def _tls(self) -> MetricsConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self


class InventoryConfig(_Frozen):
    """``[inventory]``: what the state report says about the device beyond its entitlements
    (docs/operations.md "Inventory")."""

    directory: Path | None = None  # executables printing key=value lines (as Mender's inventory scripts)
    hardware_revision: Annotated[str, Field(max_length=64)] | None = None  # default: the device tree's model
    interval_seconds: Annotated[float, Field(ge=10, le=7 * 86400)] = 3600.0  # collected again this often
    script_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0  # a script still running is killed

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)


# Top-level strings with a fixed format: the pattern, and what to tell the installer when it does not match.
_FORMATS: Final = {
    "device_id": (r"[0-9a-f]{12}", "the MAC as 12 lowercase hex digits without separators"),
    "model": (r"[A-Za-z0-9_-]{1,32}", "a model name like R29"),
    "firmware_version": (r"[0-9]{1,9}(\.[0-9]{1,9}){0,7}", "dotted numbers like 29.30.2.805"),
}


class Config(_Frozen):
    """The agent's whole configuration, frozen once validated."""

    device_id: str
    model: str
    firmware_version: str
    data_dir: Path
    trust_roots: Annotated[tuple[Path, ...], Field(min_length=1)]
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    store: StoreConfig = StoreConfig()
    drivers: DriversConfig = DriversConfig()
    inventory: InventoryConfig = InventoryConfig()
    firmware: FirmwareConfig = FirmwareConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def control_socket(self) -> Path:
        """Where the control socket is."""
        return self.control.socket or self.data_dir / "control.sock"

    @model_validator(mode="after")
    def _control_reachable(self) -> Config:
        # data_dir is owner-only: a socket inside it could never be reached by the group.
        if self.control.group is not None and self.control_socket.parent == self.data_dir:
            raise ValueError("control.group needs control.socket in a directory of its own (data_dir is owner-only)")
        return self

    @field_validator(*_FORMATS)
    @classmethod
    def _format(cls, value: str, info: ValidationInfo) -> str:
        pattern, expected = _FORMATS[str(info.field_name)]
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {expected}, not {value!r}")
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return relative_to_config(value, info) or value

    @field_validator("trust_roots")
    @classmethod
    def _trust_roots(cls, value: tuple[Path, ...], info: ValidationInfo) -> tuple[Path, ...]:
        return tuple(relative_to_config(p, info) or p for p in value)


def _env_overlay(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings given by variables, and which variable gave each dotted key."""
    overlay: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(name, "is not EDGE_AGENT_<KEY> or EDGE_AGENT_<TABLE>__<KEY>")
        value: Any = raw
        if raw[:1] in ("[", "{"):
            try:
                value = boundedjson.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(name, f"starts like JSON but is not ({exc.msg})") from None
            except ValueError as exc:
                raise ConfigError(name, f"starts like JSON but is not ({exc})") from None
        elif path[-1] in _LIST_KEYS:
            value = [item.strip() for item in raw.split(",") if item.strip()]
        table = overlay
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(name, f"{part} is not a table")
        table[path[-1]] = value
        origin[".".join(path)] = name
    return overlay, origin


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "config"


def _describe(exc: ValidationError, origin: Mapping[str, str]) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    key = _dotted(tuple(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a setting (misspelt?)"
    source = origin.get(key.split("[")[0])
    return ConfigError(f"{key} (from {source})" if source else key, message)


def config_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """The config file named by ``--config`` or, failing that, ``EDGE_AGENT_CONFIG``."""
    value = cli_value or env.get(ENV_CONFIG)
    if not value:
        raise ConfigError("--config", f"no configuration file: pass --config FILE or set {ENV_CONFIG}")
    return Path(value)


def load_config(path: Path, env: Mapping[str, str]) -> Config:
    """Read, overlay and validate the configuration; :class:`ConfigError` names what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("--config", f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nesting: refuse, never crash
        raise ConfigError("--config", f"{path}: invalid TOML: nested too deeply") from None
    overlay, origin = _env_overlay(env)
    try:
        return Config.model_validate(_merge(data, overlay), context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise _describe(exc, origin) from None


def load_trust_roots(config: Config) -> tuple[Ed25519PublicKey, ...]:
    """The configured root keys; :class:`ConfigError` names the entry that cannot be used."""
    from agent.entitlements.trust import load_root_key

    keys = []
    for index, path in enumerate(config.trust_roots):
        try:
            keys.append(load_root_key(path))
        except ValueError as exc:
            raise ConfigError(f"trust_roots[{index}]", str(exc)) from None
    return tuple(keys)
