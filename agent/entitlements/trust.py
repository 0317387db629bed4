"""Which keys may sign what (PROTOCOL.md "Trust", "Key scopes", "Root rotation").

Root keys come from the configuration, until a trust document carrying ``roots`` replaces them
(whole, across restarts), and may sign any document. Signing keys come from the newest accepted
``trust`` document, which only a root key may sign; a newer one replaces the list whole, which is how
keys rotate and are revoked. A signing key signs only the types its ``typs`` names (all three when
absent): a billing signer that leaks cannot push firmware or open a door. It stops counting at its
``not_after`` and when the trust document that listed it stops being in force (its ``exp``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from agent.errors import DocumentRefused
from protocol import reasons
from protocol.ed25519 import PublicKey, from_pem
from protocol.jws import thumbprint
from protocol.names import TRUST
from protocol.timefmt import to_rfc3339

if TYPE_CHECKING:  # the models are intake's: opening a store and deciding build none
    from protocol.claims import TrustClaims


class SigningKey(NamedTuple):
    """A key a trust document allows to sign ``typs`` (None: entitlements, firmware jobs and commands)."""

    kid: str
    key: PublicKey
    not_after: float
    typs: frozenset[str] | None = None


def load_root_key(path: Path) -> PublicKey:
    """Read an Ed25519 public key in PEM (SubjectPublicKeyInfo); ``ValueError`` says what is wrong."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return from_pem(pem)
    except ValueError as exc:
        raise ValueError(f"{path} is {exc}") from None


class KeyRing(NamedTuple):
    """Root keys and the signing keys of the trust document in force, by RFC 7638 thumbprint."""

    roots: Mapping[str, PublicKey]
    signing: Mapping[str, SigningKey] = MappingProxyType({})
    trust_exp: float = math.inf

    @classmethod
    def from_roots(cls, roots: list[PublicKey] | tuple[PublicKey, ...]) -> KeyRing:
        """A ring of root keys only: a device that has not accepted any trust document."""
        return cls(roots=MappingProxyType({thumbprint(k.raw): k for k in roots}))

    def with_trust(self, claims: TrustClaims) -> KeyRing:
        """The ring once ``claims`` is in force: its keys replace the previous signing keys whole, and its
        ``roots``, if any, the root keys (their proofs were checked by ``intake.verify``)."""
        keys = [
            SigningKey(
                entry.kid,
                PublicKey(entry.jwk.raw()),
                entry.not_after.timestamp(),
                None if entry.typs is None else frozenset(entry.typs),
            )
            for entry in claims.keys
        ]
        ring = self if claims.roots is None else self.with_roots(entry.jwk.raw() for entry in claims.roots)
        return ring.with_signing_keys(keys, trust_exp=float(claims.exp))

    def with_roots(self, raw_keys: Iterable[bytes]) -> KeyRing:
        """The ring with these root keys (raw 32 bytes each) in place of the current ones."""
        roots = [PublicKey(x) for x in raw_keys]
        return self._replace(roots=MappingProxyType({thumbprint(k.raw): k for k in roots}))

    def with_signing_keys(self, keys: Iterable[SigningKey], *, trust_exp: float) -> KeyRing:
        """The ring with ``keys`` (from a trust document in force until ``trust_exp``) as its signing keys."""
        return KeyRing(roots=self.roots, signing=MappingProxyType({k.kid: k for k in keys}), trust_exp=trust_exp)

    def key_for(self, kid: str, typ: str, now: float) -> PublicKey:
        """The key that must have signed a document of ``typ`` with ``kid``, or ``DocumentRefused``."""
        root = self.roots.get(kid)
        if root is not None:
            return root
        signing = self.signing.get(kid)
        if signing is None:
            raise DocumentRefused(reasons.UNKNOWN_KID, f"no trusted key has kid {kid}")
        if typ == TRUST:
            raise DocumentRefused(reasons.ROOT_REQUIRED, f"a trust document must be signed by a root key, not {kid}")
        if signing.typs is not None and typ not in signing.typs:
            allowed = ", ".join(sorted(signing.typs)) or "nothing"
            raise DocumentRefused(reasons.KEY_NOT_ALLOWED, f"key {kid} may sign {allowed}, not {typ}")
        if now >= self.trust_exp:
            raise DocumentRefused(
                reasons.KEY_EXPIRED, f"the trust document listing {kid} expired at {to_rfc3339(self.trust_exp)}"
            )
        if now >= signing.not_after:
            raise DocumentRefused(reasons.KEY_EXPIRED, f"signing key {kid} expired at {to_rfc3339(signing.not_after)}")
        return signing.key
