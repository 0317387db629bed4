"""The device's Ed25519 (libsodium through PyNaCl, ``protocol/ed25519.py``) against the cloud's signer
(cryptography): what one signs the other accepts, and nothing else; root keys read from PEM exactly."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_stub import signing
from protocol.ed25519 import PublicKey, from_pem

SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PEM = SIGNER.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
_DER = SIGNER.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _pem(der: bytes) -> bytes:
    return b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"


@settings(max_examples=50, deadline=None)
@given(message=st.binary(max_size=2048), flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_what_the_cloud_signs_verifies_and_a_flipped_bit_does_not(message: bytes, flip: int) -> None:
    key = signing.verifier(SIGNER.public_key())
    signature = SIGNER.sign(message)
    assert key.verify(signature, message)
    tampered = bytearray(signature)
    tampered[flip // 8] ^= 1 << (flip % 8)
    assert not key.verify(bytes(tampered), message)
    assert not key.verify(signature, message + b"\0")


def test_another_key_a_short_signature_and_a_short_key_are_refused() -> None:
    other = signing.verifier(Ed25519PrivateKey.generate().public_key())
    signature = SIGNER.sign(b"document")
    assert not other.verify(signature, b"document")
    assert not signing.verifier(SIGNER.public_key()).verify(signature[:63], b"document")
    with pytest.raises(ValueError, match="32 bytes, not 31"):
        PublicKey(bytes(31))


def test_a_root_key_is_read_from_its_pem_and_names_the_same_key() -> None:
    key = from_pem(b"a comment before the block\n" + PEM)
    assert key == signing.verifier(SIGNER.public_key())
    assert key.verify(SIGNER.sign(b"x"), b"x")


@pytest.mark.parametrize(
    ("pem", "says"),
    [
        (b"", "no -----BEGIN PUBLIC KEY----- block"),
        (b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n", "not base64"),
        (
            generate_private_key(SECP256R1())
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
            "not an Ed25519 public key",
        ),
        (  # the same length as an Ed25519 key's, another algorithm (X25519, id 1.3.101.110)
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
            "not an Ed25519 public key",
        ),
        (_pem(_DER + b"\0"), "not an Ed25519 public key"),  # a key with a byte after it
    ],
    ids=["empty", "not base64", "EC P-256", "X25519", "trailing bytes"],
)
def test_a_pem_that_is_not_one_ed25519_key_is_refused(pem: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        from_pem(pem)
