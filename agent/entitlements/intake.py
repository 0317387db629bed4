"""Verification of a signed document: the checks of PROTOCOL.md "Signed documents", in order.

Pure: the caller passes the token, the topic's ``typ`` (``None`` for ``edge-agent accept``, which
takes any type), the key ring, the high-water marks and trusted time; the answer is a
:class:`Verified` document, a :class:`Duplicate`, or :class:`~agent.errors.DocumentRefused` with the
reason code. Cheap checks come before the signature, so garbage costs little, and nothing from an
unverified part is believed beyond the refusal it earns.

1. at most 256 KiB; three canonical base64url parts; the header a small, shallow JSON object
   (``oversized``, ``malformed``); ``alg`` exactly ``EdDSA`` (``unsupported_alg``); a known ``typ``,
   the topic's (``wrong_typ``);
2. the very same document as the one of that ``typ`` in force: a redelivery, ignored quietly;
3. a key trusted for that ``kid`` and ``typ`` (``unknown_kid``, ``root_required``,
   ``key_not_allowed``, ``key_expired``) under which the signature verifies (``bad_signature``);
4. the claims of that type with the right JSON types (``invalid_claims``); ``aud`` the device, or
   ``*`` for trust (``wrong_aud``); ``exp`` in the future of trusted time (``expired``), ``nbf`` not
   (``not_yet_valid``);
5. ``seq`` above the last accepted of that type (``rollback``; ``seq_reused`` when equal);
6. a trust document that rotates the roots proves possession of each new one (``bad_root_proof``).

High-water marks come from the store and, for what a lost database took with it, from the sidecar
(``stored=False``): such a mark refuses rollbacks, and lets the very document it names be taken
again rather than ignored as a redelivery.

Trusted time may be *correctable* (``agent/clock.py``): the wall clock reads well below a floor that
only wall-clock readings raised. A document fresher than any accepted of its type, and issued no
later than the wall clock says, vouches for the wall clock: its ``exp`` and ``nbf`` are judged at
the corrected time, and :attr:`Verified.clock_to` tells the caller to correct the clock with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from agent.clock import SKEW, Correctable
from agent.entitlements.marks import Duplicate, HighWater
from agent.entitlements.trust import KeyRing
from agent.errors import DocumentRefused
from protocol import jws, reasons
from protocol.claims import (
    CLAIMS_MODELS,
    ROOT_PROOF,
    TRUST,
    Claims,
    Invalid,
    RootEntry,
    RootProofClaims,
    TrustClaims,
    decode,
)
from protocol.ed25519 import PublicKey
from protocol.timefmt import to_rfc3339

__all__ = ["Duplicate", "HighWater", "Verified", "verify"]  # the marks are marks.py's, named here as before


class Verified(NamedTuple):
    """A document that passed every check and may now be stored and put in force."""

    typ: str
    kid: str
    token: str
    digest: bytes
    claims: Claims
    clock_to: float | None = None  # it vouched for a correction of trusted time to this instant


def verify(
    token: str | bytes,
    *,
    expected_typ: str | None,
    device_id: str,
    keyring: KeyRing,
    high_water: Mapping[str, HighWater],
    now: float,
    correctable: Correctable | None = None,
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
    if held is not None and held.stored and held.digest == digest:
        return Duplicate(parsed.typ, held.seq)

    # A document that may vouch for a correction is judged at the corrected time throughout, key
    # validity included; if it turns out not to vouch (below), the key is judged again at ``now``.
    key_time = now if correctable is None else min(now, correctable.to)
    jws.verify_signature(parsed, keyring.key_for(parsed.kid, parsed.typ, key_time))

    try:
        claims = decode(model, parsed.payload)
    except Invalid as exc:
        raise DocumentRefused(reasons.INVALID_CLAIMS, str(exc)) from None
    audience = "*" if parsed.typ == TRUST else device_id
    if claims.aud != audience:
        raise DocumentRefused(reasons.WRONG_AUD, f"aud {claims.aud!r} is not {audience!r}")
    clock_to = None
    fresh = held is None or claims.seq > held.seq
    if correctable is not None and fresh and claims.iat <= correctable.wall + SKEW:
        clock_to = max(correctable.to, float(claims.iat))  # the document vouches for the wall clock
        now = clock_to
    elif key_time != now:
        keyring.key_for(parsed.kid, parsed.typ, now)
    if claims.exp <= now:
        raise DocumentRefused(reasons.EXPIRED, f"exp {to_rfc3339(claims.exp)} is not after {to_rfc3339(now)}")
    if claims.nbf is not None and claims.nbf > now:
        raise DocumentRefused(reasons.NOT_YET_VALID, f"nbf {to_rfc3339(claims.nbf)} is after {to_rfc3339(now)}")
    if held is not None:
        if claims.seq < held.seq:
            raise DocumentRefused(reasons.ROLLBACK, f"seq {claims.seq} is below {held.seq}, the {parsed.typ} in force")
        if claims.seq == held.seq and (held.stored or held.digest != digest):
            raise DocumentRefused(
                reasons.SEQ_REUSED, f"seq {claims.seq} is the {parsed.typ} in force, but the content differs"
            )
    if isinstance(claims, TrustClaims) and claims.roots is not None:
        _check_root_proofs(claims, keyring)
    # tuple.__new__, in Verified's field order: the NamedTuple's keyword __new__ costs 0.5 µs more a document
    verified: Verified = tuple.__new__(Verified, (parsed.typ, parsed.kid, parsed.token, digest, claims, clock_to))
    return verified


def _roots_of(entries: tuple[RootEntry, ...]) -> list[tuple[str, str]]:
    return [(e.kid, e.jwk.x) for e in entries]


def _check_root_proofs(claims: TrustClaims, keyring: KeyRing) -> None:
    """Every root in ``claims.roots`` that the device does not hold yet signed a ``root-proof`` of this
    very list and seq (PROTOCOL.md "Root rotation"): a fleet is never rotated to a key nobody holds."""
    assert claims.roots is not None
    proven: set[str] = set()
    problems: list[str] = []
    for index, proof in enumerate(claims.root_proofs):
        try:
            parsed = jws.parse(proof)
            if parsed.typ != ROOT_PROOF:
                raise DocumentRefused(reasons.WRONG_TYP, f"typ {parsed.typ!r} is not {ROOT_PROOF!r}")
            entry = next((e for e in claims.roots if e.kid == parsed.kid), None)
            if entry is None:
                raise DocumentRefused(reasons.UNKNOWN_KID, f"kid {parsed.kid} is not one of the new roots")
            jws.verify_signature(parsed, PublicKey(entry.jwk.raw()))
            stated = decode(RootProofClaims, parsed.payload)
        except DocumentRefused as refused:
            problems.append(f"root_proofs[{index}]: {refused.reason}")
            continue
        except Invalid as exc:
            problems.append(f"root_proofs[{index}]: {exc}")
            continue
        if stated.seq != claims.seq or _roots_of(stated.roots) != _roots_of(claims.roots):
            problems.append(f"root_proofs[{index}] signs another list or seq")
            continue
        proven.add(parsed.kid)
    unproven = [e.kid for e in claims.roots if e.kid not in keyring.roots and e.kid not in proven]
    if unproven:
        more = f" ({'; '.join(problems)})" if problems else ""
        raise DocumentRefused(reasons.BAD_ROOT_PROOF, f"no valid proof of possession for {', '.join(unproven)}{more}")
