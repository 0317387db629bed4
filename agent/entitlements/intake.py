"""Verification of a signed document: the checks of PROTOCOL.md "Signed documents", in order.

Pure: the caller passes the token, the topic's ``typ`` (``None`` for ``edge-agent accept``, which
takes any type), the key ring, the high-water marks and trusted time; the answer is a
:class:`Verified` document, a :class:`Duplicate`, or :class:`~agent.errors.DocumentRefused` with the
reason code. Cheap checks come before the signature, so garbage costs little, and nothing from an
unverified part is believed beyond the refusal it earns.

1. at most 256 KiB; three canonical base64url parts; the header a JSON object (``oversized``,
   ``malformed``); ``alg`` exactly ``EdDSA`` (``unsupported_alg``); a known ``typ``, the topic's
   (``wrong_typ``);
2. the very same document as the one of that ``typ`` in force: a redelivery, ignored quietly;
3. a key trusted for that ``kid`` and ``typ`` (``unknown_kid``, ``root_required``, ``key_expired``)
   under which the signature verifies (``bad_signature``);
4. the claims of that type with the right JSON types (``invalid_claims``); ``aud`` the device, or
   ``*`` for trust (``wrong_aud``); ``exp`` in the future of trusted time (``expired``), ``nbf`` not
   (``not_yet_valid``);
5. ``seq`` above the last accepted of that type (``rollback``; ``seq_reused`` when equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from pydantic import ValidationError

from agent.entitlements import jws, reasons
from agent.entitlements.documents import CLAIMS_MODELS, TRUST, Claims, describe_validation_error
from agent.entitlements.trust import KeyRing
from agent.errors import DocumentRefused
from agent.timefmt import to_rfc3339


class HighWater(NamedTuple):
    """The last accepted document of a type: its ``seq`` and the digest of its signed bytes."""

    seq: int
    digest: bytes


class Verified(NamedTuple):
    """A document that passed every check and may now be stored and put in force."""

    typ: str
    kid: str
    token: str
    digest: bytes
    claims: Claims


class Duplicate(NamedTuple):
    """A redelivery of the document of ``typ`` already in force (PROTOCOL.md: ignored quietly)."""

    typ: str
    seq: int


def verify(
    token: str | bytes,
    *,
    expected_typ: str | None,
    device_id: str,
    keyring: KeyRing,
    high_water: Mapping[str, HighWater],
    now: float,
) -> Verified | Duplicate:
    """Check ``token`` against every rule of PROTOCOL.md "Signed documents"; see the module docstring."""
    parsed = jws.parse(token)
    model = CLAIMS_MODELS.get(parsed.typ)
    if model is None:
        raise DocumentRefused(reasons.WRONG_TYP, f"typ {parsed.typ!r} is not one of {', '.join(CLAIMS_MODELS)}")
    if expected_typ is not None and parsed.typ != expected_typ:
        raise DocumentRefused(reasons.WRONG_TYP, f"a {parsed.typ} document where a {expected_typ} document belongs")
    held = high_water.get(parsed.typ)
    digest = parsed.digest
    if held is not None and held.digest == digest:
        return Duplicate(parsed.typ, held.seq)

    jws.verify_signature(parsed, keyring.key_for(parsed.kid, parsed.typ, now))

    try:
        claims = model.model_validate_json(parsed.payload)
    except ValidationError as exc:
        raise DocumentRefused(reasons.INVALID_CLAIMS, describe_validation_error(exc)) from None
    audience = "*" if parsed.typ == TRUST else device_id
    if claims.aud != audience:
        raise DocumentRefused(reasons.WRONG_AUD, f"aud {claims.aud!r} is not {audience!r}")
    if claims.exp <= now:
        raise DocumentRefused(reasons.EXPIRED, f"exp {to_rfc3339(claims.exp)} is not after {to_rfc3339(now)}")
    if claims.nbf is not None and claims.nbf > now:
        raise DocumentRefused(reasons.NOT_YET_VALID, f"nbf {to_rfc3339(claims.nbf)} is after {to_rfc3339(now)}")
    if held is not None:
        if claims.seq < held.seq:
            raise DocumentRefused(reasons.ROLLBACK, f"seq {claims.seq} is below {held.seq}, the {parsed.typ} in force")
        if claims.seq == held.seq:
            raise DocumentRefused(
                reasons.SEQ_REUSED, f"seq {claims.seq} is the {parsed.typ} in force, but the content differs"
            )
    return Verified(typ=parsed.typ, kid=parsed.kid, token=parsed.token, digest=digest, claims=claims)
