"""The cloud's one error tree.

Every failure the cloud raises on purpose is a :class:`~protocol.errors.SmartPlusError`; errors from
libraries (SQLAlchemy and its drivers, pydantic, uvicorn) are mapped onto this tree where the library is
called (``raise X from exc``) and never leak past it::

    SmartPlusError                  the project's root (protocol/errors.py)
    └── CloudError                  the cloud's own
        ├── Refused                 a rule of the vendor's refuses the request; ``.rule`` and ``.seed`` say
        │                           which and where it is written (cloud_stub/rules.py). Changes nothing.
        ├── BadRequest              a request that cannot be asked: malformed, out of bounds; names the field
        ├── IdempotencyMismatch     an Idempotency-Key used again for another request
        ├── LedgerError             the ledger cannot be used as asked
        │   ├── LedgerUnavailable   the database cannot be reached (transient: try again)
        │   ├── LedgerConflict      concurrent writers collided and retries ran out (transient)
        │   └── LedgerOutdated      the schema is not the one this program speaks: ``smartplus-cloud migrate``
        └── ConfigError             ``serve``'s configuration: names the key

The adapters map the tree once each: the CLI to exit codes (1 refused, 2 bad argument, 75 transient), the
HTTP API to statuses (403/404/409 refused, 400 bad request, 422 mismatch, 503 unavailable).
"""

from __future__ import annotations

from typing import Any

from protocol.errors import SmartPlusError


def first_invalid(exc: Any) -> tuple[str, str]:
    """The first field a pydantic ``ValidationError`` refuses, dotted (``""``: the whole request), and what
    it says, without pydantic's ``Value error, ``: what the CLI and the portal each put in one line."""
    first = exc.errors(include_url=False)[0]
    return ".".join(str(part) for part in first["loc"]), str(first["msg"]).removeprefix("Value error, ")


class CloudError(SmartPlusError):
    """Root of the cloud's own errors."""


class Refused(CloudError):
    """A request the rules do not allow; ``rule`` is the code, ``seed`` where the rule is written."""

    def __init__(self, rule: str, message: str, seed: str) -> None:
        super().__init__(f"{message} ({rule}; {seed})")
        self.rule = rule
        self.seed = seed
        self.message = message


class BadRequest(CloudError):
    """A malformed request: one line naming what is wrong."""


class IdempotencyMismatch(CloudError):
    """An Idempotency-Key already used for a different request by the same account."""


class LedgerError(CloudError):
    """The ledger cannot be used as asked."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or answered with an error of its own (transient)."""


class LedgerConflict(LedgerError):
    """Concurrent transactions kept colliding (deadlock or serialization failure) past the retries."""


class LedgerOutdated(LedgerError):
    """The ledger's schema is older (or newer) than this program's: ``smartplus-cloud migrate``."""


class ConfigError(CloudError):
    """A bad configuration key or value; the message names the key."""
