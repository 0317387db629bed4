"""Helpers shared by the tests: a settable clock, a token forge, config files on disk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.clock import ClockSource
from cloud_stub import signing

DAY = 86_400.0
DEVICE_ID = "0c110512ab34"
T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z, the iat of the shared vectors


@dataclass
class Keys:
    """The cloud's keys in a test: a root pinned by config, a signing key it can list."""

    root: Ed25519PrivateKey
    signing: Ed25519PrivateKey
    other: Ed25519PrivateKey  # trusted by nobody


@dataclass
class SettableClock:
    """A wall clock and a boot-time clock the test moves by hand, behind the agent's ClockSource."""

    wall: float = T0
    monotonic: float = 1_000.0
    boot_id: str | None = "boot-1"

    def source(self) -> ClockSource:
        """The ClockSource reading this clock."""
        return ClockSource(wall=lambda: self.wall, monotonic=lambda: self.monotonic, boot_id=self.boot_id)

    def run(self, seconds: float) -> None:
        """Let time pass: both clocks move on."""
        self.wall += seconds
        self.monotonic += seconds

    def reboot(self, boot_id: str) -> None:
        """A new boot: the boot-time clock starts again near zero."""
        self.boot_id, self.monotonic = boot_id, 5.0


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    """base64url of compact JSON."""
    return b64(json.dumps(value, separators=(",", ":")).encode())


def kid_of(key: Ed25519PrivateKey) -> str:
    """The RFC 7638 thumbprint of a private key's public half."""
    return signing.key_thumbprint(key.public_key())


def forge(
    key: Ed25519PrivateKey | None,
    claims: Any,
    *,
    typ: str = "entitlements",
    alg: str = "EdDSA",
    kid: str | None = None,
    extra_header: dict[str, Any] | None = None,
    raw_header: str | None = None,
    raw_payload: str | None = None,
) -> str:
    """A compact JWS with whatever header, claims and key a test wants, well-formed or not."""
    header = {"alg": alg, "kid": kid if kid is not None else (kid_of(key) if key else "none"), "typ": typ}
    header.update(extra_header or {})
    header_b64 = raw_header if raw_header is not None else b64json(header)
    payload_b64 = raw_payload if raw_payload is not None else b64json(claims)
    signing_input = f"{header_b64}.{payload_b64}".encode()
    signature = key.sign(signing_input) if key is not None else b""
    return f"{header_b64}.{payload_b64}.{b64(signature)}"


def hs256_with_public_key(key: Ed25519PrivateKey, claims: Any) -> str:
    """The classic confusion attack: HMAC-SHA256 keyed with the (public) verification key's PEM."""
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header_b64, payload_b64 = b64json({"alg": "HS256", "kid": kid_of(key), "typ": "entitlements"}), b64json(claims)
    mac = hmac.new(pem, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    return f"{header_b64}.{payload_b64}.{b64(mac)}"


def commercial_project(doors: tuple[str, ...] = ("door-1", "door-2"), created: str = "2025-07-01") -> dict[str, Any]:
    """A commercial project billed with credits (created after 2025-06-01)."""
    return {"id": "p-100", "type": "commercial", "created": created, "timezone": "Asia/Shanghai", "doors": list(doors)}


@dataclass
class Claims:
    """Builds claims for the device under test, with a seq counter per typ."""

    iat: float = T0
    seq: dict[str, int] = field(default_factory=dict)

    def next_seq(self, typ: str) -> int:
        """The next seq of ``typ``."""
        self.seq[typ] = self.seq.get(typ, 0) + 1
        return self.seq[typ]

    def entitlements(self, services: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
        """Entitlements claims for a commercial project, with ``overrides`` applied last."""
        claims: dict[str, Any] = {
            "iss": "smartplus-cloud",
            "aud": DEVICE_ID,
            "iat": int(self.iat),
            "exp": int(self.iat + 30 * DAY),
            "project": commercial_project(),
            "services": services
            if services is not None
            else [{"service": "door", "subject": "door:door-2", "expires": "2099-01-01T00:00:00Z"}],
            "settings": {},
        }
        claims.update(overrides)
        claims.setdefault("seq", self.next_seq("entitlements"))
        return claims

    def trust(
        self, keys: list[Ed25519PrivateKey], not_after: str = "2099-01-01T00:00:00Z", **overrides: Any
    ) -> dict[str, Any]:
        """Trust claims listing ``keys``."""
        claims: dict[str, Any] = {
            "iss": "smartplus-cloud",
            "aud": "*",
            "iat": int(self.iat),
            "exp": int(self.iat + 365 * DAY),
            "keys": [
                {
                    "kid": kid_of(k),
                    "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(signing.raw_public_key(k.public_key()))},
                    "not_after": not_after,
                }
                for k in keys
            ],
        }
        claims.update(overrides)
        claims.setdefault("seq", self.next_seq("trust"))
        return claims


def write_public_key(path: Path, key: Ed25519PrivateKey) -> Path:
    """Write ``key``'s public half as PEM (SubjectPublicKeyInfo)."""
    path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value) if isinstance(value, Path) else value)


def write_config(
    directory: Path,
    roots: list[Path],
    *,
    mqtt: dict[str, Any] | None = None,
    tables: dict[str, dict[str, Any]] | None = None,
    **top: Any,
) -> Path:
    """An agent config in ``directory`` with ``data_dir`` beside it; ``top``, ``mqtt`` and ``tables`` override."""
    settings: dict[str, Any] = {
        "device_id": DEVICE_ID,
        "model": "R29",
        "firmware_version": "29.30.2.805",
        "data_dir": str(directory / "data"),
        "trust_roots": [str(p) for p in roots],
    }
    settings.update(top)
    sections = {"mqtt": {"url": "mqtt://127.0.0.1:1883", "topic_prefix": "smartplus/v1", **(mqtt or {})}}
    sections.update(tables or {})
    sections.setdefault("drivers", {"kind": "simulated"})
    lines = [f"{k} = {_toml(v)}" for k, v in settings.items()]
    for table, values in sections.items():
        lines += ["", f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in values.items() if v is not None)]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def svc(
    service: str, subject: str = "project", days: float = 365, plan: str | None = None, *, base: float = T0
) -> dict[str, Any]:
    """A service entry expiring ``days`` after ``base`` (T0 by default; negative: already expired)."""
    from protocol.timefmt import to_rfc3339

    entry: dict[str, Any] = {"service": service, "subject": subject, "expires": to_rfc3339(base + days * DAY)}
    if plan is not None:
        entry["plan"] = plan
    return entry


def holdings(project: dict[str, Any], services: list[dict[str, Any]], exp_days: float = 30) -> Any:
    """The Entitlements a device would hold for this document (issued at T0, in force ``exp_days``)."""
    from agent.entitlements.index import Entitlements
    from protocol.claims import EntitlementsClaims, decode

    claims = {
        "aud": DEVICE_ID,
        "iat": int(T0),
        "exp": int(T0 + exp_days * DAY),
        "seq": 1,
        "project": project,
        "services": services,
    }
    return Entitlements.from_claims(decode(EntitlementsClaims, json.dumps(claims)))
