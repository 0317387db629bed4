"""The agent's one error tree.

Every failure the agent raises on purpose is an :class:`EdgeAgentError`; errors from libraries
(sqlite3, cryptography, pydantic, aiomqtt) are mapped onto this tree at the module that calls the
library (``raise X from exc``) and never leak past it::

    EdgeAgentError
    ├── ConfigError            bad configuration file, variable or argument; names the key (fatal)
    ├── DocumentRefused        a signed document failed verification; ``.reason`` is the wire code
    ├── BadRequest             a policy question that cannot be asked (unknown action, bad subject)
    └── StoreError             the local database cannot be used as asked (locked, I/O, read-only)
        ├── StoreCorrupt       the file is not a usable agent database (quarantine it)
        ├── StoreFull          the disk, or the configured cap, is full
        └── StoreTooNew        the schema is newer than this agent knows (after a firmware rollback)

Transient errors (retry with backoff) and fatal ones (report, stop) are told apart by class, never
by parsing messages.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration is unusable; the message names the key and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class DocumentRefused(EdgeAgentError):
    """A signed document was refused; nothing the device holds has changed.

    ``reason`` is one of :data:`agent.entitlements.reasons.REFUSAL_REASONS`, the code reported on the wire.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BadRequest(EdgeAgentError):
    """A policy request that has no answer: unknown action, or a subject of the wrong kind."""


class StoreError(EdgeAgentError):
    """The local database cannot be used as asked."""


class StoreCorrupt(StoreError):
    """The database file is damaged or is not an agent database."""


class StoreFull(StoreError):
    """The database cannot grow: the disk or the configured ``store.max_bytes`` is full."""


class StoreTooNew(StoreError):
    """The database schema is newer than this agent: written by newer firmware."""
