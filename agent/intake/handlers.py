"""The rows of the intake table: what each document type writes in the transaction that stores it, and
what to do once that transaction has committed (persist, then act).

Each handler takes the open transaction and the verified document and returns an :class:`After`: plain
data, which the daemon (the composition root, which built the table) turns into actions. Nothing here
calls back up the layers or acts before the commit.

=================== ================================================================ ======================
typ                 writes, besides the document and its derived rows (the device's)  after the commit
=================== ================================================================ ======================
trust, entitlements nothing (they may spend the reserve: a renewal frees held alarms)  -
firmware-job        the job's admission: a job row and its event, or a refusal event   the engine looks again
command             its effect, its one reply and its id, or nothing if answered       state again, restart
=================== ================================================================ ======================

Every accepted document also makes the local side and housekeeping look again (the daemon does that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple, cast

import structlog

from agent.entitlements.intake import Verified
from agent.entitlements.policy import Decision
from agent.intake import commands
from agent.outbox import Outbox
from agent.store.database import Transaction
from protocol.claims import COMMAND, ENTITLEMENTS, FIRMWARE_JOB, TRUST, CommandClaims, FirmwareJobClaims

log = structlog.get_logger("agent.intake")


class After(NamedTuple):
    """What to do once a document's transaction has committed, besides what every accepted document
    causes (the local side and housekeeping look again: holdings, settings or credentials changed)."""

    firmware: bool = False  # a firmware job was admitted, replaced or cancelled: the engine looks again
    resync: bool = False  # publish the state report again
    restart: bool = False  # the daemon restarts once the reply is out
    reply: Mapping[str, Any] | None = None  # a command's reply, for the log


NOTHING: Final = After()


class Holdings:
    """``trust`` and ``entitlements``: the device stores them and what derives from them; nothing more."""

    renews = True  # a renewal is what lets held alarms out: it may spend the reserve on a full disk

    async def within(self, tx: Transaction, verified: Verified) -> After:
        """Nothing to write."""
        return NOTHING


class FirmwareJobs:
    """``firmware-job``: judged against the job under way and admitted in the document's transaction."""

    renews = False

    def __init__(self, admit: Callable[[Transaction, FirmwareJobClaims], Any]) -> None:
        self._admit = admit  # the engine's admission (firmware/engine.py Engine.admit_in)

    async def within(self, tx: Transaction, verified: Verified) -> After:
        """Admit (or refuse, or cancel) the job; the engine looks again once it is committed."""
        await self._admit(tx, cast(FirmwareJobClaims, verified.claims))
        return After(firmware=True)


class Commands:
    """``command``: carried out once per id, its effect, reply and id committed with the document."""

    renews = False

    def __init__(
        self,
        outbox: Outbox,
        decide: Callable[[str, str | None], Decision],
        now: Callable[[], float],
        diagnostics: Callable[[int], dict[str, Any]],
    ) -> None:
        self._outbox, self._decide, self._now = outbox, decide, now
        self._diagnostics = diagnostics  # the daemon's (agent/runtime/diagnostics.py): no I/O on the store

    async def within(self, tx: Transaction, verified: Verified) -> After:
        """Plan, apply, record and reply (or nothing, for an id answered before)."""
        claims = cast(CommandClaims, verified.claims)
        if await commands.answered(tx, claims.id):
            log.info("command_already_answered", id=claims.id, op=claims.op)
            return NOTHING
        now = self._now()
        plan = commands.plan(claims, self._decide)
        await commands.apply(tx, claims, plan.effect, now)
        reply = plan.reply
        if plan.effect.replay is not None:
            reply = {**reply, **await self._outbox.replay_in(tx, *plan.effect.replay)}
        if plan.effect.diagnostics is not None:
            reply = {**reply, "diagnostics": self._diagnostics(plan.effect.diagnostics)}
        await commands.record(tx, claims, reply, now)
        await self._outbox.reply_in(tx, reply)
        return After(resync=plan.effect.resync, restart=plan.effect.restart, reply=reply)


def table(
    *, admit_job: Callable[[Transaction, FirmwareJobClaims], Any], commands_handler: Commands
) -> dict[str, Holdings | FirmwareJobs | Commands]:
    """The intake table: one handler per document type (the daemon builds it)."""
    holdings = Holdings()
    return {TRUST: holdings, ENTITLEMENTS: holdings, FIRMWARE_JOB: FirmwareJobs(admit_job), COMMAND: commands_handler}
