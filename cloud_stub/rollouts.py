"""Firmware and its rollouts (DOMAIN.md "Firmware"; seed 002 lines 420-460 and 740-760).

The firmware list holds (model, version, log, created) and the image, served over HTTP with Range by
``cloud_stub/images.py``. An upgrade names a site, a model and version, devices of that model in the
site, a time (now or later) and whether to reset after upgrading; while no device has started it, it
can be edited or deleted. Each device's status comes from its own ``firmware`` events
(``cloud_stub/ingest.py``): Pending, Processing, Executed, Failed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from cloud_stub.ledger import Ledger
from cloud_stub.rules import Refused
from protocol.timefmt import to_rfc3339


def add_firmware(
    ledger: Ledger, images: Path, model: str, version: str, image: Path, log: str, now: float
) -> dict[str, Any]:
    from protocol.version import parse

    try:
        parse(version)
    except ValueError as exc:
        raise Refused("bad_version", str(exc), "seed 002 firmware list") from None
    images.mkdir(parents=True, exist_ok=True)
    name = f"{model}-{version}.bin"
    shutil.copyfile(image, images / name)
    digest = hashlib.sha256((images / name).read_bytes()).hexdigest()
    size = (images / name).stat().st_size
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO firmware (model, version, file, size, sha256, log, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (model, version, name, size, digest, log, now),
        )
    return {"model": model, "version": version, "size": size, "sha256": digest}


def firmware_list(ledger: Ledger) -> list[dict[str, Any]]:
    rows = ledger.db.execute("SELECT model, version, size, sha256, log, created FROM firmware ORDER BY created")
    keys = ("model", "version", "size", "sha256", "log", "created")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def add_upgrade(
    ledger: Ledger,
    ident: str,
    project: str,
    model: str,
    version: str,
    now: float,
    *,
    devices: list[str] | None = None,
    at: float | None = None,
    reset: bool = False,
) -> list[str]:
    """Stage an upgrade; the devices it names (all of ``model`` in the site when none are given)."""
    if ledger.db.execute("SELECT 1 FROM firmware WHERE model = ? AND version = ?", (model, version)).fetchone() is None:
        raise Refused("unknown_firmware", f"no firmware {model} {version} in the list", "seed 002 firmware list")
    in_site = [mac for mac, m, _ in ledger.devices(project) if m == model]
    chosen = in_site if devices is None else devices
    strangers = sorted(set(chosen) - set(in_site))
    if strangers or not chosen:
        raise Refused(
            "not_in_site", f"devices {strangers or '(none)'} are not {model}s of {project}", "seed 002 upgrade"
        )
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO upgrades (id, project, model, version, devices, at, reset, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ident, project, model, version, json.dumps(chosen), at, int(reset), now),
        )
    return chosen


def _started(ledger: Ledger, ident: str) -> bool:
    row = ledger.db.execute(
        "SELECT 1 FROM device_upgrades WHERE upgrade = ? AND status != 'Pending'", (ident,)
    ).fetchone()
    return row is not None


def project_of(ledger: Ledger, ident: str) -> str:
    """The site of an upgrade (whose authority editing or deleting it needs)."""
    row = ledger.db.execute("SELECT project FROM upgrades WHERE id = ? AND deleted = 0", (ident,)).fetchone()
    if row is None:
        raise Refused("not_found", f"no upgrade {ident}", "seed 002 line 445")
    return str(row[0])


def overall(statuses: list[str]) -> str:
    """Seed 002 line 751; DOMAIN.md: an upgrade is Pending until a device starts it, Processing while any
    device is at it, Executed once every device has finished (Executed or Failed)."""
    if all(s == "Pending" for s in statuses):
        return "Pending"
    return "Executed" if all(s in ("Executed", "Failed") for s in statuses) else "Processing"


def upgrades(ledger: Ledger, projects: list[str], status: str | None = None) -> list[dict[str, Any]]:
    """The upgrades of ``projects``, newest first, each with its status and its devices'; only those of
    ``status`` (Pending, Processing, Executed) when given."""
    shown = []
    for ident, project, model, version, at, reset in ledger.db.execute(
        "SELECT id, project, model, version, at, reset FROM upgrades WHERE deleted = 0"
        " ORDER BY created DESC, rowid DESC"
    ).fetchall():
        if project not in projects:
            continue
        devices = statuses(ledger, ident)
        state = overall(list(devices.values()))
        if status is None or state == status:
            shown.append({"id": ident, "project": project, "model": model, "version": version, "at": at,
                          "reset": bool(reset), "status": state, "devices": devices})  # fmt: skip
    return shown


def edit_upgrade(ledger: Ledger, ident: str, *, at: float | None = None, version: str | None = None) -> None:
    """Seed 002 line 448: edit the update set for the devices pending the update (its time; its version,
    which must be in the firmware list for the upgrade's model)."""
    project_of(ledger, ident)
    if version is not None:
        (model,) = ledger.db.execute("SELECT model FROM upgrades WHERE id = ?", (ident,)).fetchone()
        known = ledger.db.execute("SELECT 1 FROM firmware WHERE model = ? AND version = ?", (model, version))
        if known.fetchone() is None:
            raise Refused("unknown_firmware", f"no firmware {model} {version} in the list", "seed 002 firmware list")
    if _started(ledger, ident):
        raise Refused("already_started", f"upgrade {ident} has started on a device", "seed 002 line 448")
    with ledger.transaction() as db:
        if version is not None:
            db.execute("UPDATE upgrades SET version = ? WHERE id = ?", (version, ident))
        db.execute("UPDATE upgrades SET at = ? WHERE id = ?", (at, ident))


def delete_upgrade(ledger: Ledger, ident: str) -> None:
    """Seed 002 line 445: a pending upgrade can be deleted (the devices get a cancel); an unknown one is refused."""
    if ledger.db.execute("SELECT 1 FROM upgrades WHERE id = ? AND deleted = 0", (ident,)).fetchone() is None:
        raise Refused("not_found", f"no upgrade {ident} to delete", "seed 002 line 445")
    if _started(ledger, ident):
        raise Refused("already_started", f"upgrade {ident} has started on a device", "seed 002 line 445")
    with ledger.transaction() as db:
        db.execute("UPDATE upgrades SET deleted = 1 WHERE id = ?", (ident,))


def job_for(ledger: Ledger, device: str, image_base: str) -> dict[str, Any] | None:
    """The firmware-job claims (without iat/exp/seq) for ``device``: its latest upgrade, or a cancel."""
    for ident, model, version, devices, at, reset, deleted in ledger.db.execute(
        "SELECT id, model, version, devices, at, reset, deleted FROM upgrades ORDER BY created DESC, rowid DESC"
    ):
        if device not in json.loads(devices):
            continue
        if deleted:
            return {"aud": device, "job_id": ident, "cancel": True}
        size, digest, file = ledger.db.execute(
            "SELECT size, sha256, file FROM firmware WHERE model = ? AND version = ?", (model, version)
        ).fetchone()
        return {
            "aud": device,
            "job_id": ident,
            "model": model,
            "version": version,
            "url": f"{image_base.rstrip('/')}/{file}",
            "size": size,
            "sha256": digest,
            "at": to_rfc3339(at) if at is not None else None,
            "reset_after_upgrade": bool(reset),
            "allow_downgrade": False,
            "cancel": False,
        }
    return None


def statuses(ledger: Ledger, ident: str) -> dict[str, str]:
    """Each device's status for an upgrade (Pending until it reports)."""
    row = ledger.db.execute("SELECT devices FROM upgrades WHERE id = ?", (ident,)).fetchone()
    if row is None:
        raise Refused("not_found", f"no upgrade {ident}", "ledger")
    shown = dict.fromkeys(json.loads(row[0]), "Pending")
    for mac, status in ledger.db.execute("SELECT device, status FROM device_upgrades WHERE upgrade = ?", (ident,)):
        shown[mac] = status
    return shown
