"""Ed25519 public keys and signature checks, as the device makes them: libsodium, through PyNaCl.

The cloud signs with ``cryptography`` (``cloud_stub/signing.py``); the device only verifies, and does it
here. Measured (docs/performance.md "The device verifies with libsodium"): importing cryptography's Ed25519
and serialization modules took ~10 MiB of the idle daemon's RSS (its Rust extension carries its own
OpenSSL beside the system's, which ``ssl`` loads anyway), PyNaCl's bindings 1.2 MiB; and libsodium
verifies a document faster than cryptography does. PyNaCl is the Python Cryptographic Authority's binding of
libsodium, built for exactly this.

libsodium refuses more than RFC 8032 requires (a non-canonical ``S``, a small-order key or ``R``): a
signature the cloud makes never has them, and EdDSA here is only ever the cloud's.

A root key is configured as a PEM file (``SubjectPublicKeyInfo``). For Ed25519 that structure is always
the same 12 bytes followed by the key's 32 (RFC 8410 section 4 and its example in section 10.1), so it is
read by matching them exactly: any other key, or any other encoding of one, is refused.
"""

from __future__ import annotations

import binascii
import re
from typing import Final

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
# SEQUENCE { SEQUENCE { OID 1.3.101.112 (id-Ed25519) }, BIT STRING (no unused bits) { the 32 bytes } }
_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n(.*?)-----END PUBLIC KEY-----", re.DOTALL)


class PublicKey:
    """An Ed25519 public key: its 32 raw bytes (the JWK ``x``), and whether it signed a message."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(raw)}")
        self.raw: Final = bytes(raw)
        self._key: Final = VerifyKey(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` over ``message`` was made with this key's private half."""
        try:
            self._key.verify(message, signature)
        except (BadSignatureError, ValueError):  # ValueError: a signature not 64 bytes long
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()})"


def from_pem(pem: bytes) -> PublicKey:
    """The Ed25519 key of the first ``PUBLIC KEY`` block of ``pem``; ``ValueError`` says what it is not
    ("not a PEM public key (...)", "not an Ed25519 public key (...)")."""
    block = _PEM_BLOCK.search(pem)
    if block is None:
        raise ValueError("not a PEM public key (no -----BEGIN PUBLIC KEY----- block)")
    try:
        der = binascii.a2b_base64(b"".join(block.group(1).split()), strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"not a PEM public key (its body is not base64: {exc})") from None
    if len(der) != len(_SPKI_PREFIX) + KEY_BYTES or not der.startswith(_SPKI_PREFIX):
        raise ValueError("not an Ed25519 public key (an RFC 8410 SubjectPublicKeyInfo of id-Ed25519)")
    return PublicKey(der[len(_SPKI_PREFIX) :])
