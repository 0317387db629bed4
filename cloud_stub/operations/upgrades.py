"""Firmware and its upgrades (DOMAIN.md "Firmware"; seed 002 lines 420-460, 740-760): the firmware list, an
upgrade of a site's devices of one model (at once or at a time, reset after or not), edited or deleted
while no device has started it, each device's status from its own reports, and phased rollouts
(``cloud_stub/waves.py``: waves that pause themselves when too many of a wave fail)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from cloud_stub import waves
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.upgrades import Firmware, Upgrade
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Mac, Request, Result, Text, WireId, given, not_both
from protocol.timefmt import epoch_of, to_rfc3339

Model = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Version = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+){0,5}$")]
Status = Literal["Pending", "Processing", "Executed"]
_PHASED: Final = "docs/cloud.md phased rollouts"


# -- the firmware list -------------------------------------------------------------------------------------
class FirmwareView(Result):
    model: str
    version: str
    size: int
    sha256: str
    log: str
    created: float


def store_image(images: Path, model: str, version: str, image: Path) -> tuple[str, int, str]:
    """Copy an image into the image directory: its file name there, size and SHA-256."""
    images.mkdir(parents=True, exist_ok=True)
    name = f"{model}-{version}.bin"
    shutil.copyfile(image, images / name)
    digest = hashlib.sha256()
    with (images / name).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return name, (images / name).stat().st_size, digest.hexdigest()


class FirmwareEntry(Request):
    model: Model
    version: Version
    log: Text = ""


class AddFirmware(FirmwareEntry):
    """An entry and its image as stored (:func:`store_image`)."""

    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def add_firmware(uow: UnitOfWork, actor: Actor, request: AddFirmware) -> FirmwareView:
    """The operator adds an image (stored by :func:`store_image`) to the firmware list."""
    authority.operator_only(actor, "the firmware list")
    entry = Firmware(request.model, request.version, request.file, request.size, request.sha256, request.log, uow.now)
    if not uow.upgrades.add_firmware(entry):
        raise Refused("already_exists", f"{request.model} {request.version} is in the list already", "seed 002")
    return FirmwareView(**request.model_dump(exclude={"file"}), created=uow.now)


def firmware_list(uow: UnitOfWork, actor: Actor) -> list[FirmwareView]:
    """Version, model, log and created time of each image (seed 002 firmware list)."""
    return [
        FirmwareView(model=f.model, version=f.version, size=f.size, sha256=f.sha256, log=f.log, created=f.created)
        for f in uow.upgrades.firmware_list()
    ]


# -- upgrades ----------------------------------------------------------------------------------------------
class StageUpgrade(Request):
    """An upgrade of a site's devices of one model: all at once, or phased (``wave_size`` or
    ``wave_percent``, not both)."""

    model_config = ConfigDict(json_schema_extra=not_both(given("wave_size"), given("wave_percent")))

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    project: WireId
    model: Model
    version: Version
    devices: Annotated[list[Mac], Field(min_length=1, max_length=10_000)] | None = None
    at: AwareDatetime | None = None
    reset: bool = False
    wave_size: Annotated[int, Field(ge=1, le=100_000)] | None = None
    wave_percent: Annotated[float, Field(gt=0, le=100)] | None = None
    wave_wait: Annotated[float, Field(ge=0, le=30 * 86_400)] = 0.0
    max_failures: Annotated[float, Field(ge=0, lt=1)] = 0.2

    @model_validator(mode="after")
    def _one_size(self) -> StageUpgrade:
        if self.wave_size is not None and self.wave_percent is not None:
            raise ValueError("wave_size or wave_percent, not both")
        return self


def stage(uow: UnitOfWork, actor: Actor, request: StageUpgrade) -> list[str]:
    """Stage an upgrade; the devices it names (every device of the model in the site when none are given).
    Phased: in waves, the first released at once."""
    site = authority.site(uow, actor, request.project)
    if uow.upgrades.firmware(request.model, request.version) is None:
        raise Refused("unknown_firmware", f"no firmware {request.model} {request.version} in the list",
                      "seed 002 firmware list")  # fmt: skip
    in_site = [d.mac for d in uow.sites.devices(site.id) if d.model == request.model]
    chosen = in_site if request.devices is None else list(dict.fromkeys(request.devices))
    strangers = sorted(set(chosen) - set(in_site))
    if strangers or not chosen:
        raise Refused("not_in_site", f"devices {strangers or '(none)'} are not {request.model}s of {site.id}",
                      "seed 002 upgrade")  # fmt: skip
    plan = None
    if request.wave_size is not None or request.wave_percent is not None:
        plan = waves.Plan(request.wave_size, request.wave_percent, request.wave_wait, request.max_failures)
    at = None if request.at is None else epoch_of(request.at)
    upgrade = Upgrade(request.id, site.id, request.model, request.version, chosen, at, request.reset, False, uow.now)
    if not uow.upgrades.add(upgrade, plan):
        raise Refused("already_exists", f"there is an upgrade {request.id} already", "seed 002 upgrade")
    return chosen


class UpgradeView(Result):
    id: str
    project: str
    model: str
    version: str
    at: float | None
    reset: bool
    status: Status
    devices: dict[str, str]


def overall(statuses: list[str]) -> Status:
    """Seed 002 line 751; DOMAIN.md: an upgrade is Pending until a device starts it, Processing while any
    device is at it, Executed once every device has finished (Executed, Failed or Cancelled)."""
    if all(s == "Pending" for s in statuses):
        return "Pending"
    return "Executed" if all(s in waves.FINISHED for s in statuses) else "Processing"


def _view(upgrade: Upgrade, statuses: dict[str, str]) -> UpgradeView:
    return UpgradeView(
        id=upgrade.id, project=upgrade.project, model=upgrade.model, version=upgrade.version, at=upgrade.at,
        reset=upgrade.reset, status=overall(list(statuses.values())), devices=statuses,
    )  # fmt: skip


class UpgradeQuery(Request):
    project: WireId | None = None
    status: Status | None = None


def upgrades(uow: UnitOfWork, actor: Actor, request: UpgradeQuery) -> list[UpgradeView]:
    """The upgrades of the sites the actor acts for (or of one), newest first, each with its status and
    its devices'; only those of ``status`` when given."""
    if request.project is not None:
        projects = [authority.site(uow, actor, request.project, read=True).id]
    else:
        projects = [s.id for s in authority.sites(uow, actor)]
    shown = []
    listed = uow.upgrades.of_sites(projects)
    reported = uow.upgrades.statuses_of([u.id for u in listed])  # one query for them all, not one each
    for upgrade in listed:
        statuses = dict.fromkeys(upgrade.devices, "Pending")
        statuses.update({d: s for d, s in reported.get(upgrade.id, {}).items() if d in statuses})
        found = _view(upgrade, statuses)
        if request.status is None or found.status == request.status:
            shown.append(found)
    return shown


class UpgradeChanges(Request):
    """A new time (``at``, or ``right_now``) or version for an upgrade no device has started."""

    model_config = ConfigDict(
        json_schema_extra=not_both(
            given("at"), {"required": ["right_now"], "properties": {"right_now": {"const": True}}}
        )
    )

    at: AwareDatetime | None = None
    right_now: bool = False
    version: Version | None = None

    @model_validator(mode="after")
    def _one_time(self) -> UpgradeChanges:
        if self.at is not None and self.right_now:
            raise ValueError("at or right_now, not both")
        return self


class EditUpgrade(UpgradeChanges):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def edit(uow: UnitOfWork, actor: Actor, request: EditUpgrade) -> UpgradeView:
    """Seed 002 line 448: edit the update set for the devices pending it (its time; its version, which must
    be in the firmware list for the upgrade's model)."""
    upgrade = authority.upgrade(uow, actor, request.id)
    version = request.version or upgrade.version
    if request.version is not None and uow.upgrades.firmware(upgrade.model, request.version) is None:
        raise Refused("unknown_firmware", f"no firmware {upgrade.model} {request.version} in the list",
                      "seed 002 firmware list")  # fmt: skip
    if uow.upgrades.started(upgrade.id):
        raise Refused("already_started", f"upgrade {upgrade.id} has started on a device", "seed 002 line 448")
    at = None if request.right_now else epoch_of(request.at) if request.at is not None else upgrade.at
    uow.upgrades.edit(upgrade.id, at=at, version=version)
    edited = uow.upgrades.get(upgrade.id)
    assert edited is not None
    return _view(edited, uow.upgrades.statuses(edited))


def delete(uow: UnitOfWork, actor: Actor, ident: str) -> str:
    """Seed 002 line 445: a pending upgrade can be deleted (its devices get a cancel)."""
    upgrade = authority.upgrade(uow, actor, ident)
    if uow.upgrades.started(upgrade.id):
        raise Refused("already_started", f"upgrade {upgrade.id} has started on a device", "seed 002 line 445")
    uow.upgrades.mark_deleted(upgrade.id)
    return f"{upgrade.id} deleted"


def upgrade_view(uow: UnitOfWork, actor: Actor, ident: str) -> UpgradeView:
    """One upgrade of a site the actor acts for, with its status and its devices'."""
    upgrade = authority.upgrade(uow, actor, ident, read=True)
    return _view(upgrade, uow.upgrades.statuses(upgrade))


def statuses(uow: UnitOfWork, actor: Actor, ident: str) -> dict[str, str]:
    """Each device's status: Pending, Processing, Executed, Failed, Cancelled."""
    return uow.upgrades.statuses(authority.upgrade(uow, actor, ident, read=True))


def current_version(uow: UnitOfWork, mac: str) -> str:
    """The firmware version a device last reported on its state topic (PROTOCOL.md), "-" before any."""
    state = uow.reports.state(mac) or {}
    firmware = state.get("firmware")
    version = firmware.get("version") if isinstance(firmware, dict) else None
    return str(version)[:64] if version else "-"


# -- phased rollouts ---------------------------------------------------------------------------------------
class Wave(Result):
    wave: int
    released: bool
    devices: dict[str, str]
    failed: int
    failed_share: float


class PlanView(Result):
    size: int | None
    percent: float | None
    wait: float
    max_failures: float


class RolloutView(Result):
    id: str
    state: str
    reason: str | None
    released: int
    waves: list[Wave]
    plan: PlanView


def _phased(uow: UnitOfWork, upgrade: Upgrade) -> tuple[waves.Plan, waves.Progress]:
    found = uow.upgrades.rollout(upgrade.id)
    if found is None:
        raise Refused("not_phased", f"upgrade {upgrade.id} is not a phased rollout", _PHASED)
    return found


def rollout(uow: UnitOfWork, actor: Actor, ident: str) -> RolloutView:
    """A rollout's state (running, paused and why, cancelled, completed), and each wave's devices."""
    upgrade = authority.upgrade(uow, actor, ident, read=True)
    plan, progress = _phased(uow, upgrade)
    now = uow.upgrades.statuses(upgrade)
    shown = []
    for index, wave in enumerate(waves.waves(upgrade.devices, plan)):
        failed, share = waves.failed_share(wave, now)
        shown.append(Wave(wave=index + 1, released=index < progress.released, devices={m: now[m] for m in wave},
                          failed=failed, failed_share=round(share, 3)))  # fmt: skip
    return RolloutView(id=upgrade.id, state=progress.state, reason=progress.reason, released=progress.released,
                       waves=shown, plan=PlanView(**plan._asdict()))  # fmt: skip


def resume(uow: UnitOfWork, actor: Actor, ident: str) -> RolloutView:
    """An operator of the site resumes a paused rollout (the waves that paused it are excused)."""
    upgrade = authority.upgrade(uow, actor, ident)
    _, progress = _phased(uow, upgrade)
    if progress.state != waves.PAUSED:
        raise Refused("not_paused", f"rollout {ident} is {progress.state}", _PHASED)
    if not uow.upgrades.save_rollout(upgrade.id, progress, waves.resume(progress)):
        raise Refused("not_paused", f"rollout {ident} changed meanwhile", _PHASED)
    return rollout(uow, actor, ident)


def pause(uow: UnitOfWork, actor: Actor, ident: str) -> RolloutView:
    """An operator of the site holds a running rollout: no wave more until it is resumed (the devices of
    released waves go on)."""
    upgrade = authority.upgrade(uow, actor, ident)
    _, progress = _phased(uow, upgrade)
    if progress.state != waves.RUNNING:
        raise Refused("not_running", f"rollout {ident} is {progress.state}", _PHASED)
    held = progress._replace(state=waves.PAUSED, reason=f"paused by {actor.id}")
    if not uow.upgrades.save_rollout(upgrade.id, progress, held):
        raise Refused("not_running", f"rollout {ident} changed meanwhile", _PHASED)
    return rollout(uow, actor, ident)


def cancel(uow: UnitOfWork, actor: Actor, ident: str) -> RolloutView:
    """No wave more; released devices that have not started get a cancel."""
    upgrade = authority.upgrade(uow, actor, ident)
    _, progress = _phased(uow, upgrade)
    if progress.state in (waves.CANCELLED, waves.COMPLETED):
        raise Refused("too_late", f"rollout {ident} is {progress.state}", _PHASED)
    if not uow.upgrades.save_rollout(upgrade.id, progress, progress._replace(state=waves.CANCELLED)):
        raise Refused("too_late", f"rollout {ident} changed meanwhile", _PHASED)
    return rollout(uow, actor, ident)


def advance_rollouts(uow: UnitOfWork, actor: Actor) -> list[tuple[str, waves.Progress]]:
    """One pass over every running rollout (``waves.advance``); the ones that changed, as they are now."""
    authority.operator_only(actor, "advancing rollouts")
    changed = []
    for ident in uow.upgrades.running_rollouts():
        upgrade = uow.upgrades.get(ident)
        found = uow.upgrades.rollout(ident)
        if upgrade is None or found is None:
            continue
        plan, progress = found
        after = waves.advance(progress, waves.waves(upgrade.devices, plan), uow.upgrades.statuses(upgrade), plan,
                              uow.now)  # fmt: skip
        if after != progress and uow.upgrades.save_rollout(ident, progress, after):
            changed.append((ident, after))
    return changed


def jobs(uow: UnitOfWork, image_base: str) -> dict[str, dict[str, Any]]:
    """The firmware-job claims (without iat, exp and seq) each device in a site should hold: its newest
    upgrade whose wave is out, or a cancel (deleted, or a cancelled rollout it had not started)."""
    found: dict[str, dict[str, Any]] = {}
    every = uow.upgrades.newest_first()
    reported = uow.upgrades.statuses_of(u.id for u in every)
    for upgrade in every:
        rollout_ = uow.upgrades.rollout(upgrade.id)
        released: set[str] | None = None
        if rollout_ is not None:
            plan, progress = rollout_
            released = {m for w in waves.waves(upgrade.devices, plan)[: progress.released] for m in w}
        image = uow.upgrades.firmware(upgrade.model, upgrade.version)
        for device in upgrade.devices:
            if device in found or (released is not None and device not in released):
                continue  # a newer upgrade decided, or its wave is not out: whatever it had before stands
            unstarted = reported.get(upgrade.id, {}).get(device, "Pending") == "Pending"
            if (
                upgrade.deleted
                or (rollout_ is not None and rollout_[1].state == waves.CANCELLED and unstarted)
                or image is None
            ):
                found[device] = {"aud": device, "job_id": upgrade.id, "cancel": True}
                continue
            found[device] = {
                "aud": device, "job_id": upgrade.id, "model": upgrade.model, "version": upgrade.version,
                "url": f"{image_base.rstrip('/')}/{image.file}", "size": image.size, "sha256": image.sha256,
                "at": to_rfc3339(upgrade.at) if upgrade.at is not None else None,
                "reset_after_upgrade": upgrade.reset, "allow_downgrade": False, "cancel": False,
            }  # fmt: skip
    return found
