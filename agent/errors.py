"""The device's one error tree (the agent and its firmware engine).

Every failure the device raises on purpose is a :class:`~protocol.errors.SmartPlusError`; errors from
libraries (sqlite3, PyNaCl, msgspec, aiomqtt, http.client) are mapped onto this tree at the
module that calls the library (``raise X from exc``) and never leak past it::

    SmartPlusError                    the project's root (protocol/errors.py)
    ├── DocumentRefused               a signed document failed verification; ``.reason`` is the wire
    │                                 code (protocol/errors.py: the cloud's simulator refuses them too)
    └── EdgeAgentError                the device's own
        ├── Transient                 the same operation may succeed later: retry, with backoff
        │   ├── StoreFull             the disk, or the configured cap, is full (space may return)
        │   ├── OutboxFull            an event could not be queued: the cap, or a full disk
        │   └── DownloadInterrupted   a download stalled, was cut, or the server failed: resume it
        ├── ConfigError               bad configuration file, variable or argument; names the key
        ├── BadRequest                a policy question that cannot be asked (unknown action, subject)
        ├── ControlError              a control-socket request not served; ``.code`` is the wire code
        │   └── AlreadyRunning        another daemon answers on this data directory's socket
        ├── FrameError                a hardware frame that is not one; ``.reason`` says why
        ├── SubscriptionRefused       the broker granted no QoS for a topic the device must hear (also
        │                             an ``aiomqtt.MqttError``, so the session takes it for a lost
        │                             link; defined in agent/sync/session.py, beside aiomqtt)
        ├── StoreError                the local database cannot be used as asked (locked, I/O...)
        │   ├── StoreCorrupt          the file is not a usable agent database (quarantine it)
        │   ├── StoreFull             (above: also Transient)
        │   └── StoreTooNew           the schema is newer than this agent (after a firmware rollback)
        ├── DownloadError             an image could not be fetched as signed; ``.reason`` is the code
        │   └── DownloadInterrupted   (above: also Transient)
        ├── BootEnvError              a bootloader's tool (fw_setenv, grub-editenv) failed; its message says why
        ├── IllegalTransition         a transition the firmware table does not have (a bug)
        └── InjectedFault             a defect planted by a test (``SMARTPLUS_FAIL_AT``, agent/runtime/faults.py)

Transient errors and the others are told apart by class (``isinstance(exc, Transient)``), never by
parsing messages or by a flag. Everything not Transient is final for that operation: reported,
refused, or (ConfigError, AlreadyRunning, StoreTooNew at start) the end of the process with exit 2.
Only ``SubscriptionRefused`` (it must also be an aiomqtt error) and a private stop signal of the
downloader are defined elsewhere; both derive from the root.

The cloud stub's ledger refuses with ``cloud_stub.rules.Refused``, under the same root.
"""

from __future__ import annotations

from protocol.errors import DocumentRefused, SmartPlusError

__all__ = [
    "AlreadyRunning",
    "BadRequest",
    "BootEnvError",
    "ConfigError",
    "ControlError",
    "DocumentRefused",
    "DownloadError",
    "DownloadInterrupted",
    "EdgeAgentError",
    "FrameError",
    "IllegalTransition",
    "InjectedFault",
    "OutboxFull",
    "SmartPlusError",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreTooNew",
    "Transient",
]


class EdgeAgentError(SmartPlusError):
    """Root of every error the device raises on purpose (beside the contract's DocumentRefused)."""


class Transient(EdgeAgentError):
    """The same operation may succeed later: retry it, with backoff."""


class ConfigError(EdgeAgentError):
    """The configuration is unusable; the message names the key and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


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


class BootEnvError(EdgeAgentError):
    """A bootloader's tool failed (firmware/bootenv.py)."""


class IllegalTransition(EdgeAgentError):
    """A transition the firmware state machine's table does not have: a bug in the engine."""


class InjectedFault(EdgeAgentError):
    """A defect planted by a test (``SMARTPLUS_FAIL_AT``)."""
