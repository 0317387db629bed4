"""Claims of the four signed document types, exactly as PROTOCOL.md names them.

Models are strict (no ``"5"`` for 5, no ``true`` for 1), frozen, and ignore members they do not know
(PROTOCOL.md: "a reader ignores fields it does not know"). They are validated straight from the
payload bytes, which costs no more than ``json.loads`` (bench/bench_intake.py).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from typing import Annotated, Any, Final, Literal, NotRequired

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import TypedDict

from protocol.jws import b64url_decode, thumbprint
from protocol.names import COMMAND, ENTITLEMENTS, FIRMWARE_JOB, ID_PATTERN, ROOT_PROOF, TRUST, TYPES

__all__ = ["COMMAND", "ENTITLEMENTS", "FIRMWARE_JOB", "ID_PATTERN", "ROOT_PROOF", "TRUST", "TYPES"]  # and the models

MAX_EPOCH: Final = 253_402_300_799  # 9999-12-31T23:59:59Z: beyond it datetimes cannot represent
MAX_SEQ: Final = 2**63 - 1  # SQLite INTEGER

SUBJECT_PATTERN: Final = r"^(project|(door|account|apartment):[A-Za-z0-9_-]{1,64})$"

Id = Annotated[str, Field(pattern=ID_PATTERN)]
Epoch = Annotated[int, Field(ge=0, le=MAX_EPOCH)]
Subject = Annotated[str, Field(pattern=SUBJECT_PATTERN)]
# Service names are open-ended (an unknown one is kept and reported), but printable and short.
ServiceName = Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,64}$")]
Version = Annotated[str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,9}){0,7}$")]


class _Model(BaseModel):
    # defer_build: a process that never validates a document (``edge-agent check``) never pays for
    # building the schemas; the first validation does (docs/performance.md).
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", defer_build=True)


class Claims(_Model):
    """Claims every document carries."""

    iss: str | None = None
    aud: str
    iat: Epoch
    exp: Epoch
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]
    nbf: Epoch | None = None


class Jwk(_Model):
    """An Ed25519 public key as an OKP JWK (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str

    def raw(self) -> bytes:
        """The 32 key bytes."""
        return b64url_decode(self.x)

    @model_validator(mode="after")
    def _x_is_32_bytes(self) -> Jwk:
        try:
            if len(self.raw()) != 32:
                raise ValueError("x must encode 32 bytes")
        except ValueError as exc:
            raise ValueError(f"x: {exc}") from None
        return self


class RootEntry(_Model):
    """A root key named by a trust document's ``roots`` (PROTOCOL.md "Root rotation")."""

    kid: str
    jwk: Jwk

    @model_validator(mode="after")
    def _kid_is_thumbprint(self) -> RootEntry:
        if thumbprint(self.jwk.raw()) != self.kid:
            raise ValueError("kid is not the RFC 7638 thumbprint of jwk")
        return self


# A document type a signing key may sign (PROTOCOL.md "Key scopes"). Names this agent does not know are
# kept (a later contract may add a type) and simply never match a document it takes.
ScopedTyp = Annotated[str, Field(pattern=r"^[a-z-]{1,32}$")]


class SigningKeyEntry(RootEntry):
    """One signing key listed by a trust document; ``typs`` (absent: all three) are what it may sign."""

    not_after: AwareDatetime
    typs: Annotated[tuple[ScopedTyp, ...], Field(max_length=16)] | None = None


class TrustClaims(Claims):
    """``trust``: the signing keys that may sign the other types, replacing the previous list whole; and,
    with ``roots``, the complete new set of root keys, each new one proven by a ``root_proofs`` entry."""

    keys: tuple[SigningKeyEntry, ...]
    roots: Annotated[tuple[RootEntry, ...], Field(min_length=1, max_length=16)] | None = None
    root_proofs: Annotated[tuple[Annotated[str, Field(max_length=4096)], ...], Field(max_length=16)] = ()


class RootProofClaims(_Model):
    """A ``root-proof``: the new root signs the very list and seq of the trust document that brings it."""

    roots: tuple[RootEntry, ...]
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]


class Project(_Model):
    """The project a device belongs to."""

    id: Id
    type: Literal["community", "single_family", "commercial"]
    created: date | None = None
    timezone: str | None = None
    doors: tuple[Id, ...] = ()
    free_apps: Annotated[int, Field(ge=0)] = 0


RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


@lru_cache(maxsize=4096)  # a document's expiries repeat (services renewed together)
def _epoch_of(text: str) -> float:
    if not RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 time with its offset (2027-01-01T00:00:00Z)")
    return datetime.fromisoformat(text).timestamp()  # ValueError for an impossible date


def _expiry(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("an expiry is an RFC 3339 time, as a string")
    return _epoch_of(value)


# An RFC 3339 time with its offset on the wire, epoch seconds once validated.
Expiry = Annotated[float, BeforeValidator(_expiry)]


class ServiceEntry(TypedDict):
    """A paid service and how long it runs (``expires`` in epoch seconds once validated). A dict, not a model:
    a document may list thousands, and each costs ~0.7 µs so (bench/bench_intake.py, docs/performance.md)."""

    service: ServiceName
    subject: Subject
    expires: Expiry
    plan: NotRequired[str | None]


class EntitlementsClaims(Claims):
    """``entitlements``: the project and its services."""

    project: Project
    services: tuple[ServiceEntry, ...] = ()
    settings: dict[str, Any] = Field(default_factory=dict)


class Window(_Model):
    """When a job may install and reboot: local times of the project's time zone, ``end`` before ``start``
    spanning midnight (PROTOCOL.md)."""

    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    end: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class FirmwareJobClaims(Claims):
    """``firmware-job``: an upgrade to stage, or (``cancel``) a job to call off."""

    job_id: Id
    model: str | None = None
    version: Version | None = None
    url: str | None = None
    size: Annotated[int, Field(ge=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    at: AwareDatetime | None = None
    window: Window | None = None
    reset_after_upgrade: bool = False
    allow_downgrade: bool = False
    cancel: bool = False

    @model_validator(mode="after")
    def _complete_unless_cancel(self) -> FirmwareJobClaims:
        if not self.cancel:
            missing = [n for n in ("model", "version", "url", "size", "sha256") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a job that is not a cancel needs {', '.join(missing)}")
        return self


class CommandClaims(Claims):
    """``command``: one operation for the device to carry out and answer."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    op: Annotated[str, Field(pattern=r"^[a-z_]{1,64}$")]
    args: dict[str, Any] = Field(default_factory=dict)


CLAIMS_MODELS: Final[dict[str, type[Claims]]] = {
    TRUST: TrustClaims,
    ENTITLEMENTS: EntitlementsClaims,
    FIRMWARE_JOB: FirmwareJobClaims,
    COMMAND: CommandClaims,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first offending claim, e.g. ``services.2.expires: Input should ...``."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    message = _CONTROL.sub("?", str(first["msg"]))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}"
