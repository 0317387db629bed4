"""The keys every command needs: who the device is, where its data, keys and control socket are, the
store's bounds, the log level. Read from the same file and ``EDGE_AGENT_*`` variables as the whole
configuration (``agent/config.py``, whose :class:`~agent.config.Config` extends :class:`CoreConfig` with
the daemon's sections), by the same rules.

``edge-agent check``, ``accept`` and ``events`` load only this (:func:`load_core_config`): they open the
store and answer, and never build the daemon's section models (the drivers' wiring, the broker, the
firmware, the metrics), which cost a cold command a third of its start (docs/performance.md). The
daemon's sections are left unread, not refused: ``edge-agent run`` and ``doctor`` validate them all.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from agent.errors import ConfigError
from protocol import boundedjson

ENV_PREFIX: Final = "EDGE_AGENT_"
ENV_CONFIG: Final = "EDGE_AGENT_CONFIG"
_LIST_KEYS: Final = frozenset({"trust_roots"})

M = TypeVar("M", bound=BaseModel)


class Frozen(BaseModel):
    """A section of the configuration: frozen once validated, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def relative_to_config(value: Path | None, info: ValidationInfo) -> Path | None:
    """``value`` under the config file's directory (``base_dir`` in the validation context) if relative: paths
    in the config file are relative to the file (the one rule, for every section's model)."""
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if value is None or value.is_absolute() or base is None:
        return value
    return Path(base) / value


class StoreConfig(Frozen):
    """``[store]``: the database."""

    max_bytes: Annotated[int, Field(ge=0)] = 0  # 0: no cap; else writes beyond it fail as a full disk
    # Space kept back for what must be written on a full disk: alarms, sensor events, call alerts, door
    # logs and the documents that renew service (agent/store/reserve.py). Under max_bytes, at most a quarter of it.
    reserve_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1 << 20


class ControlConfig(Frozen):
    """``[control]``: the local control socket (docs/control.md)."""

    socket: Path | None = None  # default: data_dir/control.sock (owner-only, like data_dir)
    group: str | None = None  # members may ask hello, check and status; needs a socket outside data_dir

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return relative_to_config(value, info)


# Top-level strings with a fixed format: the pattern, and what to tell the installer when it does not match.
_FORMATS: Final = {
    "device_id": (r"[0-9a-f]{12}", "the MAC as 12 lowercase hex digits without separators"),
    "model": (r"[A-Za-z0-9_-]{1,32}", "a model name like R29"),
    "firmware_version": (r"[0-9]{1,9}(\.[0-9]{1,9}){0,7}", "dotted numbers like 29.30.2.805"),
}


class CoreConfig(Frozen):
    """The keys every command needs (the daemon's sections, if present, are left to :class:`~agent.config.Config`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    device_id: str
    model: str
    firmware_version: str
    data_dir: Path
    trust_roots: Annotated[tuple[Path, ...], Field(min_length=1)]
    store: StoreConfig = StoreConfig()
    control: ControlConfig = ControlConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def control_socket(self) -> Path:
        """Where the control socket is."""
        return self.control.socket or self.data_dir / "control.sock"

    @model_validator(mode="after")
    def _control_reachable(self) -> CoreConfig:
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


def _read(path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The file overlaid by the variables, unvalidated, and which variable gave each dotted key."""
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
    return _merge(data, overlay), origin


def validated(model: type[M], path: Path, env: Mapping[str, str]) -> M:
    """Read, overlay and validate the configuration as ``model``; :class:`ConfigError` names what is wrong."""
    data, origin = _read(path, env)
    try:
        return model.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise _describe(exc, origin) from None


def load_core_config(path: Path, env: Mapping[str, str]) -> CoreConfig:
    """The keys every command needs (:class:`CoreConfig`), by the rules of the whole configuration."""
    return validated(CoreConfig, path, env)


def load_trust_roots(config: CoreConfig) -> tuple[Ed25519PublicKey, ...]:
    """The configured root keys; :class:`ConfigError` names the entry that cannot be used."""
    from agent.entitlements.trust import load_root_key

    keys = []
    for index, path in enumerate(config.trust_roots):
        try:
            keys.append(load_root_key(path))
        except ValueError as exc:
            raise ConfigError(f"trust_roots[{index}]", str(exc)) from None
    return tuple(keys)
