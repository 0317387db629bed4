"""The site settings that reach the device (DOMAIN.md): one model for the cloud that sets them (the ledger's
``site-set``) and the device that takes them (entitlements ``settings``, the ``set_settings`` command)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from protocol.claims import Model, convert, to_builtins
from protocol.invalid import member


class SiteSettings(Model, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """DOMAIN.md "Site settings that reach the device"; every field optional (a partial update)."""

    timezone: str | None = None
    time_format: Literal["12h", "24h"] | None = None
    date_format: Literal["Y-M-D", "M/D/Y", "D/M/Y"] | None = None
    contact_display_order: Literal["first_last", "last_first"] | None = None
    landline: bool | None = None
    visitor_call_door_log: bool | None = None  # a visitor call that did not open the door makes a door log
    visitor_call_snapshot: bool | None = None  # ... with a snapshot
    remote_maintenance: bool | None = None
    auto_provisioning: bool | None = None
    transmission_type: Literal["tcp", "udp", "tls"] | None = None

    def __post_init__(self) -> None:
        if self.timezone is None:
            return
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise member("timezone", f"{self.timezone!r} is not an IANA time zone") from None


def site_settings(value: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``value`` sets (those given, not null), checked; :class:`~protocol.claims.Invalid` (a
    ``ValueError``) names the first that is wrong."""
    return to_builtins(convert(SiteSettings, value))
