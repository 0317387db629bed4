"""Document intake (verify, validate, derive; no fsync) vs. raw Ed25519 verify + json.loads (goal <= 1.3x).

Also measures the JOSE libraries considered, on the same document, against the same floor: the
evidence for verifying with ``cryptography`` directly (protocol/jws.py).
"""

from __future__ import annotations

import json
import warnings

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws as joserfc_jws
from joserfc.jwk import OKPKey

from agent.entitlements.index import Entitlements
from agent.entitlements.intake import verify
from agent.entitlements.trust import KeyRing
from bench.common import Result, interleaved
from protocol import jws
from tests.support.documents import DAY, DEVICE_ID, T0, Claims, commercial_project, forge, svc


def _case(name: str, services: list[dict[str, object]]) -> list[Result]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    token = forge(key, Claims().entitlements(project=commercial_project(), services=services))
    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode()
    signature, payload = jws.b64url_decode(signature_b64), jws.b64url_decode(payload_b64)
    ring = KeyRing.from_roots((public,))
    now = T0 + DAY

    def floor() -> object:
        public.verify(signature, signing_input)
        return json.loads(payload)

    def ours() -> object:
        verified = verify(token, expected_typ="entitlements", device_id=DEVICE_ID, keyring=ring, high_water={}, now=now)
        return Entitlements.from_claims(verified.claims)  # type: ignore[union-attr, arg-type]

    jrfc_key = OKPKey.import_key(public)

    def with_joserfc() -> object:
        with warnings.catch_warnings():  # joserfc >= 1.8 warns that RFC 9864 deprecates "EdDSA"
            warnings.simplefilter("ignore")
            return json.loads(joserfc_jws.deserialize_compact(token, jrfc_key, algorithms=["EdDSA"]).payload)

    def with_pyjwt() -> object:
        return jwt.decode(token, public, algorithms=["EdDSA"], options={"verify_aud": False, "verify_exp": False})

    floor_label = "Ed25519 verify + json.loads"
    return [
        interleaved(f"intake, {name}", floor_label, floor, ours, goal="<= 1.3", number=300),
        interleaved(f"joserfc verify only, {name}", floor_label, floor, with_joserfc, goal="info", number=300),
        interleaved(f"PyJWT verify only, {name}", floor_label, floor, with_pyjwt, goal="info", number=300),
    ]


def run() -> list[Result]:
    """The shared vectors' document (3 services) and a project with 100 services."""
    small = [svc("door", "door:door-2"), svc("personnel_app", "account:a-42"), svc("attendance", plan="0-200")]
    large = small + [svc("app", f"account:r-{i}") for i in range(97)]
    return _case("3 services", small) + _case("100 services", large)
