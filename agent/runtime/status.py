"""One view of a device's state, gathered in one place.

``edge-agent status`` (the CLI, beside or without a daemon), the control socket's ``status``, the
Prometheus metrics and the retained state report on MQTT are each a projection of one :class:`View`:
what they say cannot drift apart, and a new figure is added once. :func:`gather` builds it; a running
daemon adds what only it knows (:class:`Running`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from agent.ports import Described
from agent.sync.state import StateReport


class Running(NamedTuple):
    """What only a running daemon knows."""

    depth: int  # outbox rows not yet acknowledged
    held: int  # of which waiting behind a closed gate
    evicted: dict[str, int]  # evicted since the outbox was made, by type
    reserve: dict[str, Any] | None  # the data directory's ballast (agent/store/reserve.py)
    connected: bool
    connections: int  # successful MQTT connections since start
    failures: int  # connections lost or refused since start
    dropped: int  # inbound messages dropped in floods, beyond the receive queue
    failed: int  # inbound messages whose handling tripped a defect: reported and dropped
    refused: int  # documents refused (reported one by one or as counts)
    drivers: dict[str, Any]
    inventory: dict[str, Any] | None = None  # agent/runtime/inventory.py, once collected


@dataclass(frozen=True)
class View:
    """The device's state at one instant; each consumer takes its projection."""

    device: dict[str, Any]  # Device.status(): identity, mode, the document in force, services, trust, time
    firmware: dict[str, Any]  # firmware.engine.firmware_status(): what runs, and the latest job
    seqs: dict[str, int]  # the seq of each document in force
    running: Running | None = None
    # when the entitlements document and each held service expire (epoch seconds): for the metrics
    expiry: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """``edge-agent status --json`` and the control socket's ``status`` (docs/control.md)."""
        out = {**self.device, "firmware": self.firmware, "firmware_version": self.firmware["version"]}
        r = self.running
        if r is not None:
            out["outbox"] = {"depth": r.depth, "held": r.held, "evicted": dict(r.evicted)}
            out["reserve"] = r.reserve
            out["connected"] = r.connected
            out["inbound"] = {"dropped": r.dropped, "failed": r.failed, "refused": r.refused}
            out["drivers"] = r.drivers
        return out

    def state_report(self) -> StateReport:
        """The retained state report (PROTOCOL.md "State"); needs a running daemon."""
        assert self.running is not None
        document = self.device["document"]
        return StateReport(
            device_id=self.device["device_id"],
            model=self.device["model"],
            firmware_version=self.firmware["version"],
            slot=self.firmware["slot"],
            seq=document["seq"] if document else None,
            exp=document["exp"] if document else None,
            mode=self.device["mode"],
            depth=self.running.depth,
            held=self.running.held,
            evicted=sum(self.running.evicted.values()),
            inventory=self.running.inventory,
        )

    def sample(self) -> dict[str, Any]:
        """What the Prometheus gauges show (agent/runtime/metrics.py); needs a running daemon."""
        r = self.running
        assert r is not None
        job = self.firmware["job"]
        return {
            "expiry": self.expiry or {"document": {}, "services": []},
            "depth": r.depth,
            "held": r.held,
            "evicted": dict(r.evicted),
            "connections": r.connections,
            "failures": r.failures,
            "connected": r.connected,
            "seq": dict(self.seqs),
            "firmware_state": job["state"] if job else None,
        }


def gather(device: Described, firmware: dict[str, Any], running: Running | None = None) -> View:
    """The view of ``device`` with its firmware status, and what a running daemon adds."""
    return View(
        device=device.status(),
        firmware=firmware,
        seqs={typ: doc.seq for typ, doc in device.documents.items()},
        running=running,
        expiry=_expiry(device),
    )


def _expiry(device: Described) -> dict[str, Any]:
    ents = device.entitlements
    if ents is None:
        return {"document": {}, "services": []}
    return {
        "document": {"entitlements": ents.exp},
        "services": [(s.service, s.subject, s.expires) for s in ents.effective_services],
    }
