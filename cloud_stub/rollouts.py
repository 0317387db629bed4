"""Firmware and its rollouts (DOMAIN.md "Firmware"; seed 002 lines 420-460 and 740-760).

The firmware list holds (model, version, log, created) and the image, served over HTTP with Range by
``cloud_stub/images.py``. An upgrade names a site, a model and version, devices of that model in the
site, a time (now or later) and whether to reset after upgrading; while no device has started it, it
can be edited or deleted. Each device's status comes from its own ``firmware`` events
(``cloud_stub/ingest.py``): Pending, Processing, Executed, Failed.

An upgrade may be a **phased rollout** (``cloud_stub/waves.py``): its devices go out in waves, a wait
between them, and it pauses itself when too many of a wave fail; an operator resumes or cancels it.
The ``rollouts`` table's SQL is here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from cloud_stub import waves
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
    phased: waves.Plan | None = None,
) -> list[str]:
    """Stage an upgrade; the devices it names (all of ``model`` in the site when none are given).
    ``phased``: in waves (the first released at once)."""
    if ledger.db.execute("SELECT 1 FROM firmware WHERE model = ? AND version = ?", (model, version)).fetchone() is None:
        raise Refused("unknown_firmware", f"no firmware {model} {version} in the list", "seed 002 firmware list")
    in_site = [mac for mac, m, _ in ledger.devices(project) if m == model]
    chosen = in_site if devices is None else devices
    strangers = sorted(set(chosen) - set(in_site))
    if strangers or not chosen:
        raise Refused(
            "not_in_site", f"devices {strangers or '(none)'} are not {model}s of {project}", "seed 002 upgrade"
        )
    if phased is not None:
        _check_plan(phased)
    with ledger.transaction() as db:
        db.execute(
            "INSERT INTO upgrades (id, project, model, version, devices, at, reset, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ident, project, model, version, json.dumps(chosen), at, int(reset), now),
        )
        if phased is not None:
            db.execute(
                "INSERT INTO rollouts (upgrade, wave_size, wave_percent, wait, max_failures, state, released, excused)"
                " VALUES (?, ?, ?, ?, ?, ?, 1, 0)",
                (ident, phased.size, phased.percent, phased.wait, phased.max_failures, waves.RUNNING),
            )
    return chosen


def _check_plan(plan: waves.Plan) -> None:
    if (plan.size is None) == (plan.percent is None):
        raise Refused("bad_waves", "give a wave size or a wave percentage, not both", "docs/cloud.md phased rollouts")
    if plan.size is not None and plan.size < 1:
        raise Refused("bad_waves", "a wave holds at least one device", "docs/cloud.md phased rollouts")
    if plan.percent is not None and not 0 < plan.percent <= 100:
        raise Refused("bad_waves", "a wave's percentage is above 0 and at most 100", "docs/cloud.md phased rollouts")
    if not 0 <= plan.max_failures < 1 or plan.wait < 0:
        raise Refused(
            "bad_waves",
            "max failures is a share from 0 to below 1, the wait at least 0 s",
            "docs/cloud.md phased rollouts",
        )


class Rollout:
    """A phased rollout as the ledger keeps it."""

    def __init__(self, devices: list[str], plan: waves.Plan, progress: waves.Progress) -> None:
        self.devices, self.plan, self.progress = devices, plan, progress
        self.split = waves.waves(devices, plan)
        self._wave = {device: index for index, wave in enumerate(self.split) for device in wave}

    def released(self, device: str) -> bool:
        return self._wave[device] < self.progress.released


def rollout(ledger: Ledger, ident: str) -> Rollout | None:
    """The rollout of upgrade ``ident``, or None for an upgrade that goes to all its devices at once."""
    row = ledger.db.execute(
        "SELECT r.wave_size, r.wave_percent, r.wait, r.max_failures, r.state, r.released, r.excused, r.finished_at,"
        " r.reason, u.devices FROM rollouts r JOIN upgrades u ON u.id = r.upgrade WHERE r.upgrade = ?",
        (ident,),
    ).fetchone()
    if row is None:
        return None
    size, percent, wait, max_failures, state, released, excused, finished_at, reason, devices = row
    return Rollout(
        json.loads(devices),
        waves.Plan(size, percent, wait, max_failures),
        waves.Progress(state, released, excused, finished_at, reason),
    )


def _save(ledger: Ledger, ident: str, progress: waves.Progress) -> None:
    with ledger.transaction() as db:
        db.execute(
            "UPDATE rollouts SET state = ?, released = ?, excused = ?, finished_at = ?, reason = ? WHERE upgrade = ?",
            (progress.state, progress.released, progress.excused, progress.finished_at, progress.reason, ident),
        )


def advance_all(ledger: Ledger, now: float) -> list[tuple[str, waves.Progress]]:
    """One pass over every running rollout (``waves.advance``); the ones that changed, as they are now."""
    changed = []
    for (ident,) in ledger.db.execute(
        "SELECT r.upgrade FROM rollouts r JOIN upgrades u ON u.id = r.upgrade WHERE r.state = ? AND u.deleted = 0",
        (waves.RUNNING,),
    ).fetchall():
        found = rollout(ledger, ident)
        assert found is not None
        after = waves.advance(found.progress, found.split, statuses(ledger, ident), found.plan, now)
        if after != found.progress:
            _save(ledger, ident, after)
            changed.append((ident, after))
    return changed


def resume_rollout(ledger: Ledger, ident: str) -> None:
    """An operator resumes a paused rollout (the waves that paused it are excused)."""
    found = rollout(ledger, ident)
    if found is None:
        raise Refused("not_phased", f"upgrade {ident} is not a phased rollout", "docs/cloud.md phased rollouts")
    if found.progress.state != waves.PAUSED:
        raise Refused("not_paused", f"rollout {ident} is {found.progress.state}", "docs/cloud.md phased rollouts")
    _save(ledger, ident, waves.resume(found.progress))


def cancel_rollout(ledger: Ledger, ident: str) -> None:
    """An operator cancels a rollout: no wave more; released devices that have not started get a cancel."""
    found = rollout(ledger, ident)
    if found is None:
        raise Refused("not_phased", f"upgrade {ident} is not a phased rollout", "docs/cloud.md phased rollouts")
    if found.progress.state in (waves.CANCELLED, waves.COMPLETED):
        raise Refused("too_late", f"rollout {ident} is {found.progress.state}", "docs/cloud.md phased rollouts")
    _save(ledger, ident, found.progress._replace(state=waves.CANCELLED))


def rollout_status(ledger: Ledger, ident: str) -> dict[str, Any]:
    """A rollout's state, and each wave's devices and statuses."""
    project_of(ledger, ident)
    found = rollout(ledger, ident)
    if found is None:
        raise Refused("not_phased", f"upgrade {ident} is not a phased rollout", "docs/cloud.md phased rollouts")
    now_statuses = statuses(ledger, ident)
    shown = []
    for index, wave in enumerate(found.split):
        failed, share = waves.failed_share(wave, now_statuses)
        shown.append({
            "wave": index + 1,
            "released": index < found.progress.released,
            "devices": {mac: now_statuses[mac] for mac in wave},
            "failed": failed,
            "failed_share": round(share, 3),
        })  # fmt: skip
    p = found.progress
    return {"id": ident, "state": p.state, "reason": p.reason, "released": p.released, "waves": shown,
            "plan": found.plan._asdict()}  # fmt: skip


def _unstarted(ledger: Ledger, ident: str, device: str) -> bool:
    row = ledger.db.execute(
        "SELECT status FROM device_upgrades WHERE upgrade = ? AND device = ?", (ident, device)
    ).fetchone()
    return row is None or row[0] == "Pending"


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


def job_for(
    ledger: Ledger, device: str, image_base: str, phased_by_id: dict[str, Rollout | None] | None = None
) -> dict[str, Any] | None:
    """The firmware-job claims (without iat/exp/seq) for ``device``: its latest upgrade, or a cancel.

    ``phased_by_id``: the rollouts read so far in this pass (a pass asks for every device's job: each
    upgrade's rollout is read and split once, not once per device)."""
    known = {} if phased_by_id is None else phased_by_id
    for ident, model, version, devices, at, reset, deleted in ledger.db.execute(
        "SELECT id, model, version, devices, at, reset, deleted FROM upgrades ORDER BY created DESC, rowid DESC"
    ):
        if device not in json.loads(devices):
            continue
        if ident not in known:
            known[ident] = rollout(ledger, ident)
        phased = known[ident]
        if phased is not None and not phased.released(device):
            continue  # its wave is not out (yet): whatever it had before stands
        if deleted or (
            phased is not None and phased.progress.state == waves.CANCELLED and _unstarted(ledger, ident, device)
        ):
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
