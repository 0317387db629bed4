"""Claims of the four signed document types, exactly as PROTOCOL.md names them.

The models are msgspec structs: strict (no ``"5"`` for 5, no ``true`` for 1), frozen, and they ignore
members they do not know (PROTOCOL.md: "a reader ignores fields it does not know"). :func:`decode`
validates straight from the payload bytes, which costs no more than ``json.loads``
(bench/bench_intake.py). msgspec rather than pydantic: on the device the models and the library cost
~1.5 MiB against ~12 and a few milliseconds against ~50 of a cold start (docs/performance.md); the cloud's
own models stay on pydantic (FastAPI), and sign only what these decode (``cloud_stub/documents.py``).

Every refusal is an :class:`Invalid` (a ``ValueError``) whose text names the first offending member,
like ``services[2].expires: not an RFC 3339 time with its offset``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict, TypeVar

import msgspec
from msgspec import Meta

from protocol.invalid import locate, member
from protocol.jws import b64url_decode, thumbprint
from protocol.names import COMMAND, ENTITLEMENTS, FIRMWARE_JOB, ID_PATTERN, ROOT_PROOF, TRUST, TYPES

__all__ = ["COMMAND", "ENTITLEMENTS", "FIRMWARE_JOB", "ID_PATTERN", "ROOT_PROOF", "TRUST", "TYPES"]  # and the models

MAX_EPOCH: Final = 253_402_300_799  # 9999-12-31T23:59:59Z: beyond it datetimes cannot represent
MAX_SEQ: Final = 2**63 - 1  # SQLite INTEGER

_SUBJECT: Final = r"(?:project|(?:door|account|apartment):[A-Za-z0-9_-]{1,64})"
_SERVICE_NAME: Final = r"[\x21-\x7e]{1,64}"  # open-ended (an unknown one is kept and reported), printable, short

Id = Annotated[str, Meta(pattern=ID_PATTERN)]
Epoch = Annotated[int, Meta(ge=0, le=MAX_EPOCH)]
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
Version = Annotated[str, Meta(pattern=r"^[0-9]{1,9}(\.[0-9]{1,9}){0,7}$")]
AwareDatetime = Annotated[datetime, Meta(tz=True)]  # RFC 3339 with its offset


class Invalid(ValueError):
    """Claims (or a command's arguments, or site settings) that do not match the contract; the text names
    the first offending member."""


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """A wire structure: frozen, keyword-only, members it does not know ignored."""


class Claims(Model, frozen=True, kw_only=True):
    """Claims every document carries."""

    aud: str
    iat: Epoch
    exp: Epoch
    seq: Seq
    iss: str | None = None
    nbf: Epoch | None = None


class Jwk(Model, frozen=True, kw_only=True):
    """An Ed25519 public key as an OKP JWK (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str

    def raw(self) -> bytes:
        """The 32 key bytes."""
        return b64url_decode(self.x)

    def __post_init__(self) -> None:
        try:
            if len(self.raw()) != 32:
                raise ValueError("x must encode 32 bytes")
        except ValueError as exc:
            raise member("x", str(exc)) from None


class RootEntry(Model, frozen=True, kw_only=True):
    """A root key named by a trust document's ``roots`` (PROTOCOL.md "Root rotation")."""

    kid: str
    jwk: Jwk

    def __post_init__(self) -> None:
        if thumbprint(self.jwk.raw()) != self.kid:
            raise ValueError("kid is not the RFC 7638 thumbprint of jwk")


# A document type a signing key may sign (PROTOCOL.md "Key scopes"). Names this agent does not know are
# kept (a later contract may add a type) and simply never match a document it takes.
ScopedTyp = Annotated[str, Meta(pattern=r"^[a-z-]{1,32}$")]


class SigningKeyEntry(RootEntry, frozen=True, kw_only=True):
    """One signing key listed by a trust document; ``typs`` (absent: all three) are what it may sign."""

    not_after: AwareDatetime
    typs: Annotated[tuple[ScopedTyp, ...], Meta(max_length=16)] | None = None


class TrustClaims(Claims, frozen=True, kw_only=True):
    """``trust``: the signing keys that may sign the other types, replacing the previous list whole; and,
    with ``roots``, the complete new set of root keys, each new one proven by a ``root_proofs`` entry."""

    keys: tuple[SigningKeyEntry, ...]
    roots: Annotated[tuple[RootEntry, ...], Meta(min_length=1, max_length=16)] | None = None
    root_proofs: Annotated[tuple[Annotated[str, Meta(max_length=4096)], ...], Meta(max_length=16)] = ()


class RootProofClaims(Model, frozen=True, kw_only=True):
    """A ``root-proof``: the new root signs the very list and seq of the trust document that brings it."""

    roots: tuple[RootEntry, ...]
    seq: Seq


class Project(Model, frozen=True, kw_only=True):
    """The project a device belongs to."""

    id: Id
    type: Literal["community", "single_family", "commercial"]
    created: date | None = None
    timezone: str | None = None
    doors: tuple[Id, ...] = ()
    free_apps: Annotated[int, Meta(ge=0)] = 0


RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


class Expiry(float):
    """An RFC 3339 time with its offset on the wire, its epoch seconds once decoded (:func:`_epoch_of`)."""


@lru_cache(maxsize=4096)  # a document's expiries repeat (services renewed together)
def _epoch_of(text: str) -> Expiry:
    if not RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 time with its offset (2027-01-01T00:00:00Z)")
    return Expiry(datetime.fromisoformat(text).timestamp())  # ValueError for an impossible date


class ServiceEntry(TypedDict):
    """A paid service and how long it runs (``expires`` in epoch seconds once decoded). A dict, not a
    struct: a document may list thousands (bench/bench_intake.py, docs/performance.md); their names and
    subjects are checked together (:func:`_check_services`)."""

    service: str
    subject: str
    expires: Expiry
    plan: NotRequired[str | None]


# One pattern over all the services' names (subjects), joined by newlines, which neither may hold: one scan
# in C instead of a Python call per service (a third of intake's cost per service, docs/performance.md).
_ALL_NAMES: Final = re.compile(rf"(?:{_SERVICE_NAME}\n)*{_SERVICE_NAME}")
_ALL_SUBJECTS: Final = re.compile(rf"(?:{_SUBJECT}\n)*{_SUBJECT}")
_NAME: Final = re.compile(_SERVICE_NAME)
_SUBJECT_ALONE: Final = re.compile(_SUBJECT)


def _check_all(name: str, values: list[str], whole: re.Pattern[str], alone: re.Pattern[str], expected: str) -> None:
    joined = "\n".join(values)
    if whole.fullmatch(joined) and joined.count("\n") == len(values) - 1:
        return
    for index, value in enumerate(values):
        if not alone.fullmatch(value):
            raise member(f"services[{index}].{name}", f"must be {expected}, not {value[:80]!r}")


def _check_services(services: tuple[ServiceEntry, ...]) -> None:
    """Every service's name is 1-64 printable ASCII characters and its subject ``project``, ``door:<id>``,
    ``account:<id>`` or ``apartment:<id>``; else :func:`~protocol.invalid.member` names the first that is not."""
    _check_all("service", [s["service"] for s in services], _ALL_NAMES, _NAME,
               "1-64 printable ASCII characters without spaces")  # fmt: skip
    _check_all("subject", [s["subject"] for s in services], _ALL_SUBJECTS, _SUBJECT_ALONE,
               "project, door:<id>, account:<id> or apartment:<id>")  # fmt: skip


class EntitlementsClaims(Claims, frozen=True, kw_only=True):
    """``entitlements``: the project and its services."""

    project: Project
    services: tuple[ServiceEntry, ...] = ()
    settings: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.services:
            _check_services(self.services)


Time = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class Window(Model, frozen=True, kw_only=True):
    """When a job may install and reboot: local times of the project's time zone, ``end`` before ``start``
    spanning midnight (PROTOCOL.md)."""

    start: Time
    end: Time


class FirmwareJobClaims(Claims, frozen=True, kw_only=True):
    """``firmware-job``: an upgrade to stage, or (``cancel``) a job to call off."""

    job_id: Id
    model: str | None = None
    version: Version | None = None
    url: str | None = None
    size: Annotated[int, Meta(ge=0)] | None = None
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    at: AwareDatetime | None = None
    window: Window | None = None
    reset_after_upgrade: bool = False
    allow_downgrade: bool = False
    cancel: bool = False

    def __post_init__(self) -> None:
        if not self.cancel:
            missing = [n for n in ("model", "version", "url", "size", "sha256") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a job that is not a cancel needs {', '.join(missing)}")


class CommandClaims(Claims, frozen=True, kw_only=True):
    """``command``: one operation for the device to carry out and answer."""

    id: Annotated[str, Meta(min_length=1, max_length=128)]
    op: Annotated[str, Meta(pattern=r"^[a-z_]{1,64}$")]
    args: dict[str, Any] = {}


CLAIMS_MODELS: Final[dict[str, type[Claims]]] = {
    TRUST: TrustClaims,
    ENTITLEMENTS: EntitlementsClaims,
    FIRMWARE_JOB: FirmwareJobClaims,
    COMMAND: CommandClaims,
}

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
S = TypeVar("S")


def _hook(kind: type, value: object) -> object:
    if kind is Expiry:
        if not isinstance(value, str):
            raise ValueError("an expiry is an RFC 3339 time, as a string")
        return _epoch_of(value)
    raise NotImplementedError


_DECODERS: Final[dict[type, msgspec.json.Decoder[Any]]] = {}


def _decoder(model: type[S]) -> msgspec.json.Decoder[S]:
    decoder = _DECODERS.get(model)
    if decoder is None:  # built at the first document of its type, then kept
        decoder = _DECODERS[model] = msgspec.json.Decoder(model, dec_hook=_hook)
    return decoder


def describe(exc: msgspec.MsgspecError) -> str:
    """One line naming the first offending member, e.g. ``services[2].expires: Expected `str` ...``."""
    where, problem, _ = locate(str(exc))
    return f"{where or 'payload'}: {_CONTROL.sub('?', problem)}"


def decode(model: type[S], payload: bytes | str) -> S:
    """``payload`` (JSON) as ``model``, strictly; :class:`Invalid` names what is wrong."""
    try:
        return _decoder(model).decode(payload)
    except msgspec.MsgspecError as exc:
        raise Invalid(describe(exc)) from None
    except RecursionError:  # arguments nested thousands deep: refused, never a crash
        raise Invalid("payload: nested too deeply") from None


def convert(model: type[S], value: Mapping[str, Any]) -> S:
    """``value`` (as JSON would give it) as ``model``, strictly; :class:`Invalid` names what is wrong."""
    try:
        return msgspec.convert(value, model, dec_hook=_hook)
    except msgspec.MsgspecError as exc:
        raise Invalid(describe(exc)) from None
    except RecursionError:  # arguments nested thousands deep: refused, never a crash
        raise Invalid("payload: nested too deeply") from None


def to_json(value: Model) -> str:
    """``value`` as JSON text (what :func:`decode` reads back)."""
    return msgspec.json.encode(value).decode()


def rfc3339(value: datetime) -> str:
    """``value`` as the wire writes it (``2027-01-01T00:00:00Z``, or with its offset)."""
    return str(msgspec.to_builtins(value))


def to_builtins(value: Model) -> dict[str, Any]:
    """``value`` as JSON-ready builtins (a datetime as RFC 3339 text)."""
    built: dict[str, Any] = msgspec.to_builtins(value)
    return built
