"""The JWS parser: strict, total (never an unexpected exception), and interoperable."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.entitlements.intake import verify
from agent.entitlements.trust import KeyRing
from agent.errors import DocumentRefused
from cloud_stub import signing
from protocol import jws
from protocol.reasons import REFUSAL_REASONS
from tests.support.documents import DEVICE_ID, T0, Claims, forge

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
VALID = forge(SIGNER, Claims().entitlements())
RING = KeyRing.from_roots((signing.verifier(SIGNER.public_key()),))


def _verify(token: str | bytes) -> object:
    return verify(token, expected_typ="entitlements", device_id=DEVICE_ID, keyring=RING, high_water={}, now=T0)


def test_rfc8037_thumbprint() -> None:
    """The RFC 8037 appendix A.3 key has the thumbprint the RFC gives."""
    x = jws.b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    assert jws.thumbprint(x) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_rfc8037_signature() -> None:
    """The RFC 8037 appendix A.4 signature verifies with our base64url and Ed25519 path."""
    key = Ed25519PublicKey.from_public_bytes(jws.b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
    signature = jws.b64url_decode(
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )
    key.verify(signature, b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc")


def test_a_valid_token_verifies() -> None:
    """The forge's well-formed token passes (so the refusals below are meaningful)."""
    assert _verify(VALID).typ == "entitlements"  # type: ignore[attr-defined]


def test_what_we_sign_verifies_with_an_independent_library() -> None:
    """cloud_stub's signer produces tokens PyJWT accepts as EdDSA JWS."""
    token = signing.sign(SIGNER, "entitlements", {"aud": DEVICE_ID, "seq": 1})
    decoded = jwt.decode(token, SIGNER.public_key(), algorithms=["EdDSA"], audience=DEVICE_ID)
    assert decoded["seq"] == 1
    assert jwt.get_unverified_header(token)["kid"] == signing.key_thumbprint(SIGNER.public_key())


@given(st.binary())
def test_base64url_round_trip(data: bytes) -> None:
    """Encoding then decoding gives the bytes back."""
    assert jws.b64url_decode(jws.b64url_encode(data)) == data


@given(st.binary(min_size=1))
def test_base64url_has_one_encoding(data: bytes) -> None:
    """Padding, standard-alphabet characters and non-zero trailing bits are all refused."""
    encoded = jws.b64url_encode(data)
    with pytest.raises(ValueError, match="base64url"):
        jws.b64url_decode(encoded + "=")
    if len(encoded) % 4 in (2, 3):
        last = B64URL.index(encoded[-1])
        sloppy = encoded[:-1] + B64URL[last | (1 if len(encoded) % 4 == 3 else 3)]
        if sloppy != encoded:
            with pytest.raises(ValueError, match="base64url"):
                jws.b64url_decode(sloppy)
    standard = base64.b64encode(data).decode().rstrip("=")
    if standard != encoded:
        with pytest.raises(ValueError, match="base64url"):
            jws.b64url_decode(standard)


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=2048), st.text(max_size=2048)))
def test_anything_is_parsed_or_refused(data: bytes | str) -> None:
    """Arbitrary input either parses or is refused with a reason; nothing else escapes."""
    try:
        _verify(data)
    except DocumentRefused as refused:
        outcome = refused.reason
    else:
        outcome = "accepted"
    assert outcome in REFUSAL_REASONS


@settings(max_examples=500)
@given(position=st.integers(min_value=0, max_value=len(VALID) - 1), replacement=st.sampled_from(B64URL + ".=+/ "))
def test_any_one_character_changed_is_refused(position: int, replacement: str) -> None:
    """Changing any single character of a valid token, anywhere, gets it refused."""
    if VALID[position] == replacement:
        return
    mutated = VALID[:position] + replacement + VALID[position + 1 :]
    if mutated.strip() == VALID:
        return  # surrounding whitespace is not part of the token
    with pytest.raises(DocumentRefused):
        _verify(mutated)


@given(cut=st.integers(min_value=0, max_value=len(VALID) - 1))
def test_any_truncation_is_refused(cut: int) -> None:
    """A token cut short anywhere is refused."""
    with pytest.raises(DocumentRefused):
        _verify(VALID[:cut])


@given(st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False))
def test_rfc3339_formatting_round_trips(epoch: float) -> None:
    """Times go out as RFC 3339 UTC with a Z and read back within a millisecond of what they were."""
    from datetime import datetime

    from protocol.timefmt import to_rfc3339

    text = to_rfc3339(epoch)
    assert text.endswith("Z")
    assert len(text) in (20, 24)
    assert abs(datetime.fromisoformat(text).timestamp() - epoch) < 0.001 + 1e-6 * abs(epoch) / 1e9


def test_service_expiries_are_epoch_seconds_whatever_their_offset_and_unknown_members_are_ignored() -> None:
    """Service entries are validated as dicts (docs/performance.md): the expiry's offset is honoured, a member
    a newer cloud adds is ignored (PROTOCOL.md: a reader ignores fields it does not know)."""
    from protocol.claims import EntitlementsClaims, decode

    payload = {
        "aud": "0c110512ab34", "iat": 1, "exp": 2, "seq": 1, "project": {"id": "p", "type": "community"},
        "services": [
            {"service": "app", "subject": "account:a", "expires": "2027-01-01T08:00:00+08:00", "tier": "gold"},
            {"service": "door", "subject": "door:d", "expires": "2027-01-01T00:00:00.5Z", "plan": None},
        ],
    }  # fmt: skip
    claims = decode(EntitlementsClaims, json.dumps(payload))
    assert [(s["expires"], s.get("plan")) for s in claims.services] == [(1798761600.0, None), (1798761600.5, None)]
    assert "tier" not in claims.services[0]


def test_claims_nested_thousands_deep_are_refused_naming_the_problem() -> None:
    """A command's free-form ``args`` nested 100,000 deep is refused as invalid claims, not a crash of the
    decoder (PROTOCOL.md: hostile payloads get a clear refusal)."""
    from protocol.claims import CommandClaims, Invalid, decode

    head = b'{"aud":"0c110512ab34","iat":1,"exp":2,"seq":1,"id":"c-1","op":"resync","args":{"a":'
    with pytest.raises(Invalid, match="nested too deeply"):
        decode(CommandClaims, head + b"[" * 100_000 + b"]" * 100_000 + b"}}")


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"services": [{"service": "door", "subject": "project", "expires": 4070908800}]}, "services[0].expires"),
        ({"project": {"id": "p", "type": "castle"}}, "project.type"),
        ({"project": None}, "project"),
        ({"seq": "6"}, "seq"),
    ],
    ids=["an expiry as a number", "an unknown project type", "no project", "seq as a string"],
)
def test_a_refused_claim_is_named(payload: dict[str, object], where: str) -> None:
    """The refusal's text starts with the offending member's path, as the device reports it."""
    from protocol.claims import EntitlementsClaims, Invalid, decode

    body = {"aud": "0c110512ab34", "iat": 1, "exp": 2, "seq": 1, "project": {"id": "p", "type": "community"}}
    with pytest.raises(Invalid) as refused:
        decode(EntitlementsClaims, json.dumps({**body, **payload}))
    assert str(refused.value).startswith(f"{where}: "), refused.value
