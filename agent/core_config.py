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
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta

from agent.errors import ConfigError
from protocol import boundedjson
from protocol.invalid import locate, member

if TYPE_CHECKING:  # the keys' library is loaded with the keys (load_trust_roots), not with the configuration
    from protocol.ed25519 import PublicKey

ENV_PREFIX: Final = "EDGE_AGENT_"
ENV_CONFIG: Final = "EDGE_AGENT_CONFIG"
_LIST_KEYS: Final = frozenset({"trust_roots"})


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A section of the configuration: frozen once validated, unknown keys refused. A check of its own
    (``__post_init__``) that concerns one key raises :func:`~protocol.invalid.member` naming it."""


M = TypeVar("M", bound=Section)


class Secret:
    """A string kept out of ``repr`` and logs (a password); :meth:`get_secret_value` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _hook(base: Path) -> Callable[[type, Any], Any]:
    """What msgspec cannot build alone: a path, relative to the config file's directory ``base`` if
    given relative (the one rule, for every section), and a secret."""

    def build(kind: type, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"Expected a string, got `{type(value).__name__}`")
        if kind is Path:
            path = Path(value)
            return path if path.is_absolute() else base / path
        if kind is Secret:
            return Secret(value)
        raise NotImplementedError(kind)

    return build


class StoreConfig(Section, frozen=True, kw_only=True):
    """``[store]``: the database."""

    max_bytes: Annotated[int, Meta(ge=0)] = 0  # 0: no cap; else writes beyond it fail as a full disk
    # Space kept back for what must be written on a full disk: alarms, sensor events, call alerts, door
    # logs and the documents that renew service (agent/store/reserve.py). Under max_bytes, at most a quarter of it.
    reserve_bytes: Annotated[int, Meta(ge=0, le=1 << 30)] = 1 << 20


class ControlConfig(Section, frozen=True, kw_only=True):
    """``[control]``: the local control socket (docs/control.md)."""

    socket: Path | None = None  # default: data_dir/control.sock (owner-only, like data_dir)
    group: str | None = None  # members may ask hello, check and status; needs a socket outside data_dir


# Top-level strings with a fixed format: the pattern, and what to tell the installer when it does not match.
_FORMATS: Final = {
    "device_id": (r"[0-9a-f]{12}", "the MAC as 12 lowercase hex digits without separators"),
    "model": (r"[A-Za-z0-9_-]{1,32}", "a model name like R29"),
    "firmware_version": (r"[0-9]{1,9}(\.[0-9]{1,9}){0,7}", "dotted numbers like 29.30.2.805"),
}


class CoreConfig(Section, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The keys every command needs (the daemon's sections, if present, are left to :class:`~agent.config.Config`)."""

    device_id: str
    model: str
    firmware_version: str
    data_dir: Path
    trust_roots: Annotated[tuple[Path, ...], Meta(min_length=1)]
    store: StoreConfig = StoreConfig()
    control: ControlConfig = ControlConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def control_socket(self) -> Path:
        """Where the control socket is."""
        return self.control.socket or self.data_dir / "control.sock"

    def __post_init__(self) -> None:
        for name, (pattern, expected) in _FORMATS.items():
            value = getattr(self, name)
            if not re.fullmatch(pattern, value):
                raise member(name, f"must be {expected}, not {value!r}")
        # data_dir is owner-only: a socket inside it could never be reached by the group.
        if self.control.group is not None and self.control_socket.parent == self.data_dir:
            raise ValueError("control.group needs control.socket in a directory of its own (data_dir is owner-only)")


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


def _value_type(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``| None``."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def _named(where: str, model: type, data: Any, hook: Callable[[type, Any], Any]) -> str:
    """``where`` with each ``[...]`` (msgspec's word for a key of a table) replaced by the key whose
    entry is refused, found by validating the table's entries one by one."""
    parts = re.findall(r"\[[^\]]*\]|[^.\[]+", where)
    kind: Any = model
    key = ""
    for part in parts:
        kind = _value_type(kind)
        if part == "[...]" and isinstance(data, dict) and typing.get_origin(kind) is dict:
            kind = typing.get_args(kind)[1]
            for name, entry in data.items():
                try:
                    msgspec.convert(entry, kind, strict=False, dec_hook=hook)
                except (msgspec.ValidationError, ValueError):
                    part, data = str(name), entry
                    break
            key += f".{part}" if key else part
            continue
        if part.startswith("["):
            kind = typing.get_args(kind)[0] if typing.get_args(kind) else Any
            data = data[int(part[1:-1])] if isinstance(data, list) and part[1:-1].isdigit() else None
            key += part
            continue
        hints = (
            {f.name: f.type for f in msgspec.structs.fields(kind)}
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct)
            else {}
        )
        kind = hints.get(part, Any)
        data = data.get(part) if isinstance(data, dict) else None
        key += f".{part}" if key else part
    return key


def _describe(
    exc: msgspec.ValidationError, origin: Mapping[str, str], model: type, data: Any, hook: Callable[[type, Any], Any]
) -> ConfigError:
    where, problem, kind = locate(str(exc))
    key = _named(where, model, data, hook) if "[...]" in where else where
    key = key or "config"
    if kind == "unknown":
        problem = "is not a setting (misspelt?)"
    source = origin.get(key.split("[")[0])
    return ConfigError(f"{key} (from {source})" if source else key, problem)


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
    hook = _hook(path.resolve().parent)
    try:
        return msgspec.convert(data, model, strict=False, dec_hook=hook)
    except msgspec.ValidationError as exc:
        raise _describe(exc, origin, model, data, hook) from None


def load_core_config(path: Path, env: Mapping[str, str]) -> CoreConfig:
    """The keys every command needs (:class:`CoreConfig`), by the rules of the whole configuration."""
    return validated(CoreConfig, path, env)


def load_trust_roots(config: CoreConfig) -> tuple[PublicKey, ...]:
    """The configured root keys; :class:`ConfigError` names the entry that cannot be used."""
    from agent.entitlements.trust import load_root_key

    keys = []
    for index, path in enumerate(config.trust_roots):
        try:
            keys.append(load_root_key(path))
        except ValueError as exc:
            raise ConfigError(f"trust_roots[{index}]", str(exc)) from None
    return tuple(keys)
