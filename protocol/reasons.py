"""Reason codes: why a signed document was refused, and why a decision came out as it did.

These strings go on the wire (PROTOCOL.md events) and out of the CLI, and tools outside the project
match on them: never rename one.
"""

from __future__ import annotations

from typing import Final

# -- refusals of a signed document (PROTOCOL.md "Signed documents") -----------------------------
OVERSIZED: Final = "oversized"  # more than 256 KiB
MALFORMED: Final = "malformed"  # not a JWS in compact serialization, or a part is not JSON
UNSUPPORTED_ALG: Final = "unsupported_alg"  # alg other than EdDSA, or a crit header
WRONG_TYP: Final = "wrong_typ"  # typ unknown, or not the typ of the topic it came on
UNKNOWN_KID: Final = "unknown_kid"  # no trusted key has that thumbprint
ROOT_REQUIRED: Final = "root_required"  # a trust document signed by a signing key
KEY_EXPIRED: Final = "key_expired"  # the signing key is past its not_after, or its trust document expired
BAD_SIGNATURE: Final = "bad_signature"
INVALID_CLAIMS: Final = "invalid_claims"  # payload not an object of the right claims and types
WRONG_AUD: Final = "wrong_aud"
EXPIRED: Final = "expired"  # exp not in the future of trusted time
NOT_YET_VALID: Final = "not_yet_valid"  # nbf in the future of trusted time
ROLLBACK: Final = "rollback"  # seq lower than the last accepted of that typ
SEQ_REUSED: Final = "seq_reused"  # seq equal to the last accepted, but other content
KEY_NOT_ALLOWED: Final = "key_not_allowed"  # the signing key's typs (trust document) do not include this typ
BAD_ROOT_PROOF: Final = "bad_root_proof"  # a root rotation without a valid proof of possession for each new root
# Not about the document: the device failed while handling the message (a defect). The message is
# reported and dropped, and the very same payload is not handled again (agent/intake/poison.py).
INTERNAL_ERROR: Final = "internal_error"

REFUSAL_REASONS: Final = frozenset(
    {
        OVERSIZED,
        MALFORMED,
        UNSUPPORTED_ALG,
        WRONG_TYP,
        UNKNOWN_KID,
        ROOT_REQUIRED,
        KEY_EXPIRED,
        BAD_SIGNATURE,
        INVALID_CLAIMS,
        WRONG_AUD,
        EXPIRED,
        NOT_YET_VALID,
        ROLLBACK,
        SEQ_REUSED,
        KEY_NOT_ALLOWED,
        BAD_ROOT_PROOF,
        INTERNAL_ERROR,
    }
)
