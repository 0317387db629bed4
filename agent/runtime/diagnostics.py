"""``collect_diagnostics``: what support needs from a device without a site visit (a signed command).

The reply carries the ``edge-agent doctor`` checks a running daemon can make without disturbing
itself (config, keys and TLS files, clock, free space; the broker and each reader and module as
the daemon sees them now, instead of probing them again) and its last log lines (``protocol/logs.py``
keeps them; a field named like a secret is redacted before any line is written, and the agent never
logs keys, tokens or PINs in the first place). Bounded: at most :data:`MAX_LINES` lines, each cut at
:data:`MAX_LINE` characters, and the oldest dropped until the whole fits in :data:`MAX_BYTES`.

It runs inside the command's transaction (its reply commits with the command's id): nothing here may
touch the database or wait on the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from agent.config import Config
from agent.runtime import doctor
from protocol import logs

MAX_LINES: Final = logs.RECENT
MAX_LINE: Final = 1000
MAX_BYTES: Final = 48 * 1024


def _hardware(drivers: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(name, online) of each module and reader in the drivers' status (``LocalSide.status``)."""
    found: list[tuple[str, bool]] = []
    for name, source in sorted(drivers.items()):
        if not isinstance(source, Mapping):
            continue
        if "online" in source:
            found.append((name, bool(source["online"])))
        for reader, state in sorted(source.get("readers", {}).items()):
            found.append((reader, bool(state.get("online"))))
    return found


def collect(
    config: Config, trusted_floor: float | None, connected: bool, drivers: Mapping[str, Any], lines: int
) -> dict[str, Any]:
    """The diagnostics of this daemon now: the checks, and up to ``lines`` recent log lines."""
    findings = [doctor.Finding("config", "ok", f"device {config.device_id} ({config.model})")]
    findings.append(doctor.trust_roots(config))
    findings += doctor.tls_files(config)  # not doctor.certificates: the daemon stays without cryptography
    findings += doctor.client_key(config)
    findings.append(doctor.clock(trusted_floor))
    findings += doctor.disk(config, database=False)
    findings.append(
        doctor.Finding("broker", "ok", "connected") if connected else doctor.Finding("broker", "fail", "not connected")
    )
    for name, online in _hardware(drivers):
        findings.append(
            doctor.Finding(f"hardware {name}", "ok" if online else "fail", "online" if online else "offline")
        )
    recent = [line[:MAX_LINE] for line in logs.recent(min(lines, MAX_LINES))]
    report: dict[str, Any] = {"doctor": [f.as_json() for f in findings], "log": recent, "log_dropped": 0}
    while recent and len(json.dumps(report)) > MAX_BYTES:
        drop = max(1, len(recent) // 8)
        del recent[:drop]
        report["log_dropped"] += drop
    return report
