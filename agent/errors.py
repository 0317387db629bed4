"""The device's one error tree (the agent and its firmware engine).

Every failure the device raises on purpose is an :class:`EdgeAgentError`; errors from libraries
(sqlite3, cryptography, pydantic, aiomqtt, http.client) are mapped onto this tree at the module that
calls the library (``raise X from exc``) and never leak past it::

    EdgeAgentError
    ├── Transient                 the same operation may succeed later: retry, with backoff
    │   ├── StoreFull             the disk, or the configured cap, is full (space may return)
    │   ├── OutboxFull            an event could not be queued: the cap, or a full disk
    │   └── DownloadInterrupted   a download stalled, was cut, or the server failed: resume it
    ├── ConfigError               bad configuration file, variable or argument; names the key
    ├── DocumentRefused           a signed document failed verification; ``.reason`` is the wire code
    ├── BadRequest                a policy question that cannot be asked (unknown action, bad subject)
    ├── ControlError              a control-socket request not served; ``.code`` is the wire code
    │   └── AlreadyRunning        another daemon answers on this data directory's socket
    ├── FrameError                a hardware frame that is not one; ``.reason`` says why
    ├── SubscriptionRefused       the broker granted no QoS for a topic the device must hear
    │                             (also an ``aiomqtt.MqttError``: the session treats it as a lost link)
    ├── StoreError                the local database cannot be used as asked (locked, I/O, read-only)
    │   ├── StoreCorrupt          the file is not a usable agent database (quarantine it)
    │   ├── StoreFull             (above: also Transient)
    │   └── StoreTooNew           the schema is newer than this agent knows (after a firmware rollback)
    ├── DownloadError             an image could not be fetched as signed; ``.reason`` is the code
    │   └── DownloadInterrupted   (above: also Transient)
    ├── IllegalTransition         a transition the firmware table does not have (a bug)
    └── InjectedFault             a defect planted by a test (``SMARTPLUS_FAIL_AT``, agent/faults.py)

Transient errors and the others are told apart by class (``isinstance(exc, Transient)``), never by
parsing messages or by a flag. Everything not Transient is final for that operation: reported,
refused, or (ConfigError, AlreadyRunning, StoreTooNew at start) the end of the process with exit 2.
Where a class is defined beside its only user (``FrameError`` in ``agent/drivers/mr01.py`` ...), this
tree still names it, and it still derives from the root.

The cloud stub has its own, smaller tree (``cloud_stub/rules.py``: ``Refused``, a rule of the ledger).
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of every error the device raises on purpose."""


class Transient(EdgeAgentError):
    """The same operation may succeed later: retry it, with backoff."""


class ConfigError(EdgeAgentError):
    """The configuration is unusable; the message names the key and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class DocumentRefused(EdgeAgentError):
    """A signed document was refused; nothing the device holds has changed.

    ``reason`` is one of :data:`protocol.reasons.REFUSAL_REASONS`, the code reported on the wire.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BadRequest(EdgeAgentError):
    """A policy request that has no answer: unknown action, or a subject of the wrong kind."""


class ControlError(EdgeAgentError):
    """A control-socket request the daemon could not serve; ``code`` is the wire code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AlreadyRunning(ControlError):
    """Another daemon answers on this data directory's control socket."""

    def __init__(self, message: str) -> None:
        super().__init__("already_running", message)


class FrameError(EdgeAgentError):
    """A datagram or frame from the hardware that is not a valid one; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreError(EdgeAgentError):
    """The local database cannot be used as asked."""


class StoreCorrupt(StoreError):
    """The database file is damaged or is not an agent database."""


class StoreFull(StoreError, Transient):
    """The database cannot grow: the disk or the configured ``store.max_bytes`` is full."""


class StoreTooNew(StoreError):
    """The database schema is newer than this agent: written by newer firmware."""


class OutboxFull(Transient):
    """A new event could not be queued: the outbox is at its cap with nothing it may evict, or the disk is full."""


class DownloadError(EdgeAgentError):
    """An image could not be fetched as signed (bad URL, too large, too slow overall); ``reason`` is the code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def transient(self) -> bool:
        """Whether the class says another attempt may succeed (for reports; code tests the class)."""
        return isinstance(self, Transient)


class DownloadInterrupted(DownloadError, Transient):
    """An attempt stalled, was cut short, or the server failed: the next attempt resumes where it stopped."""


class IllegalTransition(EdgeAgentError):
    """A transition the firmware state machine's table does not have: a bug in the engine."""


class InjectedFault(EdgeAgentError):
    """A defect planted by a test (``SMARTPLUS_FAIL_AT``)."""
