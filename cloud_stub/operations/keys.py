"""The cloud's keys: root keys that sign ``trust`` documents, and one signer per job that signs the rest
(PROTOCOL.md "Trust", "Key scopes", "Root rotation").

Signers have a *purpose* and sign only its document types, which the trust document says with their
``typs``: **billing** signs ``entitlements``, **releases** ``firmware-job``, **commands** ``command``. A
leaked billing key therefore cannot push firmware or open a door. Each purpose rotates on its own, in two
steps, so that no device ever holds a document it cannot verify: :func:`rotate` brings a new key in (the
trust document lists old and new; the new one signs from now on), :func:`retire` drops the old one. A
ledger from before purposes holds a signer of purpose ``any`` (no ``typs``): :func:`ensure` gives each
purpose its own signer and lets the old one be listed until it is retired.

Roots rotate in two steps too. :func:`rotate_root` makes a new root; from then on the trust document
carries ``roots`` (the old and the new) with a proof of possession signed by each, and is still signed by
the old root, which every device holds. :func:`retire_root` drops the old root: the trust document lists
the new one alone and is signed by it. A device away through both steps must be provisioned again.
Private keys live as PEM files in the keys directory; the ledger knows their state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_stub import documents, signing
from cloud_stub.errors import ConfigError, Refused
from cloud_stub.keys import load_private_key, write_keypair
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.documents import SigningKey
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor

DAY: Final = 86_400.0
KEY_YEARS: Final = 2.0
TRUST_DAYS: Final = 365.0
PURPOSES: Final[dict[str, tuple[str, ...]]] = {
    "billing": ("entitlements",),
    "releases": ("firmware-job",),
    "commands": ("command",),
}
LEGACY: Final = "any"  # a signer from before purposes: listed without typs
FIRST_ROOT: Final = "root"  # the first root's file stem (root.key.pem)
_SEED: Final = "PROTOCOL.md key scopes"


def _load(directory: Path, file: str) -> Ed25519PrivateKey:
    """A key file the ledger names (``ConfigError`` when it is gone or not a key)."""
    try:
        return load_private_key(directory / file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the key file {directory / file} cannot be read: {exc}") from None


def missing_files(uow: UnitOfWork, directory: Path) -> list[str]:
    """The key files the ledger names that are not in ``directory`` (``serve`` refuses to start without them)."""
    named = [k.file for k in uow.keys.trusted()] + [r.file for r in uow.keys.roots() if r.state != "retired"]
    return [file for file in named if not (directory / file).is_file()]


def _add(uow: UnitOfWork, directory: Path, purpose: str) -> str:
    name = f"{purpose}-{int(uow.now)}-{uow.keys.count() + 1}"
    key = write_keypair(directory, name)
    kid = signing.key_thumbprint(key.public_key())
    uow.keys.add(SigningKey(kid, f"{name}.key.pem", uow.now, uow.now + KEY_YEARS * 365 * DAY, "active", purpose))
    return kid


def ensure(uow: UnitOfWork, directory: Path) -> bool:
    """A root key and an active signer per purpose exist; whether signers changed (every device's documents
    are then signed again, by the new signers)."""
    uow.keys.lock()  # another serve may be starting too: it finds what this one made
    if not uow.keys.roots():  # the first root; once the ledger names one, its file is never made anew
        if not (directory / f"{FIRST_ROOT}.key.pem").exists():
            write_keypair(directory, FIRST_ROOT)
        key = _load(directory, f"{FIRST_ROOT}.key.pem")
        uow.keys.add_root(signing.key_thumbprint(key.public_key()), f"{FIRST_ROOT}.key.pem", uow.now)
    missing = [purpose for purpose in PURPOSES if uow.keys.active(purpose) is None]
    for purpose in missing:
        _add(uow, directory, purpose)
    changed = bool(missing) or uow.keys.demote(LEGACY) > 0  # a signer from before purposes stays listed
    if changed:
        uow.issued.forget_digests()
    return changed


def _purposes(purpose: str | None) -> list[str]:
    if purpose is None:
        return list(PURPOSES)
    if purpose not in PURPOSES and purpose != LEGACY:
        raise Refused("unknown_purpose", f"a signer's purpose is one of {', '.join(PURPOSES)}", _SEED)
    return [purpose]


def rotate(uow: UnitOfWork, actor: Actor, directory: Path, purpose: str | None = None) -> list[str]:
    """Bring in a new signer for ``purpose`` (every purpose when None); the old one stays listed until
    retired, and every device's documents are signed again by the new one. The new kids."""
    authority.operator_only(actor, "rotating keys")
    uow.keys.lock()
    kids = [_add(uow, directory, p) for p in _purposes(purpose) if p != LEGACY]
    uow.issued.forget_digests()
    return kids


def retire(uow: UnitOfWork, actor: Actor, purpose: str | None = None) -> list[str]:
    """Drop the listed (no longer signing) keys of ``purpose`` (every purpose, the legacy one included, when
    None) from the trust document. The kids retired."""
    authority.operator_only(actor, "retiring keys")
    uow.keys.lock()
    purposes = [*_purposes(purpose), LEGACY] if purpose is None else _purposes(purpose)
    kids = uow.keys.listed(purposes)
    if not kids:
        raise Refused("nothing_to_retire", "no key waits to be retired: rotate first", "PROTOCOL.md trust")
    uow.keys.retire(kids)
    return kids


def signer(uow: UnitOfWork, directory: Path, purpose: str) -> Ed25519PrivateKey:
    """The key that signs ``purpose``'s documents now."""
    found = uow.keys.active(purpose)
    if found is None:
        raise Refused("no_key", f"no active {purpose} signer", "PROTOCOL.md trust")
    return _load(directory, found.file)


def listing(uow: UnitOfWork) -> dict[str, Any]:
    """What the trust document says, without time and seq: the signers not retired with their purposes,
    and the roots while a rotation is under way (or done)."""
    every_root = uow.keys.roots()
    return {
        "keys": [{"file": k.file, "not_after": k.not_after, "purpose": k.purpose} for k in uow.keys.trusted()],
        "roots": [r.file for r in every_root if r.state != "retired"] if len(every_root) > 1 else None,
    }


def trust_document(uow: UnitOfWork, directory: Path, seq: int) -> str:
    """The trust document, signed by the oldest root not retired (the one every device still holds)."""
    listed = listing(uow)
    signers = [(_load(directory, k["file"]), k["not_after"], PURPOSES.get(k["purpose"])) for k in listed["keys"]]
    roots = [_load(directory, f) for f in listed["roots"] or [f"{FIRST_ROOT}.key.pem"]]
    return documents.trust(roots, signers, iat=uow.now, exp=uow.now + TRUST_DAYS * DAY, seq=seq,
                           rotating=listed["roots"] is not None)  # fmt: skip


def rotate_root(uow: UnitOfWork, actor: Actor, directory: Path) -> str:
    """Make a new root, trusted beside the current one from the next trust document on; its kid."""
    authority.operator_only(actor, "rotating the root")
    uow.keys.lock()
    if len(uow.keys.roots(active_only=True)) > 1:
        raise Refused("rotation_under_way", "retire the old root before rotating again", "PROTOCOL.md root rotation")
    name = f"root-{len(uow.keys.roots()) + 1}"
    key = write_keypair(directory, name)
    kid = signing.key_thumbprint(key.public_key())
    uow.keys.add_root(kid, f"{name}.key.pem", uow.now)
    return kid


def retire_root(uow: UnitOfWork, actor: Actor) -> str:
    """Drop the oldest root once a newer one is trusted: the trust document is signed by the new one from
    now on, and lists it alone. The kid retired."""
    authority.operator_only(actor, "retiring the root")
    uow.keys.lock()
    active = uow.keys.roots(active_only=True)
    if len(active) < 2:
        raise Refused("nothing_to_retire", "no newer root to hand over to: rotate-root first", "PROTOCOL.md")
    uow.keys.retire_root(active[0].kid)
    return active[0].kid
