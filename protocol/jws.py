"""JWS compact serialization with EdDSA over Ed25519 only (RFC 7515, RFC 8037, RFC 7638).

Written on an Ed25519 primitive directly rather than on a JOSE library: the device accepts exactly one
algorithm, and measurement (docs/performance.md, bench/bench_intake.py) showed joserfc adding ~40 µs
and PyJWT ~120 µs to a ~130 µs verify, against ~15 µs here. Signatures are checked with libsodium
(``protocol/ed25519.py``); the cloud signs with cryptography (``cloud_stub/signing.py``). The parser is
strict where leniency has bitten other implementations:

* base64url must be canonical (no padding, no stray characters, zero trailing bits), so one document
  has exactly one encoding and "the very same document" is well defined;
* the protected header must be a JSON object of at most 4 KiB, nested at most 2 deep, without
  duplicate members and without ``crit`` (a 5 KB header of 2,000 nested arrays once ended the daemon
  from inside ``json``'s recursion: ``protocol/boundedjson.py``);
* ``alg`` must be the string ``EdDSA``; nothing is inferred from the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from functools import lru_cache
from typing import Any, Final, NamedTuple

from protocol import boundedjson, reasons
from protocol.ed25519 import PublicKey
from protocol.errors import DocumentRefused

MAX_DOCUMENT_BYTES: Final = 256 * 1024  # PROTOCOL.md: "the payload is at most 256 KiB"
# A protected header is alg, kid and typ (~90 bytes): far more than that is not one of ours.
MAX_HEADER_BYTES: Final = 4096
MAX_HEADER_DEPTH: Final = 2  # the object, and at most one level inside it (ours have none)
ALG: Final = "EdDSA"

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# base64url to standard base64, and standard's own "+", "/" and "=" to "!", which strict decoding refuses: one
# pass both translates and leaves anything outside the alphabet to be refused.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
# Bits of the last character that carry no data, by length mod 4: they must be zero.
_UNUSED_BITS = {2: 0x0F, 3: 0x03}


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode canonical unpadded base64url; raise ``ValueError`` on anything else."""
    raw = text.encode("ascii", "strict") if isinstance(text, str) else text
    rest = len(raw) % 4
    if rest == 1:  # a stray character
        raise ValueError("not base64url")
    try:
        decoded = binascii.a2b_base64(raw.translate(_TO_STANDARD) + b"=" * (-rest % 4), strict_mode=True)
    except binascii.Error:  # a byte outside the alphabet
        raise ValueError("not base64url") from None
    unused = _UNUSED_BITS.get(rest)
    if unused is not None and _ALPHABET.index(raw[-1]) & unused:
        raise ValueError("not canonical base64url")
    return decoded


def thumbprint(x: bytes) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an Ed25519 public key given as its raw 32 bytes."""
    # RFC 7638 section 3: the required members only, sorted, no whitespace.
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(x)}, separators=(",", ":"), sort_keys=True
    )
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


class CompactJWS(NamedTuple):
    """A parsed, not yet verified, compact JWS."""

    token: str  # the compact serialization, surrounding whitespace removed
    alg: str
    kid: str
    typ: str
    payload: bytes
    signing_input: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of header and payload: identifies "the very same document" whatever re-encoding."""
        return hashlib.sha256(self.signing_input).digest()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate header member {name!r}")
        result[name] = value
    return result


_HEADER_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


@lru_cache(maxsize=64)  # a signer's headers repeat: one per key and typ
def _header(header_b64: bytes) -> tuple[str, str, str]:
    """The protected header's ``alg``, ``kid`` and ``typ``, checked; refusals are not cached."""
    try:
        header = boundedjson.loads(b64url_decode(header_b64), max_depth=MAX_HEADER_DEPTH, decoder=_HEADER_DECODER)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentRefused(reasons.MALFORMED, str(exc)) from None
    if not isinstance(header, dict):
        raise DocumentRefused(reasons.MALFORMED, "the protected header is not a JSON object")
    alg = header.get("alg")
    if alg != ALG:
        raise DocumentRefused(reasons.UNSUPPORTED_ALG, f"alg {alg!r}: only {ALG!r} is accepted")
    if "crit" in header:
        raise DocumentRefused(reasons.UNSUPPORTED_ALG, "crit header parameters are not supported")
    kid, typ = header.get("kid"), header.get("typ")
    if not isinstance(kid, str) or not kid:
        raise DocumentRefused(reasons.MALFORMED, "the header has no kid")
    if not isinstance(typ, str) or not typ:
        raise DocumentRefused(reasons.WRONG_TYP, "the header has no typ")
    return alg, kid, typ


def parse(token: str | bytes) -> CompactJWS:
    """Split and decode a compact JWS and check its protected header; the signature is not checked.

    Raises :class:`DocumentRefused` with ``oversized``, ``malformed`` or ``unsupported_alg``.
    """
    if len(token) > MAX_DOCUMENT_BYTES:
        raise DocumentRefused(reasons.OVERSIZED, f"{len(token)} bytes, the limit is {MAX_DOCUMENT_BYTES}")
    try:
        raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
    except UnicodeEncodeError:
        raise DocumentRefused(reasons.MALFORMED, "not ASCII: a compact JWS is base64url") from None
    raw = raw.strip()
    parts = raw.split(b".")
    if len(parts) != 3:
        raise DocumentRefused(reasons.MALFORMED, f"a compact JWS has 3 parts, this has {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    if len(header_b64) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise DocumentRefused(reasons.MALFORMED, f"the protected header is larger than {MAX_HEADER_BYTES} bytes")
    alg, kid, typ = _header(header_b64)
    try:
        payload = b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise DocumentRefused(reasons.MALFORMED, str(exc)) from None
    if len(signature) != 64:
        raise DocumentRefused(reasons.BAD_SIGNATURE, f"an Ed25519 signature is 64 bytes, not {len(signature)}")
    # tuple.__new__ with the fields in order: the NamedTuple's keyword __new__ costs 0.5 µs more a document
    fields = (raw.decode("ascii"), alg, kid, typ, payload, header_b64 + b"." + payload_b64, signature)
    parsed: CompactJWS = tuple.__new__(CompactJWS, fields)
    return parsed


def verify_signature(jws: CompactJWS, key: PublicKey) -> None:
    """Raise ``DocumentRefused(bad_signature)`` unless ``key`` signed ``jws``."""
    if not key.verify(jws.signature, jws.signing_input):
        raise DocumentRefused(reasons.BAD_SIGNATURE, f"signature does not verify under kid {jws.kid}")
