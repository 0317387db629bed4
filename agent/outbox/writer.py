"""Group commit: one writer task commits everything queued meanwhile in one transaction.

The writer knows nothing of rows or SQL: it gathers new events (whose raisers wait) and PUBACKs (which
are in no hurry) and hands each batch to a ``commit`` function (the outbox's). A burst of a thousand
events costs a handful of fsyncs, not a thousand. An item waits with a future of its own
(:meth:`GroupCommit.add`), or a burst of them with one future for all (:meth:`GroupCommit.add_many`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, NamedTuple, TypeVar

import structlog

from agent.errors import OutboxFull, StoreError

log = structlog.get_logger("agent.outbox")

MAX_BATCH: Final = 2_000  # events per group commit
ACK_BATCH: Final = 1_000  # acknowledgements that are committed without waiting for more
ACK_GATHER: Final = 0.05  # seconds acknowledgements alone wait for more
WRITE_RETRY: Final = 0.5  # seconds before the writer tries again after the database failed it

T = TypeVar("T")
R = TypeVar("R")


class Pending(NamedTuple, Generic[T]):
    """Items waiting for the next commit, and the future their raiser awaits (None: nobody waits).

    ``one``: a single item, whose future gets its outcome (or raises its refusal); otherwise a burst,
    whose future gets the list of its items' outcomes, refusals included, in order.
    """

    items: Sequence[T]
    future: asyncio.Future[Any] | None
    one: bool


Commit = Callable[[list[Pending[T]], set[int]], Awaitable[None]]


class GroupCommit(Generic[T, R]):
    """Batches items and acknowledgements for ``commit``; run :meth:`run` as a task, then :meth:`close`.

    ``commit(batch, acks)`` settles every future in ``batch``; the acknowledgements it could not record
    it hands back with :meth:`acknowledge` (they are tried again with the next batch).
    """

    def __init__(self, commit: Commit[T]) -> None:
        self._commit = commit
        self.pending: list[Pending[T]] = []
        self.acks: set[int] = set()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # items to commit now, or enough acknowledgements gathered
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.batches = 0  # commits so far

    def add(self, item: T, future: asyncio.Future[R]) -> None:
        """Queue ``item`` for the next commit, now; ``future`` gets its outcome."""
        self._queue(tuple.__new__(Pending, ((item,), future, True)))  # once per event: not Pending's own __new__

    def add_many(self, items: Sequence[T], future: asyncio.Future[list[Any]]) -> None:
        """Queue a burst for the next commit (one commit: keep it to ``MAX_BATCH``); ``future`` gets
        the list of their outcomes."""
        self._queue(Pending(items, future, False))

    def _queue(self, pending: Pending[T]) -> None:
        self.pending.append(pending)
        self._wake.set()
        self._urgent.set()

    def _take(self) -> list[Pending[T]]:
        """The pending entries of the next commit: up to ``MAX_BATCH`` items (a burst is not split)."""
        weight, taken = 0, 0
        for pending in self.pending:
            weight += len(pending.items)
            taken += 1
            if weight >= MAX_BATCH:
                break
        batch, self.pending = self.pending[:taken], self.pending[taken:]
        return batch

    def acknowledge(self, row_ids: set[int] | frozenset[int]) -> None:
        """Record these with a coming commit (soon; at once when enough have gathered)."""
        self.acks |= row_ids
        self._wake.set()
        if len(self.acks) >= ACK_BATCH:
            self._urgent.set()

    def acknowledge_one(self, row_id: int) -> None:
        """:meth:`acknowledge` for one row: what a drain calls per PUBACK, without a set made for it."""
        acks = self.acks
        acks.add(row_id)
        self._wake.set()
        if len(acks) >= ACK_BATCH:
            self._urgent.set()

    async def run(self) -> None:
        """Commit queued items and acknowledgements in batches until :meth:`close`.

        Items are committed at once (their raisers wait). Acknowledgements alone gather for up to
        ``ACK_GATHER`` seconds (or ``ACK_BATCH`` of them).
        """
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self.pending and not self._closing and len(self.acks) < ACK_BATCH:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(ACK_GATHER):  # not wait_for (protocol/cancelling.py)
                            await self._urgent.wait()
                self._urgent.clear()
                while self.pending or self.acks:
                    self._idle.clear()
                    batch = self._take()
                    acks, self.acks = self.acks, set()
                    self.batches += 1
                    try:
                        await self._commit(batch, acks)
                    except StoreError as exc:  # locked or failing: this batch's raisers hear it; go on
                        log.error("outbox_write_failed", error=str(exc), refused=len(batch), acks=len(acks))
                        if self._closing:
                            break
                        await asyncio.sleep(WRITE_RETRY)  # the acknowledgements are tried again then
                    # Let the raisers just settled run before the next commit starts: the database thread
                    # needs the GIL for every row it binds, and with the event loop busy meanwhile it waits
                    # for the interpreter's switch interval (5 ms) again and again.
                    await asyncio.sleep(0)
                    if (
                        not self.pending
                        and not self._closing
                        and not self._urgent.is_set()
                        and len(self.acks) < ACK_BATCH
                    ):
                        # Only acknowledgements came in during that commit (a drain: one PUBACK after another):
                        # gather more before the next commit, rather than commit (and fsync) a few at a time.
                        if self.acks:
                            self._wake.set()
                        break
                self._idle.set()
                if self._closing:
                    return
        finally:  # whatever ends the writer, close() must not wait for it for ever
            self._idle.set()
            for pending in self.pending:
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(OutboxFull("the outbox writer has stopped"))

    async def flush(self) -> None:
        """Return once everything queued so far, acknowledgements included, is committed (writer running)."""
        while self.pending or self.acks or not self._idle.is_set():
            self._wake.set()
            self._urgent.set()
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        """Finish what is queued (the writer must be running); return once it is."""
        self._closing = True
        self._wake.set()
        self._urgent.set()
        await self._idle.wait()


def settle(batch: list[Pending[T]], outcomes: Sequence[R | Exception]) -> None:
    """Resolve each waiting raiser with its outcome (a result, or the refusal): ``outcomes`` has one
    per item, in the order of ``batch``'s items."""
    at = 0
    for pending in batch:
        size, future = len(pending.items), pending.future
        if future is not None and not future.done():
            if not pending.one:
                future.set_result(list(outcomes[at : at + size]))
            elif isinstance(outcome := outcomes[at], Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        at += size
    if at != len(outcomes):
        raise ValueError(f"{len(outcomes)} outcomes for {at} items")


def fail(batch: list[Pending[T]], exc: BaseException) -> None:
    """Every waiting raiser in ``batch`` hears ``exc``."""
    for pending in batch:
        if pending.future is not None and not pending.future.done():
            pending.future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
