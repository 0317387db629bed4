"""Names on the wire that need no model: the four signed document types and the pattern of an id
(PROTOCOL.md). ``protocol/claims.py`` has the models and re-exports these; a module that only names a
type (the device opening its store, ``edge-agent check``) imports them from here and builds no schema."""

from __future__ import annotations

from typing import Final

TRUST: Final = "trust"
ENTITLEMENTS: Final = "entitlements"
FIRMWARE_JOB: Final = "firmware-job"
COMMAND: Final = "command"
TYPES: Final = (TRUST, ENTITLEMENTS, FIRMWARE_JOB, COMMAND)
ROOT_PROOF: Final = "root-proof"  # the typ of a proof of possession inside a trust document, never a topic's

ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
