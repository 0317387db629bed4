"""Expiry notices (DOMAIN.md "What expiry means on the device", last rule).

The cloud e-mails installers 15 days, PMs and installers 5 days, end users 3 and 1 days before a
service expires. The device computes the same stages from the document it holds, so that the notice
also reaches whoever is at the device (and the cloud hears that the device knows). Sending them, and
sending each once per service and expiry, is the sync layer's job; this module only says which stage
each service is in at a given instant.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from agent.entitlements.index import Entitlements

_DAY: Final = 86_400.0
# Most urgent first: a service is reported at the most urgent stage it has reached.
STAGES: Final = (
    (0.0, "expired"),
    (1 * _DAY, "expiring_1d"),
    (3 * _DAY, "expiring_3d"),
    (5 * _DAY, "expiring_5d"),
    (15 * _DAY, "expiring_15d"),
)


class Notice(NamedTuple):
    """A service at an expiry stage; (``service``, ``subject``, ``expires``, ``kind``) identifies it."""

    kind: str
    service: str
    subject: str
    expires: float

    @property
    def key(self) -> str:
        """A stable identity, so that each notice is sent once per service, expiry and stage."""
        return f"{self.kind}|{self.service}|{self.subject}|{self.expires:.0f}"


def stage(seconds_left: float) -> str | None:
    """The notice stage for a service with ``seconds_left`` to run, or ``None`` if none is due."""
    for bound, kind in STAGES:
        if seconds_left <= bound:
            return kind
    return None


def expiry_notices(entitlements: Entitlements | None, now: float) -> list[Notice]:
    """The notices due at ``now``: one per service, at the most urgent stage it has reached.

    A device that was off through several stages reports only the latest: an "expiring in 15 days"
    notice after the 3-day one would only mislead.
    """
    if entitlements is None:
        return []
    notices = []
    for service in entitlements.effective_services:
        kind = stage(service.expires - now)
        if kind is not None:
            notices.append(Notice(kind, service.service, service.subject, service.expires))
    return sorted(notices, key=lambda n: (n.expires, n.service, n.subject))
