"""Every attack on a signed document is refused with its reason, and nothing the device holds changes.

The device under attack holds a trust document (seq 1, listing the signing key) and an entitlements
document (seq 5) signed with the signing key; each row throws one hostile payload at it, on a topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agent.device import Device
from agent.entitlements.intake import Duplicate
from agent.errors import DocumentRefused
from cloud_stub import signing
from protocol import reasons
from tests.support.devices import DeviceFactory
from tests.support.documents import DAY, T0, Claims, Keys, b64, b64json, forge, hs256_with_public_key, kid_of


@dataclass
class Scene:
    """What an attack may use: the keys, a claims builder, and the tokens already accepted."""

    keys: Keys
    claims: Claims
    trust_token: str
    entitlements_token: str

    def ents(self, **overrides: Any) -> dict[str, Any]:
        """Valid-looking entitlements claims, seq 6 unless overridden."""
        overrides.setdefault("seq", 6)
        return self.claims.entitlements(**overrides)

    def signed(self, **overrides: Any) -> str:
        """Entitlements signed with the signing key, as the cloud would sign them."""
        return forge(self.keys.signing, self.ents(**overrides))

    def trust(self, signer: Any, listed: Any, **overrides: Any) -> str:
        """A trust document (seq 9 unless overridden) signed by ``signer`` listing ``listed``."""
        overrides.setdefault("seq", 9)
        return forge(signer, self.claims.trust([listed], **overrides), typ="trust")


Attack = Callable[[Scene], "str | bytes"]


def _payload_swapped(s: Scene) -> str:
    header, _, signature = s.entitlements_token.split(".")
    return f"{header}.{b64json(s.ents(services=[]))}.{signature}"


def _signature_of_another(s: Scene) -> str:
    return s.signed().rsplit(".", 1)[0] + "." + s.entitlements_token.rsplit(".", 1)[1]


def _duplicate_alg(s: Scene) -> str:
    header = b'{"alg":"none","alg":"EdDSA","kid":"%s","typ":"entitlements"}' % kid_of(s.keys.signing).encode()
    return forge(s.keys.signing, s.ents(), raw_header=b64(header))


def _thumbprint_mismatch(s: Scene) -> str:
    claims = s.claims.trust([s.keys.other], seq=9)
    claims["keys"][0]["kid"] = kid_of(s.keys.signing)
    return forge(s.keys.root, claims, typ="trust")


def _service(**fields: Any) -> list[dict[str, Any]]:
    return [{"service": "door", "subject": "door:door-2", "expires": "2099-01-01T00:00:00Z", **fields}]


def _root(key: Any) -> dict[str, Any]:
    x = b64(signing.raw_public_key(key.public_key()))
    return {"kid": kid_of(key), "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}


def _proof(key: Any, roots: list[dict[str, Any]], seq: int = 9, **header: Any) -> str:
    return forge(key, {"roots": roots, "seq": seq}, typ=header.pop("typ", "root-proof"), **header)


def _rotation(s: Scene, roots: list[Any], proofs: list[str], signer: Any = None) -> str:
    """A trust document (seq 9) rotating the roots to ``roots`` with ``proofs``."""
    claims = s.claims.trust([s.keys.signing], seq=9, roots=[_root(k) for k in roots], root_proofs=proofs)
    return forge(signer or s.keys.root, claims, typ="trust")


def _two_new_roots_one_proof(s: Scene) -> str:
    roots = [_root(s.keys.other), _root(s.keys.signing)]
    return _rotation(s, [s.keys.other, s.keys.signing], [_proof(s.keys.other, roots)])


E, T = "entitlements", "trust"
ATTACKS: list[tuple[str, str, Attack, str]] = [
    # -- the algorithm ---------------------------------------------------------------------------
    ("alg none", E, lambda s: forge(None, s.ents(), alg="none"), reasons.UNSUPPORTED_ALG),
    (
        "HS256 keyed with the public key",
        E,
        lambda s: hs256_with_public_key(s.keys.signing, s.ents()),
        reasons.UNSUPPORTED_ALG,
    ),
    ("ES256 label", E, lambda s: forge(s.keys.signing, s.ents(), alg="ES256"), reasons.UNSUPPORTED_ALG),
    ("alg in lower case", E, lambda s: forge(s.keys.signing, s.ents(), alg="eddsa"), reasons.UNSUPPORTED_ALG),
    (
        "crit header",
        E,
        lambda s: forge(s.keys.signing, s.ents(), extra_header={"crit": ["exp"]}),
        reasons.UNSUPPORTED_ALG,
    ),
    ("duplicate alg in the header", E, _duplicate_alg, reasons.MALFORMED),
    # -- the key ---------------------------------------------------------------------------------
    ("unknown kid", E, lambda s: forge(s.keys.other, s.ents()), reasons.UNKNOWN_KID),
    (
        "right kid, wrong key",
        E,
        lambda s: forge(s.keys.other, s.ents(), kid=kid_of(s.keys.signing)),
        reasons.BAD_SIGNATURE,
    ),
    ("root kid, wrong key", E, lambda s: forge(s.keys.other, s.ents(), kid=kid_of(s.keys.root)), reasons.BAD_SIGNATURE),
    ("payload swapped under a valid signature", E, _payload_swapped, reasons.BAD_SIGNATURE),
    ("signature of another document", E, _signature_of_another, reasons.BAD_SIGNATURE),
    # -- typ, aud, time, seq ---------------------------------------------------------------------
    ("wrong typ for the topic", E, lambda s: forge(s.keys.signing, s.ents(), typ="firmware-job"), reasons.WRONG_TYP),
    ("entitlements on the trust topic", T, lambda s: s.signed(), reasons.WRONG_TYP),
    ("unknown typ", E, lambda s: forge(s.keys.signing, s.ents(), typ="JWT"), reasons.WRONG_TYP),
    ("wrong aud", E, lambda s: s.signed(aud="ffffffffffff"), reasons.WRONG_AUD),
    ("trust's aud on entitlements", E, lambda s: s.signed(aud="*"), reasons.WRONG_AUD),
    ("expired", E, lambda s: s.signed(exp=int(T0 - 1)), reasons.EXPIRED),
    ("expires this very second", E, lambda s: s.signed(exp=int(T0)), reasons.EXPIRED),
    ("not yet valid", E, lambda s: s.signed(nbf=int(T0 + DAY)), reasons.NOT_YET_VALID),
    ("seq rollback", E, lambda s: s.signed(seq=4), reasons.ROLLBACK),
    ("same seq, other content", E, lambda s: s.signed(seq=5, services=[]), reasons.SEQ_REUSED),
    # -- shape -----------------------------------------------------------------------------------
    ("truncated", E, lambda s: s.signed()[:-10], reasons.BAD_SIGNATURE),
    ("truncated to two parts", E, lambda s: s.signed().rsplit(".", 1)[0], reasons.MALFORMED),
    ("empty", E, lambda s: "", reasons.MALFORMED),
    ("garbage", E, lambda s: "not a jws at all", reasons.MALFORMED),
    ("binary garbage", E, lambda s: bytes(range(256)), reasons.MALFORMED),
    ("four parts", E, lambda s: s.signed() + ".e30", reasons.MALFORMED),
    ("oversized", E, lambda s: s.signed(pad="x" * 300_000), reasons.OVERSIZED),
    ("padded base64url", E, lambda s: s.signed() + "==", reasons.MALFORMED),
    (
        "header not an object",
        E,
        lambda s: forge(s.keys.signing, s.ents(), raw_header=b64json(["EdDSA"])),
        reasons.MALFORMED,
    ),
    (
        "payload not JSON",
        E,
        lambda s: forge(s.keys.signing, None, raw_payload=b64(b"{not json")),
        reasons.INVALID_CLAIMS,
    ),
    ("payload a JSON array", E, lambda s: forge(s.keys.signing, [1, 2, 3]), reasons.INVALID_CLAIMS),
    # -- claim types -----------------------------------------------------------------------------
    ("seq as a string", E, lambda s: s.signed(seq="6"), reasons.INVALID_CLAIMS),
    ("seq as a boolean", E, lambda s: s.signed(seq=True), reasons.INVALID_CLAIMS),
    ("seq negative", E, lambda s: s.signed(seq=-1), reasons.INVALID_CLAIMS),
    ("seq beyond 64 bits", E, lambda s: s.signed(seq=2**64), reasons.INVALID_CLAIMS),
    ("exp as a float", E, lambda s: s.signed(exp=T0 + DAY + 0.5), reasons.INVALID_CLAIMS),
    ("exp as RFC 3339", E, lambda s: s.signed(exp="2099-01-01T00:00:00Z"), reasons.INVALID_CLAIMS),
    ("exp beyond year 9999", E, lambda s: s.signed(exp=10**12), reasons.INVALID_CLAIMS),
    ("aud as a list", E, lambda s: s.signed(aud=["0c110512ab34"]), reasons.INVALID_CLAIMS),
    ("services not a list", E, lambda s: s.signed(services={"door": "door-2"}), reasons.INVALID_CLAIMS),
    (
        "expiry without a zone",
        E,
        lambda s: s.signed(services=_service(expires="2099-01-01T00:00:00")),
        reasons.INVALID_CLAIMS,
    ),
    (
        "an impossible expiry",
        E,
        lambda s: s.signed(services=_service(expires="2099-02-30T00:00:00Z")),
        reasons.INVALID_CLAIMS,
    ),
    ("an expiry as a number", E, lambda s: s.signed(services=_service(expires=4070908800)), reasons.INVALID_CLAIMS),
    (
        "an expiry with a space for T",
        E,
        lambda s: s.signed(services=_service(expires="2099-01-01 00:00:00Z")),
        reasons.INVALID_CLAIMS,
    ),
    (
        "an expiry with a bare offset",
        E,
        lambda s: s.signed(services=_service(expires="2099-01-01T00:00:00+0800")),
        reasons.INVALID_CLAIMS,
    ),
    (
        "a service entry as a list",
        E,
        lambda s: s.signed(services=[["door", "door:door-2", "2099-01-01T00:00:00Z"]]),
        reasons.INVALID_CLAIMS,
    ),
    ("subject with a dot", E, lambda s: s.signed(services=_service(subject="door:door.2")), reasons.INVALID_CLAIMS),
    ("unknown project type", E, lambda s: s.signed(project={"id": "p", "type": "castle"}), reasons.INVALID_CLAIMS),
    (
        "no project",
        E,
        lambda s: forge(s.keys.signing, {k: v for k, v in s.ents().items() if k != "project"}),
        reasons.INVALID_CLAIMS,
    ),
    # -- trust -----------------------------------------------------------------------------------
    ("trust signed by a signing key", T, lambda s: s.trust(s.keys.signing, s.keys.other), reasons.ROOT_REQUIRED),
    ("trust signed by an unknown key", T, lambda s: s.trust(s.keys.other, s.keys.other), reasons.UNKNOWN_KID),
    ("an older trust document", T, lambda s: s.trust(s.keys.root, s.keys.other, seq=0), reasons.ROLLBACK),
    (
        "trust with a device's aud",
        T,
        lambda s: s.trust(s.keys.root, s.keys.other, aud="0c110512ab34"),
        reasons.WRONG_AUD,
    ),
    ("trust whose kid is not the key's thumbprint", T, _thumbprint_mismatch, reasons.INVALID_CLAIMS),
    # -- root rotation (PROTOCOL.md "Root rotation") ---------------------------------------------
    ("rotation without a proof", T, lambda s: _rotation(s, [s.keys.other], []), reasons.BAD_ROOT_PROOF),
    (
        "rotation proven for another seq",
        T,
        lambda s: _rotation(s, [s.keys.other], [_proof(s.keys.other, [_root(s.keys.other)], seq=8)]),
        reasons.BAD_ROOT_PROOF,
    ),
    (
        "rotation proven for another list",
        T,
        lambda s: _rotation(s, [s.keys.other], [_proof(s.keys.other, [_root(s.keys.other), _root(s.keys.root)])]),
        reasons.BAD_ROOT_PROOF,
    ),
    (
        "rotation proven by another key under the new root's kid",
        T,
        lambda s: _rotation(
            s, [s.keys.other], [_proof(s.keys.signing, [_root(s.keys.other)], kid=kid_of(s.keys.other))]
        ),
        reasons.BAD_ROOT_PROOF,
    ),
    (
        "rotation proven with the wrong typ",
        T,
        lambda s: _rotation(s, [s.keys.other], [_proof(s.keys.other, [_root(s.keys.other)], typ="trust")]),
        reasons.BAD_ROOT_PROOF,
    ),
    (
        "rotation whose proof is a nesting bomb",
        T,
        lambda s: _rotation(s, [s.keys.other], [b64(b"[" * 1500 + b"]" * 1500) + ".e30." + b64(bytes(64))]),
        reasons.BAD_ROOT_PROOF,  # the proof is malformed: the detail says so
    ),
    ("rotation with one of two new roots proven", T, _two_new_roots_one_proof, reasons.BAD_ROOT_PROOF),
    (
        "rotation signed by a signing key",
        T,
        lambda s: _rotation(s, [s.keys.other], [_proof(s.keys.other, [_root(s.keys.other)])], signer=s.keys.signing),
        reasons.ROOT_REQUIRED,
    ),
    (
        "rotation to no root at all",
        T,
        lambda s: forge(s.keys.root, s.claims.trust([s.keys.signing], seq=9, roots=[]), typ="trust"),
        reasons.INVALID_CLAIMS,
    ),
]


async def _held(device: Device) -> tuple[Any, ...]:
    """What the device holds, in memory and in its database file."""
    snapshot = await device._store.snapshot()
    memory = (device.documents, device.entitlements.seq if device.entitlements else None, device.status()["trust"])
    return memory, snapshot.documents, snapshot.services, snapshot.signing_keys


@pytest.fixture
async def scene(device: Device, keys: Keys, claims: Claims) -> Scene:
    """A device holding trust seq 1 and entitlements seq 5."""
    trust_token = forge(keys.root, claims.trust([keys.signing]), typ="trust")
    entitlements_token = forge(keys.signing, claims.entitlements(seq=5))
    await device.accept(trust_token, "trust")
    await device.accept(entitlements_token, "entitlements")
    return Scene(keys, claims, trust_token, entitlements_token)


@pytest.mark.parametrize(("topic", "attack", "reason"), [row[1:] for row in ATTACKS], ids=[row[0] for row in ATTACKS])
async def test_attack_is_refused_and_changes_nothing(
    topic: str, attack: Attack, reason: str, scene: Scene, device: Device, devices: DeviceFactory
) -> None:
    """The hostile document is refused with its reason code; memory and store are as before, also after a restart."""
    before = await _held(device)
    with pytest.raises(DocumentRefused) as refused:
        await device.accept(attack(scene), topic)
    assert refused.value.reason == reason, refused.value.detail
    assert await _held(device) == before
    assert await _held(await devices.restart(device)) == before


async def test_a_signing_key_dropped_by_a_newer_trust_document_is_refused(scene: Scene, device: Device) -> None:
    """After trust seq 2 lists only a new key, a document signed with the old key is refused."""
    await device.accept(scene.trust(scene.keys.root, scene.keys.other, seq=2), "trust")
    before = await _held(device)
    with pytest.raises(DocumentRefused) as refused:
        await device.accept(scene.signed(), "entitlements")
    assert refused.value.reason == reasons.UNKNOWN_KID
    assert await _held(device) == before
    assert (await device.accept(forge(scene.keys.other, scene.ents(seq=7)), "entitlements")).seq == 7


async def test_a_signing_key_past_not_after_is_refused(device: Device, keys: Keys, claims: Claims) -> None:
    """A signing key listed with a not_after in the past of trusted time signs nothing."""
    await device.accept(forge(keys.root, claims.trust([keys.signing], not_after="2026-01-01T00:00:00Z"), typ="trust"))
    with pytest.raises(DocumentRefused) as refused:
        await device.accept(forge(keys.signing, claims.entitlements()))
    assert refused.value.reason == reasons.KEY_EXPIRED


async def test_signing_keys_lapse_with_their_trust_document(
    device: Device, keys: Keys, claims: Claims, devices: DeviceFactory
) -> None:
    """Once the trust document in force expires, its signing keys sign nothing; root keys still do."""
    await device.accept(forge(keys.root, claims.trust([keys.signing], exp=int(T0 + DAY)), typ="trust"))
    devices.clock.run(2 * DAY)
    with pytest.raises(DocumentRefused) as refused:
        await device.accept(forge(keys.signing, claims.entitlements(iat=int(T0 + 2 * DAY), exp=int(T0 + 9 * DAY))))
    assert refused.value.reason == reasons.KEY_EXPIRED
    accepted = await device.accept(forge(keys.root, claims.entitlements(iat=int(T0 + 2 * DAY), exp=int(T0 + 9 * DAY))))
    assert accepted.typ == "entitlements"


async def test_the_same_document_again_is_ignored_quietly(scene: Scene, device: Device) -> None:
    """A redelivery of the document in force is a duplicate, not a refusal, even with a newline after it."""
    outcome = await device.accept(scene.entitlements_token + "\n", "entitlements")
    assert isinstance(outcome, Duplicate)
    assert (outcome.typ, outcome.seq) == ("entitlements", 5)


async def test_root_keys_may_sign_any_type(device: Device, keys: Keys, claims: Claims) -> None:
    """A root key signs entitlements directly, without any trust document."""
    accepted = await device.accept(forge(keys.root, claims.entitlements()), "entitlements")
    assert accepted.seq == 1


async def test_a_key_signs_only_the_types_its_trust_entry_names(
    scene: Scene, device: Device, devices: DeviceFactory
) -> None:
    """A release signer (typs ["firmware-job"]) cannot sign entitlements or commands, before and after a
    restart; a key without typs still signs all three."""
    claims = scene.claims.trust([scene.keys.signing, scene.keys.other], seq=9)
    claims["keys"][0]["typs"] = ["firmware-job"]
    await device.accept(forge(scene.keys.root, claims, typ="trust"), "trust")
    for current in (device, await devices.restart(device)):
        with pytest.raises(DocumentRefused) as refused:
            await current.accept(scene.signed(), "entitlements")
        assert refused.value.reason == reasons.KEY_NOT_ALLOWED
        command = {"aud": "0c110512ab34", "iat": int(T0), "exp": int(T0 + DAY), "seq": 1, "id": "c", "op": "reboot"}
        with pytest.raises(DocumentRefused) as refused:
            await current.accept(forge(scene.keys.signing, command, typ="command"), "command")
        assert refused.value.reason == reasons.KEY_NOT_ALLOWED
        device = current
    assert (await device.accept(forge(scene.keys.other, scene.ents(seq=7)), "entitlements")).seq == 7


async def test_a_proven_rotation_replaces_the_roots(scene: Scene, device: Device, devices: DeviceFactory) -> None:
    """Rotated to a new root with its proof: the old root signs nothing from then on, the new one does,
    the signing keys of the rotating document stay, and all of it after a restart too."""
    roots = [_root(scene.keys.other)]
    await device.accept(_rotation(scene, [scene.keys.other], [_proof(scene.keys.other, roots)]), "trust")
    device = await devices.restart(device)
    assert sorted(device.keyring.roots) == [kid_of(scene.keys.other)]
    with pytest.raises(DocumentRefused) as refused:
        await device.accept(forge(scene.keys.root, scene.ents(seq=7)), "entitlements")
    assert refused.value.reason == reasons.UNKNOWN_KID
    assert (await device.accept(forge(scene.keys.signing, scene.ents(seq=7)), "entitlements")).seq == 7
    assert (await device.accept(forge(scene.keys.other, scene.ents(seq=8)), "entitlements")).seq == 8
