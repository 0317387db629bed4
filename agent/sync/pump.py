"""What the session publishes, as it is handed it: a pump of outgoing messages (agent/outbox/reader.py's
:class:`~agent.outbox.reader.Pump` on the outbox). The session imports nothing of the outbox (an import-linter
contract in pyproject.toml): it walks a cursor, publishes, and says what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Message(Protocol):
    """One message to publish: its id (acknowledged by it), its leaf topic (``events``, ``replies``), payload."""

    @property
    def id(self) -> int: ...

    @property
    def leaf(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class Cursor(Protocol):
    """One connection's walk over what is to be sent: each message handed out once on it."""

    async def next(self) -> Sequence[Message]:
        """The next messages, in order; waits until there are some."""

    def published(self, ident: int) -> None:
        """The broker acknowledged message ``ident``."""


class Pump(Protocol):
    def cursor(self) -> Cursor:
        """A new walk, for a new connection: whatever was not acknowledged goes again."""
