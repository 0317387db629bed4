"""The cloud's keys: root keys that sign ``trust`` documents, and one signer per job that signs the rest
(PROTOCOL.md "Trust", "Key scopes", "Root rotation").

Signers have a *purpose* and sign only its document types, which the trust document says with their
``typs``: **billing** signs ``entitlements``, **releases** ``firmware-job``, **commands** ``command``.
A leaked billing key therefore cannot push firmware or open a door. Each purpose rotates on its own,
in two steps, so that no device ever holds a document it cannot verify: :func:`rotate` brings a new key
in (the trust document lists old and new; the new one signs from now on), :func:`retire` drops the old
one. A ledger from before purposes holds a signer of purpose ``any`` (no ``typs``): :func:`ensure`
gives each purpose its own signer and lets the old one go on being listed until it is retired.

Roots rotate in two steps too. :func:`rotate_root` makes a new root; from then on the trust document
carries ``roots`` (the old and the new) with a proof of possession signed by the new one, and is still
signed by the old root, which every device holds. :func:`retire_root` drops the old root: the trust
document carries ``roots`` (the new one only) and is signed by the new root. A device that was away
through both steps holds only the old root and must be provisioned again, as after any retirement.
Keys live as PEM files beside the ledger; the ledger knows their state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_stub.issuer import ISSUER, signing_key_entry
from cloud_stub.keys import load_private_key, write_keypair
from cloud_stub.ledger import Ledger
from cloud_stub.rules import DAY, Refused
from protocol import jws

KEY_YEARS = 2.0
# What each signer may sign (the trust document's typs).
PURPOSES: Final[dict[str, tuple[str, ...]]] = {
    "billing": ("entitlements",),
    "releases": ("firmware-job",),
    "commands": ("command",),
}
LEGACY: Final = "any"  # a signer from before purposes: listed without typs
_ROOT: Final = "root.key.pem"  # the first root's file
_ACTIVE_OF: Final = "SELECT 1 FROM signing_keys WHERE state = 'active' AND purpose = ?"


def _add(ledger: Ledger, directory: Path, now: float, purpose: str) -> str:
    (count,) = ledger.db.execute("SELECT COUNT(*) FROM signing_keys").fetchone()
    name = f"{purpose}-{int(now)}-{count + 1}"
    write_keypair(directory, name)
    kid = jws.key_thumbprint(load_private_key(directory / f"{name}.key.pem").public_key())
    with ledger.transaction() as db:
        db.execute("UPDATE signing_keys SET state = 'listed' WHERE state = 'active' AND purpose = ?", (purpose,))
        db.execute(
            "INSERT INTO signing_keys (kid, file, created, not_after, state, purpose) VALUES (?, ?, ?, ?, 'active', ?)",
            (kid, f"{name}.key.pem", now, now + KEY_YEARS * 365 * DAY, purpose),
        )
    return kid


def ensure(ledger: Ledger, directory: Path, now: float) -> bool:
    """A root key and an active signer per purpose exist; whether signers changed (documents to re-sign)."""
    if not (directory / "root.key.pem").exists():
        write_keypair(directory, "root")
    if ledger.db.execute("SELECT 1 FROM roots").fetchone() is None:
        kid = jws.key_thumbprint(load_private_key(directory / "root.key.pem").public_key())
        with ledger.transaction() as db:
            db.execute("INSERT INTO roots (kid, file, created, state) VALUES (?, ?, ?, 'active')", (kid, _ROOT, now))
    missing = [purpose for purpose in PURPOSES if not ledger.db.execute(_ACTIVE_OF, (purpose,)).fetchone()]
    for purpose in missing:
        _add(ledger, directory, now, purpose)
    with ledger.transaction() as db:  # a signer from before purposes stays listed until retired
        legacy = db.execute(
            "UPDATE signing_keys SET state = 'listed' WHERE state = 'active' AND purpose = ?", (LEGACY,)
        )
        return bool(missing) or legacy.rowcount > 0


def _purposes(purpose: str | None) -> list[str]:
    if purpose is None:
        return list(PURPOSES)
    if purpose not in PURPOSES and purpose != LEGACY:
        raise Refused(
            "unknown_purpose", f"a signer's purpose is one of {', '.join(PURPOSES)}", "PROTOCOL.md key scopes"
        )
    return [purpose]


def rotate(ledger: Ledger, directory: Path, now: float, purpose: str | None = None) -> list[str]:
    """Bring in a new signer for ``purpose`` (every purpose when None); the old one stays listed until
    retired. The new kids."""
    return [_add(ledger, directory, now, p) for p in _purposes(purpose) if p != LEGACY]


def retire(ledger: Ledger, purpose: str | None = None) -> list[str]:
    """Drop the listed (no longer signing) keys of ``purpose`` (every purpose, the legacy one included,
    when None) from the trust document. The kids retired."""
    purposes = [*_purposes(purpose), LEGACY] if purpose is None else _purposes(purpose)
    marks = ", ".join("?" * len(purposes))
    kids = [
        k
        for (k,) in ledger.db.execute(
            f"SELECT kid FROM signing_keys WHERE state = 'listed' AND purpose IN ({marks}) ORDER BY created",  # noqa: S608
            purposes,
        )
    ]
    if not kids:
        raise Refused("nothing_to_retire", "no key waits to be retired: rotate first", "PROTOCOL.md trust")
    with ledger.transaction() as db:
        db.executemany("UPDATE signing_keys SET state = 'retired' WHERE kid = ?", [(k,) for k in kids])
    return kids


def active(ledger: Ledger, directory: Path, purpose: str) -> Ed25519PrivateKey:
    """The key that signs ``purpose``'s documents now."""
    row = ledger.db.execute(
        "SELECT file FROM signing_keys WHERE state = 'active' AND purpose = ?", (purpose,)
    ).fetchone()
    if row is None:
        raise Refused("no_key", f"no active {purpose} signer", "PROTOCOL.md trust")
    return load_private_key(directory / row[0])


def trust_claims(ledger: Ledger) -> dict[str, Any]:
    """What the trust document says, without time and seq: the signers not retired with their purposes,
    and the roots while a rotation is under way (or done)."""
    rows = ledger.db.execute(
        "SELECT file, not_after, purpose FROM signing_keys WHERE state != 'retired' ORDER BY created"
    )
    keys = [{"file": file, "not_after": not_after, "purpose": purpose} for file, not_after, purpose in rows]
    roots = [file for (file,) in ledger.db.execute("SELECT file FROM roots WHERE state != 'retired' ORDER BY created")]
    rotated = ledger.db.execute("SELECT COUNT(*) FROM roots").fetchone()[0] > 1
    return {"keys": keys, "roots": roots if rotated else None}


def _root_entry(key: Ed25519PrivateKey) -> dict[str, Any]:
    x = jws.raw_public_key(key.public_key())
    return {"kid": jws.thumbprint(x), "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(x)}}


def trust_document(ledger: Ledger, directory: Path, now: float, seq: int) -> str:
    """The trust document, signed by the oldest root not retired (the one every device still holds)."""
    listed = trust_claims(ledger)
    keys = []
    for entry in listed["keys"]:
        typs = PURPOSES.get(entry["purpose"])
        keys.append(signing_key_entry(load_private_key(directory / entry["file"]), entry["not_after"], typs))
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": "*", "iat": int(now), "exp": int(now + 365 * DAY), "seq": seq, "keys": keys,
    }  # fmt: skip
    roots = [load_private_key(directory / file) for file in listed["roots"] or [_ROOT]]
    if listed["roots"] is not None:
        entries = [_root_entry(k) for k in roots]
        claims["roots"] = entries
        # Every root listed proves it is held, for this very list and seq (PROTOCOL.md "Root rotation").
        claims["root_proofs"] = [jws.sign(k, "root-proof", {"roots": entries, "seq": seq}) for k in roots]
    return jws.sign(roots[0], "trust", claims)


def rotate_root(ledger: Ledger, directory: Path, now: float) -> str:
    """Make a new root, trusted beside the current one from the next trust document on; its kid."""
    if ledger.db.execute("SELECT COUNT(*) FROM roots WHERE state = 'active'").fetchone()[0] > 1:
        raise Refused("rotation_under_way", "retire the old root before rotating again", "PROTOCOL.md root rotation")
    (count,) = ledger.db.execute("SELECT COUNT(*) FROM roots").fetchone()
    name = f"root-{count + 1}"
    key = write_keypair(directory, name)
    kid = jws.key_thumbprint(key.public_key())
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO roots (kid, file, created, state) VALUES (?, ?, ?, 'active')", (kid, f"{name}.key.pem", now)
        )
    return kid


def retire_root(ledger: Ledger) -> str:
    """Drop the oldest root once a newer one is trusted: the trust document is signed by the new one from
    now on, and lists it alone. The kid retired."""
    rows = ledger.db.execute("SELECT kid FROM roots WHERE state = 'active' ORDER BY created").fetchall()
    if len(rows) < 2:
        raise Refused("nothing_to_retire", "no newer root to hand over to: rotate-root first", "PROTOCOL.md")
    with ledger.transaction() as db:
        db.execute("UPDATE roots SET state = 'retired' WHERE kid = ?", rows[0])
    return str(rows[0][0])
