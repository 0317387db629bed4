"""The signed documents the cloud issues (PROTOCOL.md "Signed documents"), built in one place.

Each builder takes what the document says and the key that signs it, checks the claims against the wire
contract's own models (``protocol.claims``: what the cloud signs is what a device accepts; a defect here
fails at the cloud, not on a fleet), and signs. ``serve`` builds from the ledger
(``cloud_stub/operations/issuing.py``); :class:`Issuer` builds from memory, for the demo's first act.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_stub import signing
from protocol import claims as wire
from protocol import jws
from protocol.timefmt import to_rfc3339

ISSUER: Final = "smartplus-cloud"


def _checked(model: type[wire.Claims], claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` as a device reads them (from JSON, strictly): an ``Invalid`` here is a defect of the
    cloud's, raised before anything is signed or sent."""
    wire.decode(model, json.dumps(claims))
    return claims


def key_entry(key: Ed25519PrivateKey, not_after: float, typs: Sequence[str] | None = None) -> dict[str, Any]:
    """A trust document's ``keys`` entry for ``key``; ``typs``: the types it may sign (None: all)."""
    x = signing.raw_public_key(key.public_key())
    entry: dict[str, Any] = {
        "kid": jws.thumbprint(x),
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(x)},
        "not_after": to_rfc3339(not_after),
    }
    if typs is not None:
        entry["typs"] = list(typs)
    return entry


def root_entry(key: Ed25519PrivateKey) -> dict[str, Any]:
    x = signing.raw_public_key(key.public_key())
    return {"kid": jws.thumbprint(x), "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(x)}}


def trust(
    roots: Sequence[Ed25519PrivateKey],
    signers: Iterable[tuple[Ed25519PrivateKey, float, Sequence[str] | None]],
    *,
    iat: float,
    exp: float,
    seq: int,
    rotating: bool = False,
) -> str:
    """A ``trust`` document listing ``(signer, not_after, typs)``, signed by ``roots[0]`` (the one every
    device holds). ``rotating``: it also carries ``roots`` (all of them) and each root's proof of
    possession of this very list and seq (PROTOCOL.md "Root rotation")."""
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": "*", "iat": int(iat), "exp": int(exp), "seq": seq,
        "keys": [key_entry(k, not_after, typs) for k, not_after, typs in signers],
    }  # fmt: skip
    if rotating:
        entries = [root_entry(k) for k in roots]
        claims["roots"] = entries
        claims["root_proofs"] = [signing.sign(k, wire.ROOT_PROOF, {"roots": entries, "seq": seq}) for k in roots]
    return signing.sign(roots[0], wire.TRUST, _checked(wire.TrustClaims, claims))


def service_entry(name: str, subject: str, expires: float, plan: str | None = None) -> dict[str, Any]:
    """One entry of an entitlements document's ``services``."""
    entry: dict[str, Any] = {"service": name, "subject": subject, "expires": to_rfc3339(expires)}
    if plan:
        entry["plan"] = plan
    return entry


def entitlements(
    key: Ed25519PrivateKey, device: str, body: Mapping[str, Any], *, iat: float, exp: float, seq: int
) -> str:
    """An ``entitlements`` document for ``device``: ``body`` is its project, services and settings."""
    claims = {"iss": ISSUER, "aud": device, "iat": int(iat), "exp": int(exp), "seq": seq, **body}
    return signing.sign(key, wire.ENTITLEMENTS, _checked(wire.EntitlementsClaims, claims))


def firmware_job(key: Ed25519PrivateKey, job: Mapping[str, Any], *, iat: float, exp: float, seq: int) -> str:
    """A ``firmware-job`` document: ``job`` names the device (``aud``), the job and the image, or a cancel."""
    claims = {"iss": ISSUER, "iat": int(iat), "exp": int(exp), "seq": seq, **job}
    return signing.sign(key, wire.FIRMWARE_JOB, _checked(wire.FirmwareJobClaims, claims))


def command(
    key: Ed25519PrivateKey,
    device: str,
    ident: str,
    op: str,
    args: Mapping[str, Any] | None = None,
    *,
    iat: float,
    exp: float,
    seq: int,
) -> str:
    """A ``command`` document: one operation for ``device`` to carry out and answer by ``ident``."""
    claims = {"iss": ISSUER, "aud": device, "iat": int(iat), "exp": int(exp), "seq": seq, "id": ident, "op": op,
              "args": dict(args or {})}  # fmt: skip
    return signing.sign(key, wire.COMMAND, _checked(wire.CommandClaims, claims))


@dataclass
class Issuer:
    """Documents from memory (the demo's first act): a root signs trust, one signer the rest; ``seq`` per
    type and audience, counted here."""

    root: Ed25519PrivateKey
    signing: Ed25519PrivateKey
    seq: dict[tuple[str, str], int] = field(default_factory=dict)

    def _next(self, typ: str, audience: str) -> int:
        self.seq[(typ, audience)] = self.seq.get((typ, audience), 0) + 1
        return self.seq[(typ, audience)]

    def trust(self, keys: Iterable[tuple[Ed25519PrivateKey, float]], *, iat: float, exp: float) -> str:
        """A root-signed trust document listing ``(signing key, not_after)`` pairs (every type each)."""
        signers = [(k, not_after, None) for k, not_after in keys]
        return trust([self.root], signers, iat=iat, exp=exp, seq=self._next(wire.TRUST, "*"))

    def entitlements(
        self,
        device: str,
        project: Mapping[str, Any],
        services: Iterable[Mapping[str, Any]],
        *,
        iat: float,
        exp: float,
        settings: Mapping[str, Any] | None = None,
    ) -> str:
        body = {"project": dict(project), "services": [dict(s) for s in services], "settings": dict(settings or {})}
        return entitlements(self.signing, device, body, iat=iat, exp=exp, seq=self._next(wire.ENTITLEMENTS, device))
