"""The cloud's half of EdDSA: signing compact JWS with ``cryptography``'s Ed25519 keys, and naming them.

The device only verifies, with libsodium (``protocol/ed25519.py``, ``protocol/jws.py``): cryptography's
~10 MiB of memory stays out of the daemon. Signed here, a document has exactly the header PROTOCOL.md
prescribes (``alg`` EdDSA, ``kid`` the RFC 7638 thumbprint of the signing key, ``typ``).
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.ed25519 import PublicKey
from protocol.jws import ALG, b64url_encode, thumbprint


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key (the JWK ``x``)."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_thumbprint(key: Ed25519PublicKey) -> str:
    """The key's ``kid``: the RFC 7638 thumbprint of its JWK."""
    return thumbprint(raw_public_key(key))


def verifier(key: Ed25519PublicKey) -> PublicKey:
    """The same public key as a device holds it (to verify as a device does)."""
    return PublicKey(raw_public_key(key))


def sign(private_key: Ed25519PrivateKey, typ: str, claims: dict[str, Any]) -> str:
    """Sign ``claims`` as a compact JWS with the header PROTOCOL.md prescribes."""
    header = {"alg": ALG, "kid": key_thumbprint(private_key.public_key()), "typ": typ}
    header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    payload_b64 = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return f"{header_b64}.{payload_b64}.{b64url_encode(private_key.sign(signing_input))}"
