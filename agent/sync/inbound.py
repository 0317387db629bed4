"""What the device does with each message on the topics it subscribes to.

Every payload goes through the core's verification for the type of its topic (a document on the
wrong topic is refused). A refusal changes nothing held and becomes an event with its reason code:
type ``entitlement`` for trust and entitlements documents, ``firmware`` for firmware jobs,
``command`` for commands, kind ``rejected`` (PROTOCOL.md "Signed documents"). A command's effect and
reply commit in the transaction that stores it (``agent/commands.py``).

:meth:`Inbound.handle` returns whether the message may be acknowledged to the broker: not when its
outcome could not be made durable (a full disk), so that the broker delivers it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import structlog

from agent import commands
from agent.device import Accepted, Device
from agent.entitlements import reasons
from agent.entitlements.documents import COMMAND, ENTITLEMENTS, FIRMWARE_JOB, TRUST, CommandClaims, FirmwareJobClaims
from agent.entitlements.intake import Verified
from agent.errors import DocumentRefused, StoreError, StoreFull
from agent.events import NewEvent
from agent.outbox import Outbox, OutboxFull
from agent.store import Transaction

log = structlog.get_logger("agent.inbound")

_REFUSAL_TYPE = {FIRMWARE_JOB: "firmware", COMMAND: "command"}  # anything else: entitlement


class Inbound:
    """Routes verified documents and commands; reports refusals; tells the daemon what changed."""

    def __init__(
        self,
        device: Device,
        outbox: Outbox,
        *,
        on_change: Callable[[], None],
        on_resync: Callable[[], None],
        on_restart: Callable[[], None],
    ) -> None:
        self._device = device
        self._outbox = outbox
        self._on_change = on_change
        self._on_resync = on_resync
        self._on_restart = on_restart
        # Documents signed by a key no trust document in force lists yet, by typ (the latest only): on a
        # broker that orders per topic only (NATS), a retained document can arrive before the trust
        # document that brings its key. They are judged again when a trust document is accepted.
        self._awaiting_key: dict[str, bytes] = {}
        # Firmware jobs are judged in the transaction that stores them (firmware/engine.py); set by the daemon.
        self.on_firmware: Callable[[Transaction, FirmwareJobClaims], Awaitable[None]] | None = None

    async def handle(self, typ: str, payload: bytes) -> bool:
        """Take one message of document type ``typ``; whether it may be acknowledged."""
        if not payload:
            log.info("retained_cleared", typ=typ)  # the cloud deleted a retained document: keep ours
            return True
        try:
            if typ == COMMAND:
                outcome = await self._command(payload)
            elif typ == FIRMWARE_JOB and self.on_firmware is not None:
                outcome = await self._firmware(payload, self.on_firmware)
            else:
                outcome = await self._device.accept(payload, typ)
        except DocumentRefused as refused:
            if refused.reason == reasons.UNKNOWN_KID and typ in (ENTITLEMENTS, FIRMWARE_JOB):
                self._awaiting_key[typ] = payload
                log.info("document_awaits_trust", typ=typ)
            await self._report_refusal(typ, refused, payload)
            return True
        except (OutboxFull, StoreFull) as exc:
            log.error("message_not_taken", typ=typ, error=str(exc))
            return False
        except StoreError as exc:  # a defect or a failing disk: one message must not stop the daemon
            log.error("message_failed", typ=typ, error=str(exc))
            return False
        if isinstance(outcome, Accepted):
            self._on_change()
            if typ == TRUST and self._awaiting_key:
                waiting, self._awaiting_key = self._awaiting_key, {}
                for waiting_typ, waiting_payload in waiting.items():
                    log.info("document_judged_again", typ=waiting_typ)
                    await self.handle(waiting_typ, waiting_payload)
        return True

    async def _firmware(
        self, payload: bytes, admit: Callable[[Transaction, FirmwareJobClaims], Awaitable[None]]
    ) -> Accepted | Any:
        async def also(verified: Verified, tx: Transaction) -> None:
            await admit(tx, cast(FirmwareJobClaims, verified.claims))

        return await self._device.accept(payload, FIRMWARE_JOB, also=also)

    async def _command(self, payload: bytes) -> Accepted | Any:
        done: dict[str, commands.Plan] = {}

        async def also(verified: Verified, tx: Transaction) -> None:
            claims = cast(CommandClaims, verified.claims)
            now = self._device.clock.now()
            if await commands.answered(tx, claims.id):
                log.info("command_already_answered", id=claims.id, op=claims.op)
                return
            plan = commands.plan(claims, self._device.decide)
            await commands.apply(tx, claims, plan.effect, now)
            if plan.effect.replay is not None:
                replayed = await self._outbox.replay_in(tx, *plan.effect.replay)
                plan = plan._replace(reply={**plan.reply, **replayed})
            await commands.record(tx, claims, plan.reply, now)
            await self._outbox.reply_in(tx, plan.reply)
            done["plan"] = plan

        outcome = await self._device.accept(payload, COMMAND, also=also)
        plan = done.get("plan")
        if plan is not None:
            reply = plan.reply
            log.info("command_answered", id=reply["id"], ok=reply["ok"], error=reply.get("error", {}).get("code"))
            if plan.effect.settings:
                self._on_change()
            if plan.effect.resync:
                self._on_resync()
            if plan.effect.restart:
                self._on_restart()
        return outcome

    async def _report_refusal(self, typ: str, refused: DocumentRefused, payload: bytes) -> None:
        # The digest lets the cloud tell which of its documents this was; the token itself is not echoed.
        data = {
            "typ": typ,
            "reason": refused.reason,
            "detail": refused.detail[:500],
            "token_sha256": hashlib.sha256(payload.strip()).hexdigest(),
        }
        event = NewEvent(_REFUSAL_TYPE.get(typ, "entitlement"), "rejected", typ, data, self._device.clock.now())
        try:
            await self._outbox.add(event)
        except (OutboxFull, StoreFull) as exc:
            log.error("refusal_not_reported", typ=typ, reason=refused.reason, error=str(exc))
