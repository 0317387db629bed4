"""The ledger turned into signed ``entitlements`` documents, one per device (PROTOCOL.md).

:func:`document_for` builds the claims of a device's project from the ledger and signs them when they
differ from what was last issued to it (``seq`` per device, kept in the ledger); ``exp`` bounds how
long the device may rely on the document offline (default 30 days), and :func:`due` says when a
device needs a fresh one well before that (at half the bound).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from cloud_stub.issuer import ISSUER
from cloud_stub.ledger import Ledger
from cloud_stub.rules import DAY, Refused
from protocol import jws
from protocol.timefmt import to_rfc3339

OFFLINE_DAYS: Final = 30.0


def claims_for(ledger: Ledger, device: str) -> dict[str, Any]:
    """What the ledger grants ``device``'s project, without the time-dependent claims."""
    row = ledger.db.execute("SELECT project FROM devices WHERE mac = ?", (device,)).fetchone()
    if row is None or row[0] is None:
        raise Refused("no_project", f"device {device} is in no project", "ledger")
    p = ledger.project(row[0])
    services = [
        {"service": s["service"], "subject": s["subject"], "expires": to_rfc3339(s["expires"])}
        | ({"plan": s["plan"]} if s["plan"] else {})
        for s in ledger.services(p["id"])
        if s["expires"] is not None
    ]
    return {
        "project": {
            "id": p["id"],
            "type": p["type"],
            "created": p["created"].isoformat(),
            "timezone": p["timezone"],
            "doors": p["doors"],
            "free_apps": p["free_apps"],
        },
        "services": services,
        "settings": p["settings"],
    }


def next_seq(
    ledger: Ledger, key: str, digest: str, now: float, *, stale_after: float | None = None, force: bool = False
) -> int | None:
    """The next ``seq`` of what is issued under ``key`` (a device, ``trust:*``, ``fw:<device>``) and
    record it, if ``digest`` differs from what was last issued, ``force``, or the last issue is older
    than ``stale_after`` seconds; else None (nothing to issue)."""
    last = ledger.db.execute("SELECT seq, digest, issued_at FROM issued WHERE device = ?", (key,)).fetchone()
    stale = last is not None and stale_after is not None and now - last[2] > stale_after
    if last is not None and last[1] == digest and not force and not stale:
        return None
    seq = int(last[0] if last else 0) + 1
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO issued (device, seq, digest, issued_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device) DO UPDATE SET seq = excluded.seq, digest = excluded.digest,"
            " issued_at = excluded.issued_at",
            (key, seq, digest, now),
        )
    return seq


@dataclass(frozen=True)
class Unsent:
    """A signed document issued and not yet acknowledged by the broker."""

    key: str
    seq: int
    topic: str
    token: str


def hold(ledger: Ledger, key: str, topic: str, token: str) -> None:
    """Keep ``token``, just issued under ``key``, until :func:`sent` says the broker has it: a broker
    lost mid-pass (or the cloud stopped) must not leave a device without its document until the next
    change (persist, then act)."""
    with ledger.transaction() as db:
        db.execute("UPDATE issued SET topic = ?, token = ? WHERE device = ?", (topic, token, key))


def unsent(ledger: Ledger) -> list[Unsent]:
    """Every document issued and not yet acknowledged, trust documents first."""
    rows = ledger.db.execute(
        "SELECT device, seq, topic, token FROM issued WHERE token IS NOT NULL ORDER BY device NOT LIKE 'trust:%', rowid"
    ).fetchall()
    return [Unsent(*row) for row in rows]


def sent(ledger: Ledger, documents: list[Unsent]) -> None:
    """The broker acknowledged ``documents`` (unless something newer was issued under the key since)."""
    with ledger.transaction() as db:
        db.executemany(
            "UPDATE issued SET topic = NULL, token = NULL WHERE device = ? AND seq = ?",
            [(d.key, d.seq) for d in documents],
        )


def document_for(
    ledger: Ledger, device: str, signing: Any, now: float, *, offline_days: float = OFFLINE_DAYS, force: bool = False
) -> str | None:
    """A newly signed document for ``device`` if what it is granted changed (or ``force``), else None."""
    body = claims_for(ledger, device)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    # re-issued well before exp: at half the offline bound
    seq = next_seq(ledger, device, digest, now, stale_after=offline_days * DAY / 2, force=force)
    if seq is None:
        return None
    claims = {"iss": ISSUER, "aud": device, "iat": int(now), "exp": int(now + offline_days * DAY), "seq": seq, **body}
    return jws.sign(signing, "entitlements", claims)
