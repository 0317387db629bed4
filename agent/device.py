"""The device's holdings: keys, signed documents, entitlements and trusted time, in memory and on disk.

This is the I/O edge around the pure core (``agent.entitlements``): it loads what the store holds
before anything else (so the device enforces from the store before any network), runs a document
through :func:`~agent.entitlements.intake.verify`, writes it with everything derived from it in one
transaction, and only then puts it in force in memory (persist, then act).

What must survive losing the database is kept in the sidecar too (``agent/store/sidecar.py``): the
high-water mark of each type is written there *before* the document commits (so a superseded
document stays refused after a quarantine), the clock's anchor with it, and the root keys a trust
document rotated to once they are in force. Trust and entitlements documents may spend the data
directory's reserve (``agent/store/reserve.py``): on a full disk, the renewal that lets held alarms out must
still get in.
"""

from __future__ import annotations

import asyncio
import errno
import json
from datetime import date
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

import structlog

from agent.clock import Anchor, ClockSource, TrustedClock, newest_anchor
from agent.core_config import CoreConfig
from agent.entitlements import policy
from agent.entitlements.index import Entitlements, Project, Service
from agent.entitlements.marks import Duplicate, HighWater
from agent.entitlements.policy import Decision
from agent.entitlements.trust import KeyRing, SigningKey
from agent.errors import DocumentRefused, StoreCorrupt, StoreError, StoreFull
from agent.store import sidecar
from agent.store.database import (
    ProjectRow,
    RootRow,
    ServiceRow,
    SigningKeyRow,
    Snapshot,
    Store,
    StoredDocument,
    Transaction,
)
from agent.store.reserve import Reserve
from protocol import reasons
from protocol.ed25519 import PublicKey
from protocol.names import ENTITLEMENTS, TRUST
from protocol.timefmt import to_rfc3339, to_rfc3339_or_none

if TYPE_CHECKING:  # intake and its models load with the first document: opening and deciding build none
    from agent.entitlements.intake import Verified
    from agent.ports import Accepted, Handler
    from protocol.claims import TrustClaims

log = structlog.get_logger("agent.device")

T = TypeVar("T")


def _entitlements_of(document: StoredDocument, project: ProjectRow, services: list[ServiceRow]) -> Entitlements:
    return Entitlements(
        seq=document.seq,
        iat=float(document.iat),
        exp=float(document.exp),
        project=Project(
            id=project.id,
            type=project.type,
            created=date.fromisoformat(project.created) if project.created else None,
            doors=tuple(json.loads(project.doors)),
            free_apps=project.free_apps,
        ),
        services=tuple(Service(r.service, r.subject, r.expires, r.plan) for r in services),
        settings=json.loads(project.settings),
    )


class Holdings(NamedTuple):
    """What is in force, rebuilt from a store snapshot or after an acceptance."""

    keyring: KeyRing
    documents: dict[str, StoredDocument]
    entitlements: Entitlements | None

    @classmethod
    def from_snapshot(
        cls, roots: tuple[PublicKey, ...], snapshot: Snapshot, kept: sidecar.Roots | None = None
    ) -> Holdings:
        """Rebuild from the rows derived at intake, checking they belong to the documents in force.

        Tokens are not parsed again: they were verified and validated when accepted, and the rows
        were written in the same transaction. ``roots`` are the provisioned root keys, in force
        until a trust document rotates them; the rotated set is read from the store, or from the
        sidecar (``kept``) when it is newer (the database that held it was lost).
        """
        keyring = KeyRing.from_roots(roots)
        trust = snapshot.documents.get(TRUST)
        stored_roots = max((r.trust_seq for r in snapshot.roots), default=-1)
        try:
            if kept is not None and kept.trust_seq > stored_roots:
                keyring = keyring.with_roots(x for _, x in kept.keys)
            elif snapshot.roots:
                if trust is None or stored_roots > trust.seq:
                    raise StoreCorrupt("root keys are stored without the trust document that set them")
                keyring = keyring.with_roots(r.x for r in snapshot.roots)
        except ValueError as exc:
            raise StoreCorrupt(f"a stored root key is unusable: {exc}") from None
        if trust is not None:
            if any(row.trust_seq != trust.seq for row in snapshot.signing_keys):
                raise StoreCorrupt(f"signing keys do not derive from trust document {trust.seq}")
            try:
                keys = [
                    SigningKey(
                        r.kid,
                        PublicKey(r.x),
                        r.not_after,
                        None if r.typs is None else frozenset(json.loads(r.typs)),
                    )
                    for r in snapshot.signing_keys
                ]
            except (ValueError, TypeError) as exc:
                raise StoreCorrupt(f"a stored signing key is unusable: {exc}") from None
            keyring = keyring.with_signing_keys(keys, trust_exp=float(trust.exp))
        elif snapshot.signing_keys:
            raise StoreCorrupt("signing keys are stored without a trust document")
        document, project = snapshot.documents.get(ENTITLEMENTS), snapshot.project
        entitlements = None
        if document is not None:
            if project is None or project.doc_seq != document.seq:
                raise StoreCorrupt(f"the project row does not derive from entitlements document {document.seq}")
            if any(row.doc_seq != document.seq for row in snapshot.services):
                raise StoreCorrupt(f"services do not derive from entitlements document {document.seq}")
            try:
                entitlements = _entitlements_of(document, project, snapshot.services)
            except ValueError as exc:  # bad JSON or date in a derived row
                raise StoreCorrupt(f"a derived row is unreadable: {exc}") from None
        elif project is not None or snapshot.services:
            raise StoreCorrupt("entitlement rows are stored without an entitlements document")
        return cls(keyring=keyring, documents=dict(snapshot.documents), entitlements=entitlements)

    @property
    def high_water(self) -> dict[str, HighWater]:
        """The ``seq`` and digest of the document in force, per type."""
        return {typ: HighWater(d.seq, d.digest) for typ, d in self.documents.items()}


def _merged_marks(stored: dict[str, HighWater], kept: dict[str, HighWater]) -> dict[str, HighWater]:
    """Per type, the higher of the store's mark and the sidecar's (which outlives a lost database)."""
    marks = dict(stored)
    for typ, mark in kept.items():
        held = marks.get(typ)
        if held is None or mark.seq > held.seq:
            marks[typ] = mark._replace(stored=False)
    return marks


def _space_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"{what}: {exc.strerror or exc}")
    return StoreError(f"{what}: {exc.strerror or exc}")


def _rows_of(entitlements: Entitlements) -> tuple[ProjectRow, list[ServiceRow]]:
    project, seq = entitlements.project, entitlements.seq
    row = ProjectRow(
        doc_seq=seq,
        id=project.id,
        type=project.type,
        created=project.created.isoformat() if project.created else None,
        doors=json.dumps(list(project.doors)),
        free_apps=project.free_apps,
        settings=json.dumps(dict(entitlements.settings)),
    )
    return row, [ServiceRow(seq, s.service, s.subject, s.expires, s.plan) for s in entitlements.services]


def _trust_rows(claims: TrustClaims) -> tuple[list[SigningKeyRow], list[RootRow] | None]:
    keys = [
        SigningKeyRow(
            claims.seq,
            k.kid,
            k.jwk.raw(),
            k.not_after.timestamp(),
            None if k.typs is None else json.dumps(sorted(k.typs)),
        )
        for k in claims.keys
    ]
    roots = None if claims.roots is None else [RootRow(r.kid, r.jwk.raw(), claims.seq) for r in claims.roots]
    return keys, roots


class Device:
    """One device's holdings and decisions. Create with :meth:`open`; :meth:`close` when done."""

    def __init__(
        self,
        config: CoreConfig,
        roots: tuple[PublicKey, ...],
        store: Store,
        clock: TrustedClock,
        holdings: Holdings,
        kept: sidecar.Sidecar,
    ) -> None:
        self.config = config
        self.clock = clock
        self._roots = roots
        self._store = store
        self._holdings = holdings
        self._kept = kept  # what the sidecar held when last read or written
        self._intake = asyncio.Lock()

    @classmethod
    async def open(
        cls, config: CoreConfig, roots: tuple[PublicKey, ...], source: ClockSource, *, daemon: bool = False
    ) -> Device:
        """Open the store and load what it holds, with the sidecar's floors; nothing here touches the network.

        ``daemon``: this process writes (it keeps the reserve in place and may spend it); the CLI only
        reads and writes what it is asked to.
        """
        reserve = Reserve(config.data_dir, config.store.reserve_bytes) if daemon else None
        store = await Store.open(config.data_dir, max_bytes=config.store.max_bytes, reserve=reserve)
        try:
            kept = await asyncio.to_thread(sidecar.load, config.data_dir)
            snapshot = await store.snapshot()
            holdings = Holdings.from_snapshot(roots, snapshot, kept.roots)
        except BaseException:
            await store.close()
            raise
        anchor = newest_anchor(snapshot.anchor, kept.anchor)
        return cls(config, roots, store, TrustedClock(source, anchor), holdings, kept)

    @property
    def store(self) -> Store:
        """The device's database (shared with the outbox in the daemon)."""
        return self._store

    async def save_clock(self) -> None:
        """Persist the clock's floor (if later than the stored one)."""
        await self._store.save_anchor(self.clock.anchor())

    async def close(self) -> None:
        """Persist the clock's floor and close the store; on a full disk the floor stays as it was."""
        try:
            await self._store.save_anchor(self.clock.anchor())
        except StoreFull as exc:  # a command that only read must still answer on a full disk
            log.warning("clock_not_saved", error=str(exc))
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

    @property
    def keyring(self) -> KeyRing:
        """The keys in force."""
        return self._holdings.keyring

    @overload
    async def accept(
        self, token: str | bytes, expected_typ: str | None = None, *, handler: None = None
    ) -> Accepted[None] | Duplicate: ...

    @overload
    async def accept(
        self, token: str | bytes, expected_typ: str | None = None, *, handler: Handler[T]
    ) -> Accepted[T] | Duplicate: ...

    async def accept(
        self, token: str | bytes, expected_typ: str | None = None, *, handler: Handler[T] | None = None
    ) -> Accepted[T] | Accepted[None] | Duplicate:
        """Verify a signed document and, if valid, store it and put it in force.

        ``expected_typ`` is the type of the topic it came on (``None``: any type, for ``edge-agent
        accept``). ``handler`` writes what its type needs in the same transaction (the intake table's
        row for that type); without one, the document alone is stored. Raises :class:`DocumentRefused`;
        then nothing held has changed.
        """
        from agent.ports import Accepted  # with the first document, as intake is (a cold check needs neither)

        async with self._intake:
            for _ in range(2):
                outcome = self._verify(token, expected_typ)
                if isinstance(outcome, Duplicate):
                    log.debug("document_duplicate", typ=outcome.typ, seq=outcome.seq)
                    return outcome
                committed, after = await self._commit(outcome, handler)
                if committed:
                    log.info(
                        "document_accepted",
                        typ=outcome.typ,
                        seq=outcome.claims.seq,
                        kid=outcome.kid,
                        **({"clock_corrected_to": to_rfc3339(outcome.clock_to)} if outcome.clock_to else {}),
                    )
                    return Accepted(outcome.typ, outcome.claims.seq, after)
                # Another process stored a newer document meanwhile: reload, then judge again.
                self._holdings = Holdings.from_snapshot(self._roots, await self._store.snapshot(), self._kept.roots)
            raise DocumentRefused(reasons.ROLLBACK, "newer documents kept arriving from another process")

    def _verify(self, token: str | bytes, expected_typ: str | None) -> Verified | Duplicate:
        from agent.entitlements.intake import verify

        return verify(
            token,
            expected_typ=expected_typ,
            device_id=self.config.device_id,
            keyring=self._holdings.keyring,
            high_water=_merged_marks(self._holdings.high_water, dict(self._kept.high_water)),
            now=self.clock.now(),
            correctable=self.clock.correctable(),
        )

    async def _commit(self, verified: Verified, handler: Handler[T] | None) -> tuple[bool, T | None]:
        from protocol.claims import EntitlementsClaims, TrustClaims

        claims = verified.claims
        now = self.clock.now() if verified.clock_to is None else verified.clock_to
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
        derived: tuple[ProjectRow, list[ServiceRow]] | None = None
        trust_rows: tuple[list[SigningKeyRow], list[RootRow] | None] | None = None
        if isinstance(claims, TrustClaims):
            keyring = keyring.with_trust(claims)
            trust_rows = _trust_rows(claims)
        elif isinstance(claims, EntitlementsClaims):
            entitlements = Entitlements.from_claims(claims)
            derived = _rows_of(entitlements)
            for name in entitlements.unknown_services:
                log.warning("unknown_service", service=name, seq=claims.seq)
        documents = dict(self._holdings.documents)
        documents[verified.typ] = document
        in_force = Holdings(keyring=keyring, documents=documents, entitlements=entitlements)
        iat = float(claims.iat)
        # The accepted iat raises the clock's floor (and its signed part), or the document corrects it.
        anchor = (
            self.clock.anchor(at_least=iat, signed_at_least=iat)
            if verified.clock_to is None
            else self.clock.corrected(verified.clock_to, iat)
        )
        mark = {verified.typ: HighWater(claims.seq, verified.digest)}
        # what lets held alarms out must get in
        spend_reserve = handler.renews if handler is not None else verified.typ in (TRUST, ENTITLEMENTS)
        await self._keep(spend_reserve, high_water=mark, anchor=anchor)  # before the commit: see the docstring

        def put_in_force() -> None:
            self._holdings = in_force
            if verified.clock_to is None:
                self.clock.advance_to(iat)
            else:
                self.clock.correct(verified.clock_to, iat)
                log.warning("clock_corrected", to=to_rfc3339(verified.clock_to), typ=verified.typ, seq=claims.seq)

        async def write(tx: Transaction) -> tuple[bool, T | None]:
            stored = await tx.document_seq(verified.typ)
            if stored is not None and stored >= claims.seq:
                return False, None  # another process stored a newer document meanwhile
            await tx.put_document(document)
            if derived is not None:
                await tx.replace_entitlements(*derived)
            if trust_rows is not None:
                await tx.replace_signing_keys(trust_rows[0])
                if trust_rows[1] is not None:
                    await tx.replace_roots(trust_rows[1])
            await tx.write_anchor(anchor)
            after = await handler.within(tx, verified) if handler is not None else None
            tx.after_commit(put_in_force)
            return True, after

        if spend_reserve:
            committed, after = await self._store.reserved(write)
        else:
            async with self._store.transaction() as tx:
                committed, after = await write(tx)
        if committed and trust_rows is not None and trust_rows[1] is not None:
            rotated = sidecar.Roots(claims.seq, tuple((r.kid, r.x) for r in trust_rows[1]))
            try:  # after the commit: a set the store does not hold yet must not replace the sidecar's
                await self._keep(True, roots=rotated)
            except StoreError as exc:
                log.error("roots_not_kept_in_sidecar", error=str(exc))  # the store holds them
            log.warning("roots_rotated", trust_seq=claims.seq, roots=[r.kid for r in trust_rows[1]])
        return committed, after

    async def _keep(
        self,
        spend_reserve: bool,
        *,
        high_water: dict[str, HighWater] | None = None,
        anchor: Anchor | None = None,
        roots: sidecar.Roots | None = None,
    ) -> None:
        """Merge floors into the sidecar; on a full disk, spend the reserve if entitled to it."""
        data_dir = self.config.data_dir
        try:
            self._kept = await asyncio.to_thread(
                sidecar.update, data_dir, high_water=high_water, anchor=anchor, roots=roots
            )
            return
        except OSError as exc:
            failure = _space_error(exc, "cannot write the sidecar")
        reserve = self._store.reserve
        if not (isinstance(failure, StoreFull) and spend_reserve and reserve is not None):
            raise failure
        if not await asyncio.to_thread(reserve.release):
            raise failure
        try:
            self._kept = await asyncio.to_thread(
                sidecar.update, data_dir, high_water=high_water, anchor=anchor, roots=roots
            )
        except OSError as exc:
            raise _space_error(exc, "cannot write the sidecar") from None

    def decide(self, action: str, subject: str | int | None = None) -> Decision:
        """The policy's decision for a request at trusted time now."""
        return policy.decide(self._holdings.entitlements, self.clock.now(), action, subject)

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
            "project": None if ents is None else {"id": ents.project.id, "type": ents.project.type},
            "document": document,
            "services": services,
            "trust": None
            if trust is None
            else {
                "seq": trust.seq,
                "signing_keys": sorted(self._holdings.keyring.signing),
                "roots": sorted(self._holdings.keyring.roots),
            },
            "trusted_time": to_rfc3339(now),
            "next_expiry": to_rfc3339_or_none(policy.next_expiry(ents, now)),
        }
