"""Document intake (verify, validate, derive; no fsync) vs. raw Ed25519 verify + json.loads (goal <= 1.3x).

The floor verifies with libsodium (PyNaCl's ``VerifyKey``), as the device does, and the faster of the two
Ed25519 implementations here; cryptography's verify + json.loads (the device's before its sixth stop) is
measured beside it, for information. Also measures the JOSE libraries considered, on the same document,
against the same floor: the evidence for verifying with a primitive directly (protocol/jws.py).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws as joserfc_jws
from joserfc.jwk import OKPKey
from nacl.signing import VerifyKey

from agent.entitlements.index import Entitlements
from agent.entitlements.intake import verify
from agent.entitlements.trust import KeyRing
from bench.common import Result, interleaved
from cloud_stub import signing
from protocol import jws
from protocol.claims import _epoch_of
from tests.support.documents import DAY, DEVICE_ID, T0, Claims, commercial_project, forge, svc


def _case(name: str, services: list[dict[str, object]], *, libraries: bool, goal: str) -> list[Result]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    token = forge(key, Claims().entitlements(project=commercial_project(), services=services))
    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode()
    signature, payload = jws.b64url_decode(signature_b64), jws.b64url_decode(payload_b64)
    ring = KeyRing.from_roots((signing.verifier(public),))
    now = T0 + DAY
    sodium = VerifyKey(signing.raw_public_key(public))

    def floor() -> object:
        sodium.verify(signing_input, signature)
        return json.loads(payload)

    def with_cryptography() -> object:
        public.verify(signature, signing_input)
        return json.loads(payload)

    def ours() -> object:
        _epoch_of.cache_clear()  # each document as if it were the first (a re-issued one repeats its expiries)
        verified = verify(token, expected_typ="entitlements", device_id=DEVICE_ID, keyring=ring, high_water={}, now=now)
        return Entitlements.from_claims(verified.claims)  # type: ignore[union-attr, arg-type]

    jrfc_key = OKPKey.import_key(public)

    def with_joserfc() -> object:
        with warnings.catch_warnings():  # joserfc >= 1.8 warns that RFC 9864 deprecates "EdDSA"
            warnings.simplefilter("ignore")
            return json.loads(joserfc_jws.deserialize_compact(token, jrfc_key, algorithms=["EdDSA"]).payload)

    def with_pyjwt() -> object:
        return jwt.decode(token, public, algorithms=["EdDSA"], options={"verify_aud": False, "verify_exp": False})

    floor_label = "Ed25519 verify (libsodium) + json.loads"
    number = max(3, 30_000 // (len(services) + 100))
    rows = [interleaved(f"intake, {name}", floor_label, floor, ours, goal=goal, number=number)]
    info: dict[str, Any] = {"goal": "info", "number": number}
    if libraries:
        rows += [
            interleaved(f"cryptography verify + json.loads, {name}", floor_label, floor, with_cryptography, **info),
            interleaved(f"joserfc verify only, {name}", floor_label, floor, with_joserfc, **info),
            interleaved(f"PyJWT verify only, {name}", floor_label, floor, with_pyjwt, **info),
        ]
    return rows


def _services(count: int) -> list[dict[str, object]]:
    """The shared vectors' three, then residents' apps expiring on 30 different days (renewals come in batches)."""
    small = [svc("door", "door:door-2"), svc("personnel_app", "account:a-42"), svc("attendance", plan="0-200")]
    return small[:count] + [svc("app", f"account:r-{i}", days=300 + i % 30) for i in range(count - len(small))]


def run() -> list[Result]:
    """The shared vectors' document (3 services), and 10, 100 and 1,000 services; the cost per service."""
    rows = _case("3 services", _services(3), libraries=True, goal="<= 1.3")
    for count in (10, 100, 1000):
        rows += _case(f"{count:,} services", _services(count), libraries=count == 100, goal="info")
    ten, thousand = (next(r for r in rows if r.name == f"intake, {n} services") for n in ("10", "1,000"))
    ours = (thousand.ours_seconds - ten.ours_seconds) / 990
    floor = (thousand.floor_seconds - ten.floor_seconds) / 990
    rows.append(Result("intake cost per service (10 -> 1,000 services)", floor_label_slope, floor, ours, ours / floor,
                       "info"))  # fmt: skip
    rows.append(Result("intake cost per service, against 2 µs", "the goal", 2e-6, ours, ours / 2e-6, "<= 1.0"))
    return rows


floor_label_slope = "the floor's cost per service"
