"""Signing keys and their rotation: the root key signs ``trust`` documents listing the signing keys;
the active signing key signs everything else (PROTOCOL.md "Signed documents").

Rotation in two steps, so that no device ever holds a document it cannot verify: :func:`rotate` brings
a new key in (the trust document lists old and new; the new one signs from now on), :func:`retire`
drops the old one (the trust document lists only the new). Keys live as PEM files beside the ledger;
the ledger knows their state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.entitlements import jws
from cloud_stub.issuer import ISSUER, signing_key_entry
from cloud_stub.keys import load_private_key, write_keypair
from cloud_stub.ledger import Ledger
from cloud_stub.rules import DAY, Refused

KEY_YEARS = 2.0


def _add(ledger: Ledger, directory: Path, now: float) -> str:
    (count,) = ledger.db.execute("SELECT COUNT(*) FROM signing_keys").fetchone()
    name = f"signing-{int(now)}-{count + 1}"
    write_keypair(directory, name)
    key = load_private_key(directory / f"{name}.key.pem")
    kid = jws.key_thumbprint(key.public_key())
    with ledger.transaction() as db:
        db.execute("UPDATE signing_keys SET state = 'listed' WHERE state = 'active'")
        db.execute(
            "INSERT INTO signing_keys (kid, file, created, not_after, state) VALUES (?, ?, ?, ?, 'active')",
            (kid, f"{name}.key.pem", now, now + KEY_YEARS * 365 * DAY),
        )
    return kid


def ensure(ledger: Ledger, directory: Path, now: float) -> None:
    """A root key and an active signing key exist."""
    if not (directory / "root.key.pem").exists():
        write_keypair(directory, "root")
    if ledger.db.execute("SELECT 1 FROM signing_keys WHERE state = 'active'").fetchone() is None:
        _add(ledger, directory, now)


def rotate(ledger: Ledger, directory: Path, now: float) -> str:
    """Bring in a new signing key; the old one stays listed until retired. The new kid."""
    return _add(ledger, directory, now)


def retire(ledger: Ledger) -> list[str]:
    """Drop every listed (no longer signing) key from the trust document. The kids retired."""
    kids = [k for (k,) in ledger.db.execute("SELECT kid FROM signing_keys WHERE state = 'listed'")]
    if not kids:
        raise Refused("nothing_to_retire", "no key waits to be retired: rotate first", "PROTOCOL.md trust")
    with ledger.transaction() as db:
        db.execute("UPDATE signing_keys SET state = 'retired' WHERE state = 'listed'")
    return kids


def active(ledger: Ledger, directory: Path) -> Ed25519PrivateKey:
    row = ledger.db.execute("SELECT file FROM signing_keys WHERE state = 'active'").fetchone()
    if row is None:
        raise Refused("no_key", "no active signing key", "PROTOCOL.md trust")
    return load_private_key(directory / row[0])


def trust_claims(ledger: Ledger) -> list[dict[str, Any]]:
    """The ``keys`` of the trust document: every key not retired."""
    rows = ledger.db.execute("SELECT file, not_after FROM signing_keys WHERE state != 'retired' ORDER BY created")
    return [{"file": file, "not_after": not_after} for file, not_after in rows]


def trust_document(ledger: Ledger, directory: Path, now: float, seq: int) -> str:
    keys = [signing_key_entry(load_private_key(directory / e["file"]), e["not_after"]) for e in trust_claims(ledger)]
    claims = {"iss": ISSUER, "aud": "*", "iat": int(now), "exp": int(now + 365 * DAY), "seq": seq, "keys": keys}
    return jws.sign(load_private_key(directory / "root.key.pem"), "trust", claims)
