"""``serve``'s configuration: a TOML file overlaid by ``SMARTPLUS_SERVE_*`` variables and the command's own
options, validated once (pydantic), then frozen. Every problem is one :class:`~cloud_stub.errors.ConfigError`
naming the key, which ``serve`` prints as one line before exiting 2.

```toml
ledger = "cloud-data/ledger.db"     # a SQLite file, or postgresql://user@host/db
home = "cloud-data"                 # keys/ and images/; default: beside a SQLite ledger, else ./cloud-data
interval = 5.0                      # seconds between passes (changes are heard of at once)
offline_days = 30.0                 # how long a device may rely on its entitlements offline

[broker]                            # absent urls: the embedded amqtt broker on embedded_port
urls = ["mqtt://127.0.0.1:1883"]    # several: the nodes of a cluster, the next tried when one is lost
embedded_port = 1883
username = "cloud"
password = "cloud"
prefix = "smartplus/v1"
# client_id = "smartplus-cloud-1883"  # default: smartplus-cloud-<port>; one per serve process on a broker
# ca_file, cert_file, key_file: TLS (mqtts://), the cloud's certificate for mutual TLS

[images]
host = "127.0.0.1"
port = 8080                         # 0: any free port
# base = "https://cdn.example/fw/"  # where devices fetch images (default: this image server)

[api]                               # the HTTP API, off unless port is given
host = "127.0.0.1"
# port = 8081
threads = 2                         # requests at the ledger at once (more only queue for Python's GIL)
# tls = false                       # true: served behind an HTTPS proxy: Secure cookies, HSTS (docs/portal.md)

[mail]                              # the portal's mail (codes, links, notices); off unless relay is given
# relay = "smtp.example:587"        # HOST:PORT of an SMTP relay
sender = "SmartPlus <no-reply@localhost>"
starttls = false
# username = "..."; password = "..."
```

A variable ``SMARTPLUS_SERVE_<KEY>`` sets a top-level key, ``SMARTPLUS_SERVE_<TABLE>__<KEY>`` a key of a table
(``SMARTPLUS_SERVE_API__PORT=8081``); a value starting with ``[`` is read as JSON. The password is kept as a
secret (never printed, never logged).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from cloud_stub.errors import ConfigError

ENV_PREFIX: Final = "SMARTPLUS_SERVE_"
Port = Annotated[int, Field(ge=1, le=65535)]
AnyPort = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _existing(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"no such file: {value}")
    return value


class BrokerConfig(_Frozen):
    """``[broker]``: the fleet's MQTT broker, or the embedded one."""

    urls: tuple[str, ...] = ()
    embedded_port: Port = 1883
    username: str | None = "cloud"
    password: SecretStr | None = SecretStr("cloud")
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_/-]{1,64}$")] = "smartplus/v1"
    # The MQTT client id: one persistent session, whichever node holds it. Several serve processes on one
    # broker each need their own (the broker drops a session taken over by another connection).
    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            broker_address(url)
        return value

    _files = field_validator("ca_file", "cert_file", "key_file")(_existing)

    @model_validator(mode="after")
    def _tls(self) -> BrokerConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        if (self.cert_file is not None or self.ca_file is not None) and not self.urls:
            raise ValueError("TLS needs ca_file and a broker url (the embedded broker speaks plain MQTT)")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("mutual TLS needs ca_file as well")
        return self

    def addresses(self) -> list[tuple[str, int]]:
        return [broker_address(url) for url in self.urls]


class ImagesConfig(_Frozen):
    """``[images]``: the image server, and the URL firmware jobs name."""

    host: str = "127.0.0.1"
    port: AnyPort = 8080
    base: str | None = None

    @field_validator("base")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not value.endswith("/")):
            raise ValueError(f"an http(s) URL ending in '/', not {value!r}")
        return value


class ApiConfig(_Frozen):
    """``[api]``: the HTTP API (off without a port)."""

    host: str = "127.0.0.1"
    port: AnyPort | None = None
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    tls: bool = False  # the portal is reached over HTTPS (a proxy in front): Secure cookies, HSTS


class MailConfig(_Frozen):
    """``[mail]``: the SMTP relay the portal's mail goes through (off without one: it waits in the ledger)."""

    relay: str | None = None
    sender: Annotated[str, Field(min_length=3, max_length=200)] = "SmartPlus <no-reply@localhost>"
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("relay")
    @classmethod
    def _relay(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"HOST:PORT, not {value!r}")
        return value

    def address(self) -> tuple[str, int] | None:
        if self.relay is None:
            return None
        host, _, port = self.relay.rpartition(":")
        return host.strip("[]"), int(port)


class ServeConfig(_Frozen):
    ledger: Annotated[str, Field(min_length=1)] = "cloud-data/ledger.db"
    home: Path | None = None
    interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    offline_days: Annotated[float, Field(gt=0, le=366)] = 30.0
    broker: BrokerConfig = BrokerConfig()
    images: ImagesConfig = ImagesConfig()
    api: ApiConfig = ApiConfig()
    mail: MailConfig = MailConfig()

    @property
    def keys_home(self) -> Path:
        """Where keys and images live."""
        if self.home is not None:
            return self.home
        return Path("cloud-data") if "://" in self.ledger else Path(self.ledger).parent


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` (1883) or ``mqtts://HOST[:PORT]`` (8883) as ``(host, port)``."""
    try:
        parts = urlsplit(url)
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{url!r} is not mqtt://HOST[:PORT] (or mqtts://)")
    return parts.hostname, port


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _environment(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = name.removeprefix(ENV_PREFIX).lower().split("__")
        value: Any = text
        if text.startswith(("[", "{")):
            try:
                value = json.loads(text)
            except ValueError:
                raise ConfigError(f"{name}: not JSON: {text[:40]!r}") from None
        target = found
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return found


def load(file: Path | None, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> ServeConfig:
    """The configuration from ``file`` (optional), the environment, then ``overrides`` (the options given)."""
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ConfigError(f"{file}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not TOML: {exc}") from None
    data = _merge(_merge(data, _environment(environ)), overrides)
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None
