"""What the daemon's parts are handed of the device's holdings: narrow views, not the :class:`Device`.

The device (``agent/device.py``) holds the keys, the documents in force, the entitlements and trusted
time, and stores them. Each part of the daemon is handed only what it uses of that, besides the store
and a clock (``now``), by the daemon (``agent/daemon.py``), which builds them all:

================================  ==============================================================
part                              handed
================================  ==============================================================
local side (``agent/local/``)     :class:`Rights`, the store, ``now``, its ``[drivers]`` section
intake (``agent/intake/``)        :class:`Accept` (``Device.accept``), the store, ``now``
housekeeping                      :class:`Held`, the store, ``now``
control ops (``agent/control/``)  :data:`Decide` (``Device.decide``), ``now``
status view (``runtime/status``)  :class:`Described`
================================  ==============================================================

An import-linter contract (pyproject.toml) keeps them from importing the device. The device satisfies
each protocol as it is; a test can hand a part a small fake instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from agent.entitlements.index import Entitlements
from agent.entitlements.marks import Duplicate
from agent.entitlements.policy import Decision
from agent.store.database import StoredDocument, Transaction

if TYPE_CHECKING:  # intake and its models load with the first document
    from agent.entitlements.intake import Verified

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Now = Callable[[], float]
"""Trusted time now, epoch seconds (``TrustedClock.now``)."""

Decide = Callable[[str, str | int | None], Decision]
"""The policy's decision for a request (action, subject) at trusted time now (``Device.decide``)."""


class Handler(Protocol[T_co]):
    """What a document type writes besides the document, in the transaction that stores it (a firmware
    job's admission, a command's effect and reply): a row of the intake table (``agent/intake/``)."""

    @property
    def renews(self) -> bool:
        """Whether it may spend the data directory's reserve on a full disk (what lets held alarms out)."""

    async def within(self, tx: Transaction, verified: Verified) -> T_co:
        """Write in ``tx``; what to do once it has committed."""


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """A document now in force; ``after`` is what its handler said to do once it committed."""

    typ: str
    seq: int
    after: T | None = None


class Accept(Protocol[T]):
    """Verify a document of topic type ``expected_typ``, store it with what ``handler`` writes, put it in
    force (``Device.accept``); raises :class:`~agent.errors.DocumentRefused`."""

    def __call__(
        self, token: str | bytes, expected_typ: str | None = None, *, handler: Handler[T]
    ) -> Awaitable[Accepted[T] | Duplicate]: ...


class Rights(Protocol):
    """The entitlements in force, and the policy's decisions on them now."""

    @property
    def entitlements(self) -> Entitlements | None:
        """The entitlements document in force, if any."""

    def decide(self, action: str, subject: str | int | None = None) -> Decision:
        """The policy's decision for a request at trusted time now."""


class InForce(Protocol):
    """The entitlements and the documents in force."""

    @property
    def entitlements(self) -> Entitlements | None:
        """The entitlements document in force, if any."""

    @property
    def documents(self) -> dict[str, StoredDocument]:
        """The document in force per type."""


class Held(InForce, Protocol):
    """What housekeeping follows through time: what is in force, and the clock's floor to persist."""

    async def save_clock(self) -> None:
        """Persist trusted time's floor."""


class Described(InForce, Protocol):
    """What the status view reads (``agent/runtime/status.py``): what is in force, and its summary."""

    def status(self) -> dict[str, Any]:
        """The ``edge-agent status --json`` object of the holdings."""
