"""Poison messages: payloads whose handling failed with an unexpected error (a defect), remembered so that
they are handled once, not at every redelivery (issue 12).

A retained message is delivered again on every connection and after every restart. If handling it
ends in a bug, the daemon must neither die (it would die again at every start: a crash loop) nor
retry it for ever. The inbound side reports the failure once (a refusal event with reason
``internal_error``, and a ``message_failed`` log event with the error), then records the payload's
SHA-256 here; a later delivery of the very same bytes is dropped quietly (``message_skipped``).
A new document (any other payload) is judged afresh. The table keeps the newest :data:`KEEP` entries;
it is the only SQL for ``poison_messages``.
"""

from __future__ import annotations

from typing import Final

from agent.store.database import Store

KEEP: Final = 256


class PoisonList:
    """The digests of payloads that failed (the newest :data:`KEEP`), in memory and in the store."""

    def __init__(self, digests: list[bytes]) -> None:
        self._digests = dict.fromkeys(digests[-KEEP:])  # insertion order: oldest first

    @classmethod
    async def load(cls, store: Store) -> PoisonList:
        """What the store remembers."""
        async with store.transaction("DEFERRED") as tx:
            rows = await tx.fetchall("SELECT digest FROM poison_messages ORDER BY failed_at")
        return cls([bytes(row[0]) for row in rows])

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    async def remember(self, store: Store, digest: bytes, typ: str, error: str, now: float) -> None:
        """Record a payload that failed: in memory at once, then in the store (which may raise StoreError)."""
        self._digests[digest] = None
        while len(self._digests) > KEEP:
            del self._digests[next(iter(self._digests))]
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT OR REPLACE INTO poison_messages (digest, typ, error, failed_at) VALUES (?, ?, ?, ?)",
                (digest, typ, error[:500], now),
            )
            await tx.execute(
                "DELETE FROM poison_messages WHERE digest NOT IN "
                "(SELECT digest FROM poison_messages ORDER BY failed_at DESC LIMIT ?)",
                (KEEP,),
            )
