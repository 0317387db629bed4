"""The site settings that reach the device (DOMAIN.md): one model for the cloud that sets them (the ledger's
``site-set``) and the device that takes them (entitlements ``settings``, the ``set_settings`` command)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from protocol.claims import describe_validation_error


class SiteSettings(BaseModel):
    """DOMAIN.md "Site settings that reach the device"; every field optional (a partial update)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", defer_build=True)

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

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value


def describe_settings_error(exc: ValueError) -> str:
    return describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
