"""Topic names of PROTOCOL.md "Topics": for one device, and the cloud's wildcards over the fleet."""

from __future__ import annotations

from typing import Final, NamedTuple

from protocol.claims import COMMAND, ENTITLEMENTS, FIRMWARE_JOB, TRUST

DEFAULT_PREFIX: Final = "smartplus/v1"
DEVICE_LEAVES: Final = ("events", "replies", "state")  # what a device publishes


def fleet(prefix: str, leaf: str) -> str:
    """``P/devices/+/<leaf>``: what the cloud subscribes to, for every device."""
    return f"{prefix}/devices/+/{leaf}"


class Topics(NamedTuple):
    """The topics of device ``device_id`` under ``prefix``."""

    prefix: str
    device_id: str

    @property
    def trust(self) -> str:
        """``P/trust``: the fleet's trust document (retained)."""
        return f"{self.prefix}/trust"

    def device(self, leaf: str) -> str:
        """``P/devices/D/<leaf>``."""
        return f"{self.prefix}/devices/{self.device_id}/{leaf}"

    @property
    def inbound(self) -> dict[str, str]:
        """The topics the device subscribes to, and the document type each carries."""
        return {
            self.trust: TRUST,
            self.device("entitlements"): ENTITLEMENTS,
            self.device("firmware"): FIRMWARE_JOB,
            self.device("commands"): COMMAND,
        }

    @property
    def entitlements(self) -> str:
        """Where the device's entitlements document is retained."""
        return self.device("entitlements")

    @property
    def firmware(self) -> str:
        """Where the device's firmware job is retained."""
        return self.device("firmware")

    @property
    def commands(self) -> str:
        """Where commands for the device go (not retained)."""
        return self.device("commands")

    @property
    def events(self) -> str:
        """Where events go."""
        return self.device("events")

    @property
    def replies(self) -> str:
        """Where command replies go."""
        return self.device("replies")

    @property
    def state(self) -> str:
        """Where the retained state report (and the last will) goes."""
        return self.device("state")
