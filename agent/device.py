"""The device's holdings: keys, signed documents, entitlements and trusted time, in memory and on disk.

This is the I/O edge around the pure core (``agent.entitlements``): it loads what the store holds
before anything else (so the device enforces from the store before any network), runs a document
through :func:`~agent.entitlements.intake.verify`, writes it with everything derived from it in one
transaction, and only then puts it in force in memory (persist, then act).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.clock import ClockSource, TrustedClock
from agent.config import Config
from agent.entitlements import policy
from agent.entitlements.documents import (
    CLAIMS_MODELS,
    ENTITLEMENTS,
    TRUST,
    EntitlementsClaims,
    TrustClaims,
)
from agent.entitlements.index import Entitlements
from agent.entitlements.intake import Duplicate, HighWater, Verified, verify
from agent.entitlements.jws import b64url_decode
from agent.entitlements.policy import Decision
from agent.entitlements.trust import KeyRing
from agent.errors import DocumentRefused, StoreCorrupt
from agent.store import ServiceRow, SigningKeyRow, Snapshot, Store, StoredDocument
from agent.timefmt import to_rfc3339, to_rfc3339_or_none

log = structlog.get_logger("agent.device")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A document now in force."""

    typ: str
    seq: int


def _claims_of(document: StoredDocument) -> Any:
    payload = b64url_decode(document.token.split(".")[1])
    return CLAIMS_MODELS[document.typ].model_validate_json(payload)


@dataclass(frozen=True, slots=True)
class Holdings:
    """What is in force, rebuilt from a store snapshot or after an acceptance."""

    keyring: KeyRing
    documents: dict[str, StoredDocument]
    entitlements: Entitlements | None

    @classmethod
    def from_snapshot(cls, roots: tuple[Ed25519PublicKey, ...], snapshot: Snapshot) -> Holdings:
        """Rebuild from the store, checking that derived rows belong to the documents in force."""
        keyring = KeyRing.from_roots(roots)
        entitlements = None
        try:
            trust = snapshot.documents.get(TRUST)
            if trust is not None:
                keyring = keyring.with_trust(_claims_of(trust))
                if any(row.trust_seq != trust.seq for row in snapshot.signing_keys):
                    raise StoreCorrupt(f"signing keys do not derive from trust document {trust.seq}")
            document = snapshot.documents.get(ENTITLEMENTS)
            if document is not None:
                entitlements = Entitlements(_claims_of(document))
                if len(snapshot.services) != len(entitlements.services) or any(
                    row.doc_seq != document.seq for row in snapshot.services
                ):
                    raise StoreCorrupt(f"services do not derive from entitlements document {document.seq}")
        except (ValueError, IndexError) as exc:  # pydantic's ValidationError is a ValueError
            raise StoreCorrupt(f"a stored document no longer parses: {exc}") from None
        return cls(keyring=keyring, documents=dict(snapshot.documents), entitlements=entitlements)

    @property
    def high_water(self) -> dict[str, HighWater]:
        """The ``seq`` and digest of the document in force, per type."""
        return {typ: HighWater(d.seq, d.digest) for typ, d in self.documents.items()}


class Device:
    """One device's holdings and decisions. Create with :meth:`open`; :meth:`close` when done."""

    def __init__(
        self, config: Config, roots: tuple[Ed25519PublicKey, ...], store: Store, clock: TrustedClock, holdings: Holdings
    ) -> None:
        self.config = config
        self.clock = clock
        self._roots = roots
        self._store = store
        self._holdings = holdings
        self._intake = asyncio.Lock()

    @classmethod
    async def open(cls, config: Config, roots: tuple[Ed25519PublicKey, ...], source: ClockSource) -> Device:
        """Open the store and load what it holds; nothing here touches the network."""
        store = await Store.open(config.data_dir)
        try:
            snapshot = await store.snapshot()
            holdings = Holdings.from_snapshot(roots, snapshot)
        except BaseException:
            await store.close()
            raise
        return cls(config, roots, store, TrustedClock(source, snapshot.anchor), holdings)

    async def close(self) -> None:
        """Persist the clock's floor and close the store."""
        try:
            await self._store.save_anchor(self.clock.anchor())
        finally:
            await self._store.close()

    @property
    def entitlements(self) -> Entitlements | None:
        """The entitlements in force, if any."""
        return self._holdings.entitlements

    @property
    def documents(self) -> dict[str, StoredDocument]:
        """The document in force per type."""
        return dict(self._holdings.documents)

    async def accept(self, token: str | bytes, expected_typ: str | None = None) -> Accepted | Duplicate:
        """Verify a signed document and, if valid, store it and put it in force.

        ``expected_typ`` is the type of the topic it came on (``None``: any type, for ``edge-agent
        accept``). Raises :class:`DocumentRefused`; then nothing held has changed.
        """
        async with self._intake:
            for _ in range(2):
                outcome = self._verify(token, expected_typ)
                if isinstance(outcome, Duplicate):
                    log.debug("document_duplicate", typ=outcome.typ, seq=outcome.seq)
                    return outcome
                if await self._commit(outcome):
                    log.info("document_accepted", typ=outcome.typ, seq=outcome.claims.seq, kid=outcome.kid)
                    return Accepted(outcome.typ, outcome.claims.seq)
                # Another process stored a newer document meanwhile: reload, then judge again.
                self._holdings = Holdings.from_snapshot(self._roots, await self._store.snapshot())
            raise DocumentRefused("rollback", "the store kept changing under this document")  # pragma: no cover

    def _verify(self, token: str | bytes, expected_typ: str | None) -> Verified | Duplicate:
        try:
            return verify(
                token,
                expected_typ=expected_typ,
                device_id=self.config.device_id,
                keyring=self._holdings.keyring,
                high_water=self._holdings.high_water,
                now=self.clock.now(),
            )
        except DocumentRefused as refused:
            log.warning("document_refused", reason=refused.reason, detail=refused.detail, expected_typ=expected_typ)
            raise

    async def _commit(self, verified: Verified) -> bool:
        claims = verified.claims
        now = self.clock.now()
        document = StoredDocument(
            typ=verified.typ,
            seq=claims.seq,
            digest=verified.digest,
            iat=claims.iat,
            exp=claims.exp,
            kid=verified.kid,
            token=verified.token,
            accepted_at=now,
        )
        keyring, entitlements = self._holdings.keyring, self._holdings.entitlements
        services = signing = None
        if isinstance(claims, TrustClaims):
            keyring = keyring.with_trust(claims)
            signing = [SigningKeyRow(claims.seq, k.kid, k.jwk.raw(), k.not_after.timestamp()) for k in claims.keys]
        elif isinstance(claims, EntitlementsClaims):
            entitlements = Entitlements(claims)
            services = [ServiceRow(claims.seq, s.service, s.subject, s.expires, s.plan) for s in entitlements.services]
            for name in entitlements.unknown_services:
                log.warning("unknown_service", service=name, seq=claims.seq)
        # The accepted iat raises the clock's floor, in the same transaction as the document.
        anchor = self.clock.anchor(at_least=float(claims.iat))
        if not await self._store.commit_document(document, services=services, signing_keys=signing, anchor=anchor):
            return False
        self.clock.advance_to(float(claims.iat))
        documents = dict(self._holdings.documents)
        documents[verified.typ] = document
        self._holdings = Holdings(keyring=keyring, documents=documents, entitlements=entitlements)
        return True

    def decide(self, action: str, subject: str | int | None = None) -> Decision:
        """The policy's decision for a request at trusted time now."""
        return policy.decide(self._holdings.entitlements, self.clock.now(), action, subject)

    async def persist_clock(self) -> None:
        """Persist the clock's floor (if later than the stored one)."""
        await self._store.save_anchor(self.clock.anchor())

    def status(self) -> dict[str, Any]:
        """The ``edge-agent status --json`` object."""
        now = self.clock.now()
        ents = self._holdings.entitlements
        trust = self._holdings.documents.get(TRUST)
        document = None
        services: list[dict[str, Any]] = []
        if ents is not None:
            document = {"seq": ents.seq, "iat": to_rfc3339(ents.iat), "exp": to_rfc3339(ents.exp)}
            services = [
                {
                    "service": s.service,
                    "subject": s.subject,
                    "expires": to_rfc3339(s.expires),
                    "active": now < s.expires and now < ents.exp,
                    "known": s.known,
                    **({"plan": s.plan} if s.plan is not None else {}),
                }
                for s in ents.effective_services
            ]
        return {
            "device_id": self.config.device_id,
            "model": self.config.model,
            "firmware_version": self.config.firmware_version,
            "mode": policy.mode(ents, now),
            "project": None if ents is None else {"id": ents.project_id, "type": ents.project_type},
            "document": document,
            "services": services,
            "trust": None
            if trust is None
            else {"seq": trust.seq, "signing_keys": sorted(self._holdings.keyring.signing)},
            "trusted_time": to_rfc3339(now),
            "next_expiry": to_rfc3339_or_none(policy.next_expiry(ents, now)),
        }
