"""The entitlements document in force, indexed for the policy (PROTOCOL.md "entitlements")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:  # the models are intake's: opening a store and deciding build none
    from protocol.claims import EntitlementsClaims

KNOWN_SERVICES: Final = frozenset(
    {
        "app",
        "additional_app",
        "pm_app",
        "personnel_app",
        "admin_app",
        "door",
        "third_party_lock",
        "package_room",
        "third_party_camera",
        "booking",
        "elevator_control",
        "smart_parking",
        "dynamic_qr",
        "video_storage",
        "landline",
        "landline_pm",
        "with_indoor_monitor",
        "attendance",
        "sensor_call_alert",
        "integration",
    }
)

_new = tuple.__new__

# DOMAIN.md "Paying": commercial projects created before 2025-06-01 need no payment.
CREDIT_BILLING_FROM: Final = date(2025, 6, 1)


class Service(NamedTuple):
    """One service of the document, with its expiry in epoch seconds."""

    service: str
    subject: str
    expires: float
    plan: str | None

    @property
    def known(self) -> bool:
        """Whether this agent knows the service name (an unknown one is kept and reported)."""
        return self.service in KNOWN_SERVICES


class Project(NamedTuple):
    """The project the device belongs to, as the document in force describes it."""

    id: str
    type: str
    created: date | None
    doors: tuple[str, ...]
    free_apps: int


class Entitlements:
    """What an accepted ``entitlements`` document grants; immutable but for the policy's memo.

    Built from validated claims at intake (:meth:`from_claims`), or from the rows derived from them
    when the agent starts. When the document lists the same service and subject twice, the entry
    that expires last counts.
    """

    __slots__ = ("_by_key", "exp", "iat", "memo", "payment_required", "project", "seq", "services", "settings")

    def __init__(
        self,
        *,
        seq: int,
        iat: float,
        exp: float,
        project: Project,
        services: tuple[Service, ...],
        settings: Mapping[str, Any],
    ) -> None:
        self.seq = seq
        self.iat = iat
        self.exp = exp
        self.project = project
        self.services = services
        self.settings: Mapping[str, Any] = MappingProxyType(dict(settings))
        # An unknown creation date is treated as billed: a missing field must not unlock anything.
        self.payment_required: bool = not (
            project.type == "commercial" and project.created is not None and project.created < CREDIT_BILLING_FROM
        )
        by_key = {(s.service, s.subject): s for s in services}
        if len(by_key) != len(services):  # a service and subject listed twice: the later expiry counts
            by_key = {}
            for service in services:
                key = (service.service, service.subject)
                held = by_key.get(key)
                if held is None or service.expires > held.expires:
                    by_key[key] = service
        self._by_key: Mapping[tuple[str, str], Service] = by_key
        # The policy's memo of decisions with the interval each holds over (agent.entitlements.policy).
        self.memo: dict[Any, Any] = {}

    @classmethod
    def from_claims(cls, claims: EntitlementsClaims) -> Entitlements:
        """The entitlements of a verified document."""
        p = claims.project
        # tuple.__new__: the NamedTuple's own __new__ costs 0.1 µs more per service, in documents of thousands
        services = tuple(
            [_new(Service, (s["service"], s["subject"], s["expires"], s.get("plan"))) for s in claims.services]
        )
        return cls(
            seq=claims.seq,
            iat=float(claims.iat),
            exp=float(claims.exp),
            project=Project(p.id, p.type, p.created, p.doors, p.free_apps),
            services=services,
            settings=claims.settings,
        )

    @property
    def project_type(self) -> str:
        """``community``, ``single_family`` or ``commercial``."""
        return self.project.type

    @property
    def doors(self) -> tuple[str, ...]:
        """The project's doors, the free one first."""
        return self.project.doors

    def service(self, name: str, subject: str) -> Service | None:
        """The entry for ``name`` on ``subject`` that expires last, if the document lists one."""
        return self._by_key.get((name, subject))

    @property
    def effective_services(self) -> tuple[Service, ...]:
        """One entry per service and subject: the one that counts."""
        return tuple(self._by_key.values())

    @property
    def unknown_services(self) -> tuple[str, ...]:
        """Service names this agent does not know, sorted (kept, reported, never fatal)."""
        return tuple(sorted({s.service for s in self.services if not s.known}))
