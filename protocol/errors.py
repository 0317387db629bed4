"""The root of the project's errors, and the refusal of a signed document (PROTOCOL.md "Signed documents").

Both sides raise and catch these: the device refuses documents (``agent/errors.py`` draws the whole
device tree under :class:`SmartPlusError`), the cloud's fleet simulator refuses them too, and the cloud
stub's ledger refusals (``cloud_stub/rules.py``) derive from the same root.
"""

from __future__ import annotations


class SmartPlusError(Exception):
    """Root of every error this project raises on purpose, device and cloud alike."""


class DocumentRefused(SmartPlusError):
    """A signed document was refused; nothing the device holds has changed.

    ``reason`` is one of :data:`protocol.reasons.REFUSAL_REASONS`, the code reported on the wire.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
