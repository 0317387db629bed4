"""One way in for every signed document: the dispatch from its topic's type to the row of the intake table.

Every payload the session hands over goes through the device's verification for the type of its
topic (a document on the wrong topic is refused), with that type's handler writing what it must in
the same transaction (``agent/intake/handlers.py``, the table the daemon built); once it has
committed, the handler's :class:`~agent.intake.handlers.After` goes to the daemon. A refusal changes
nothing held and becomes an event with its reason code: type ``entitlement`` for trust and
entitlements documents, ``firmware`` for firmware jobs, ``command`` for commands, kind ``rejected``
(PROTOCOL.md "Signed documents"); a flood of them is coalesced into a count per reason and topic
(``agent/intake/refusals.py``).

No message can end the daemon (issue 12). An unexpected exception while handling one is a defect:
it is logged with its traceback (``message_failed``), reported as a refusal with reason
``internal_error``, and the message is dropped; its payload is remembered (``agent/intake/poison.py``)
so that a retained message is not handled again at every connection or start.

:meth:`Intake.take` says whether the message may be acknowledged to the broker: :attr:`Taken.LATER`
when its outcome could not be made durable (a full disk, a locked or failing database), so that the
session keeps it and hands it over again shortly (``agent/sync/session.py``), without waiting for a
reconnect. A document signed by a key no trust document lists yet waits (the latest per type) and is
judged again, in turn, after the next trust document is accepted (NATS orders per topic only).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping

import structlog

from agent.errors import DocumentRefused, OutboxFull, StoreError
from agent.intake.handlers import NOTHING, After
from agent.intake.poison import PoisonList
from agent.intake.refusals import Coalescer, Summary
from agent.outbox import Outbox, Queued
from agent.outbox.events import NewEvent
from agent.ports import Accept, Accepted, Handler, Now
from agent.runtime.faults import fault_point
from agent.store.database import Store
from agent.sync.session import Taken
from protocol import reasons
from protocol.claims import COMMAND, ENTITLEMENTS, FIRMWARE_JOB, TRUST
from protocol.timefmt import to_rfc3339

log = structlog.get_logger("agent.intake")

_REFUSAL_TYPE = {FIRMWARE_JOB: "firmware", COMMAND: "command"}  # anything else: entitlement


class Intake:
    """Takes documents through the table; reports refusals; tells the daemon what to do after each commit.

    ``accept`` is the device's (``Device.accept``); ``store`` and ``now`` are for the poison list.
    """

    def __init__(
        self,
        accept: Accept[After],
        store: Store,
        now: Now,
        outbox: Outbox,
        poison: PoisonList,
        handlers: Mapping[str, Handler[After]],
        *,
        after: Callable[[str, After], None],
    ) -> None:
        self._accept_document, self._store, self._now = accept, store, now
        self._outbox = outbox
        self._poison = poison
        self._handlers = handlers
        self._after = after  # the daemon's: every accepted document, with what its handler asked for
        # Documents signed by a key no trust document in force lists yet, by typ (the latest only): on a
        # broker that orders per topic only (NATS), a retained document can arrive before the trust
        # document that brings its key. They are judged again when a trust document is accepted.
        self._awaiting_key: dict[str, bytes] = {}
        self._refusals = Coalescer()
        self._window_opened = asyncio.Event()
        self.failed = 0  # messages whose handling failed unexpectedly (for the status and the tests)
        self.refused = 0  # documents refused, coalesced or not
        self._not_taken: bytes | None = None  # the last message not taken for want of space (logged once)

    async def take(self, typ: str, payload: bytes) -> Taken:
        """Take one message of document type ``typ``; whether it may be acknowledged."""
        taken = await self._take_one(typ, payload)
        if taken is Taken.YES and typ == TRUST and self._awaiting_key:
            waiting, self._awaiting_key = self._awaiting_key, {}
            for waiting_typ, waiting_payload in waiting.items():  # in turn, never re-entering take()
                log.info("document_judged_again", typ=waiting_typ)
                if await self._take_one(waiting_typ, waiting_payload) is Taken.LATER:
                    self._awaiting_key.setdefault(waiting_typ, waiting_payload)
        return taken

    async def _take_one(self, typ: str, payload: bytes) -> Taken:
        if not payload:
            log.info("retained_cleared", typ=typ)  # the cloud deleted a retained document: keep ours
            return Taken.YES
        digest = hashlib.sha256(payload).digest()
        if digest in self._poison:
            log.info("message_skipped", typ=typ, reason="failed_before", payload_sha256=digest.hex())
            return Taken.YES
        try:
            return await self._accept(typ, payload)
        except Exception as exc:  # a defect: report it, drop the message, never die of it (issue 12)
            self.failed += 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.exception("message_failed", typ=typ, error=error, payload_sha256=digest.hex())
            try:  # remembered first: a stop right after the report must not let it fail (and be reported) again
                await self._poison.remember(self._store, digest, typ, error, self._now())
            except StoreError as failure:
                log.error("poison_not_recorded", typ=typ, error=str(failure))  # remembered in memory still
            await self._report_refusal(
                typ, DocumentRefused(reasons.INTERNAL_ERROR, f"the device failed handling it ({type(exc).__name__})"),
                payload,
            )  # fmt: skip
            return Taken.YES

    async def _accept(self, typ: str, payload: bytes) -> Taken:
        fault_point(f"inbound:{typ}")
        try:
            outcome = await self._accept_document(payload, typ, handler=self._handlers[typ])
        except DocumentRefused as refused:
            if refused.reason == reasons.UNKNOWN_KID and typ in (ENTITLEMENTS, FIRMWARE_JOB):
                self._awaiting_key[typ] = payload
                log.info("document_awaits_trust", typ=typ)
            await self._report_refusal(typ, refused, payload)
            return Taken.YES
        except (OutboxFull, StoreError) as exc:  # a full disk, a locked or failing database: not now
            digest = hashlib.sha256(payload).digest()
            if digest != self._not_taken:  # once per message: it is handed over again every few seconds
                self._not_taken = digest
                log.error("message_not_taken", typ=typ, error=str(exc))
            return Taken.LATER
        if isinstance(outcome, Accepted):
            after = outcome.after or NOTHING
            if after.reply is not None:
                reply = after.reply
                log.info("command_answered", id=reply["id"], ok=reply["ok"], error=reply.get("error", {}).get("code"))
            self._after(typ, after)
        return Taken.YES

    async def _report_refusal(self, typ: str, refused: DocumentRefused, payload: bytes) -> None:
        """Report a refusal (the first of its kind in a window at once, durably; the rest as a count)."""
        self.refused += 1
        # The digest lets the cloud tell which of its documents this was; the token itself is not echoed.
        token_sha256 = hashlib.sha256(payload.strip()).hexdigest()
        detail = refused.detail[:500]
        now = self._now()
        mono = asyncio.get_running_loop().time()
        if not self._refusals.offer(typ, refused.reason, detail, token_sha256, mono=mono, at=now):
            return  # counted: reported with the others of its kind when the window ends
        self._window_opened.set()
        log.warning("document_refused", typ=typ, reason=refused.reason, detail=detail, token_sha256=token_sha256)
        data = {"typ": typ, "reason": refused.reason, "detail": detail, "token_sha256": token_sha256, "count": 1}
        try:
            await self._outbox.add(NewEvent(_REFUSAL_TYPE.get(typ, "entitlement"), "rejected", typ, data, now))
        except (OutboxFull, StoreError) as exc:
            log.error("refusal_not_reported", typ=typ, reason=refused.reason, error=str(exc))

    def _report_summary(self, summary: Summary) -> None:
        log.warning(
            "document_refused_coalesced", typ=summary.typ, reason=summary.reason, count=summary.refused,
            first_at=to_rfc3339(summary.first_at), last_at=to_rfc3339(summary.last_at),
        )  # fmt: skip
        data = {
            "typ": summary.typ,
            "reason": summary.reason,
            "detail": summary.detail,
            "token_sha256": summary.token_sha256,
            "count": summary.refused,
            "coalesced": True,
            "first_at": to_rfc3339(summary.first_at),
            "last_at": to_rfc3339(summary.last_at),
        }
        event = NewEvent(_REFUSAL_TYPE.get(summary.typ, "entitlement"), "rejected", summary.typ, data, summary.last_at)
        self._outbox.add(event).add_done_callback(_reported(summary))

    async def run(self) -> None:
        """Report the counts of coalesced refusals as their windows end; at a stop, report what is left."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                due = self._refusals.next_due()
                self._window_opened.clear()
                if due is None:
                    await self._window_opened.wait()
                    continue
                try:
                    async with asyncio.timeout(max(0.0, due - loop.time())):
                        await asyncio.Event().wait()
                except TimeoutError:
                    pass
                for summary in self._refusals.due(loop.time()):
                    self._report_summary(summary)
        finally:
            for summary in self._refusals.drain():  # queued now: the outbox commits them as it closes
                self._report_summary(summary)


def _reported(summary: Summary) -> Callable[[asyncio.Future[Queued]], None]:
    def done(future: asyncio.Future[Queued]) -> None:
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.error(
                "refusal_not_reported", typ=summary.typ, reason=summary.reason, count=summary.refused, error=str(exc)
            )

    return done
