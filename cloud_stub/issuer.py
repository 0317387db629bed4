"""Signed documents as the cloud issues them (PROTOCOL.md "Signed documents")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import jws
from protocol.timefmt import to_rfc3339

ISSUER = "smartplus-cloud"


def signing_key_entry(key: Ed25519PrivateKey, not_after: float, typs: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ``keys`` entry of a trust document for ``key``; ``typs``: the types it may sign (None: all)."""
    x = jws.raw_public_key(key.public_key())
    entry: dict[str, Any] = {
        "kid": jws.thumbprint(x),
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(x)},
        "not_after": to_rfc3339(not_after),
    }
    if typs is not None:
        entry["typs"] = list(typs)
    return entry


def service(name: str, subject: str, expires: float, plan: str | None = None) -> dict[str, Any]:
    """One entry of an entitlements document's ``services``."""
    entry: dict[str, Any] = {"service": name, "subject": subject, "expires": to_rfc3339(expires)}
    if plan is not None:
        entry["plan"] = plan
    return entry


@dataclass
class Issuer:
    """Signs documents with a root key (trust) and a signing key (everything else), counting ``seq``."""

    root: Ed25519PrivateKey
    signing: Ed25519PrivateKey
    seq: dict[tuple[str, str], int] = field(default_factory=dict)

    def _next_seq(self, typ: str, audience: str) -> int:
        key = (typ, audience)
        self.seq[key] = self.seq.get(key, 0) + 1
        return self.seq[key]

    def trust(self, keys: Iterable[tuple[Ed25519PrivateKey, float]], *, iat: float, exp: float) -> str:
        """A root-signed trust document listing ``(signing key, not_after)`` pairs."""
        claims = {
            "iss": ISSUER,
            "aud": "*",
            "iat": int(iat),
            "exp": int(exp),
            "seq": self._next_seq("trust", "*"),
            "keys": [signing_key_entry(k, not_after) for k, not_after in keys],
        }
        return jws.sign(self.root, "trust", claims)

    def entitlements(
        self,
        device_id: str,
        project: Mapping[str, Any],
        services: Iterable[Mapping[str, Any]],
        *,
        iat: float,
        exp: float,
        settings: Mapping[str, Any] | None = None,
    ) -> str:
        """An entitlements document for one device, signed with the signing key."""
        claims = {
            "iss": ISSUER,
            "aud": device_id,
            "iat": int(iat),
            "exp": int(exp),
            "seq": self._next_seq("entitlements", device_id),
            "project": dict(project),
            "services": [dict(s) for s in services],
            "settings": dict(settings or {}),
        }
        return jws.sign(self.signing, "entitlements", claims)
