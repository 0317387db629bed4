"""Firmware and its upgrades (DOMAIN.md "Firmware"; seed 002 lines 420-460, 740-760): the firmware list,
upgrades of a site's devices, each device's status from its own reports, and phased rollouts' progress
(``cloud_stub/waves.py`` decides). The ``firmware``, ``upgrades``, ``device_upgrades`` and ``rollouts``
tables' SQL is here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from cloud_stub import waves
from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

firmware = sa.Table(
    "firmware",
    metadata,
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("file", sa.Text, nullable=False),  # the image, served over HTTP with Range
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("log", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

upgrades = sa.Table(
    "upgrades",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the job_id the devices see
    sa.Column("project", sa.Text, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("devices", sa.Text, nullable=False),  # JSON list of MACs
    sa.Column("at", sa.Float),  # NULL: right now
    sa.Column("reset", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # the order staged: the newest upgrade wins
    sa.Index("ix_upgrades_project", "project"),
)

device_upgrades = sa.Table(
    "device_upgrades",
    metadata,
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("upgrade", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),  # Pending, Processing, Executed, Failed, Cancelled
    sa.Column("last_kind", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_device_upgrades_upgrade", "upgrade"),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("upgrade", sa.Text, sa.ForeignKey("upgrades.id"), primary_key=True),
    sa.Column("wave_size", sa.Integer),  # devices a wave, or
    sa.Column("wave_percent", sa.Float),  # a share of the upgrade's devices a wave
    sa.Column("wait", sa.Float, nullable=False),  # seconds between a wave finishing and the next released
    sa.Column("max_failures", sa.Float, nullable=False),  # share of a wave failed that pauses it (0-1)
    sa.Column("state", sa.Text, nullable=False),  # running, paused, cancelled, completed
    sa.Column("released", sa.Integer, nullable=False),  # waves released so far
    sa.Column("excused", sa.Integer, nullable=False),  # waves resumed past
    sa.Column("finished_at", sa.Float),  # when the last released wave finished
    sa.Column("reason", sa.Text),  # why it paused
)


class Firmware(NamedTuple):
    model: str
    version: str
    file: str
    size: int
    sha256: str
    log: str
    created: float


class Upgrade(NamedTuple):
    id: str
    project: str
    model: str
    version: str
    devices: list[str]
    at: float | None
    reset: bool
    deleted: bool
    created: float


_FIRMWARE = sa.select(
    firmware.c.model, firmware.c.version, firmware.c.file, firmware.c.size, firmware.c.sha256, firmware.c.log,
    firmware.c.created,
)  # fmt: skip
_UPGRADE = sa.select(
    upgrades.c.id, upgrades.c.project, upgrades.c.model, upgrades.c.version, upgrades.c.devices, upgrades.c.at,
    upgrades.c.reset, upgrades.c.deleted, upgrades.c.created,
)  # fmt: skip
_NEWEST_FIRST = (upgrades.c.created.desc(), upgrades.c.position.desc())


def _upgrade(row: Sequence[Any]) -> Upgrade:
    ident, project, model, version, devices, at, reset, deleted, created = row
    return Upgrade(ident, project, model, version, json.loads(devices), at, bool(reset), bool(deleted), created)


class Upgrades:
    """The firmware list, upgrades and rollouts of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    # -- the firmware list ------------------------------------------------------------------------------
    def add_firmware(self, entry: Firmware) -> bool:
        result = self.tx.execute(
            self.tx.insert_ignore(firmware).values(
                model=entry.model, version=entry.version, file=entry.file, size=entry.size, sha256=entry.sha256,
                log=entry.log, created=entry.created,
            )
        )  # fmt: skip
        return result.rowcount == 1

    def firmware(self, model: str, version: str) -> Firmware | None:
        row = self.tx.first(_FIRMWARE.where(firmware.c.model == model, firmware.c.version == version))
        return None if row is None else Firmware(*row)

    def firmware_list(self) -> list[Firmware]:
        return [Firmware(*r) for r in self.tx.all(_FIRMWARE.order_by(firmware.c.created, firmware.c.model))]

    # -- upgrades ---------------------------------------------------------------------------------------
    def add(self, upgrade: Upgrade, plan: waves.Plan | None) -> bool:
        """Stage an upgrade (and its rollout, the first wave released); False when the id is taken."""
        position = sa.select(sa.func.coalesce(sa.func.max(upgrades.c.position), 0) + 1).scalar_subquery()
        result = self.tx.execute(
            self.tx.insert_ignore(upgrades).values(
                id=upgrade.id, project=upgrade.project, model=upgrade.model, version=upgrade.version,
                devices=json.dumps(upgrade.devices), at=upgrade.at, reset=int(upgrade.reset), created=upgrade.created,
                position=position,
            )
        )  # fmt: skip
        if result.rowcount != 1:
            return False
        if plan is not None:
            self.tx.execute(
                sa.insert(rollouts).values(
                    upgrade=upgrade.id, wave_size=plan.size, wave_percent=plan.percent, wait=plan.wait,
                    max_failures=plan.max_failures, state=waves.RUNNING, released=1, excused=0,
                )
            )  # fmt: skip
        return True

    def get(self, ident: str, *, deleted: bool = False) -> Upgrade | None:
        query = _UPGRADE.where(upgrades.c.id == ident)
        if not deleted:
            query = query.where(upgrades.c.deleted == 0)
        row = self.tx.first(query)
        return None if row is None else _upgrade(row)

    def of_sites(self, projects: Iterable[str]) -> list[Upgrade]:
        """The upgrades (not deleted) of these sites, newest first."""
        rows = self.tx.all(
            _UPGRADE.where(upgrades.c.deleted == 0, self.tx.among(upgrades.c.project, list(projects))).order_by(
                *_NEWEST_FIRST
            )
        )
        return [_upgrade(r) for r in rows]

    def newest_first(self) -> list[Upgrade]:
        """Every upgrade, deleted ones too (their devices get a cancel), newest first."""
        return [_upgrade(r) for r in self.tx.all(_UPGRADE.order_by(*_NEWEST_FIRST))]

    def edit(self, ident: str, *, at: float | None, version: str) -> None:
        self.tx.execute(sa.update(upgrades).where(upgrades.c.id == ident).values(at=at, version=version))

    def mark_deleted(self, ident: str) -> None:
        self.tx.execute(sa.update(upgrades).where(upgrades.c.id == ident).values(deleted=1))

    def remove_site(self, project: str) -> int:
        """Every upgrade of a deleted site, with its statuses and rollout; how many upgrades."""
        ids = sa.select(upgrades.c.id).where(upgrades.c.project == project).scalar_subquery()
        self.tx.execute(sa.delete(device_upgrades).where(device_upgrades.c.upgrade.in_(ids)))
        self.tx.execute(sa.delete(rollouts).where(rollouts.c.upgrade.in_(ids)))
        return int(self.tx.execute(sa.delete(upgrades).where(upgrades.c.project == project)).rowcount)

    # -- each device's status ---------------------------------------------------------------------------
    def statuses(self, upgrade: Upgrade) -> dict[str, str]:
        """Each device's status (Pending until it reports), in the upgrade's order."""
        shown = dict.fromkeys(upgrade.devices, "Pending")
        rows = self.tx.all(
            sa.select(device_upgrades.c.device, device_upgrades.c.status).where(device_upgrades.c.upgrade == upgrade.id)
        )
        shown.update({device: status for device, status in rows if device in shown})
        return shown

    def statuses_of(self, upgrades_: Iterable[str]) -> dict[str, dict[str, str]]:
        """The reported statuses of several upgrades at once: upgrade -> device -> status."""
        found: dict[str, dict[str, str]] = {}
        rows = self.tx.all(
            sa.select(device_upgrades.c.upgrade, device_upgrades.c.device, device_upgrades.c.status).where(
                self.tx.among(device_upgrades.c.upgrade, list(upgrades_))
            )
        )
        for upgrade, device, status in rows:
            found.setdefault(upgrade, {})[device] = status
        return found

    def report(self, device: str, upgrade: str, status: str, kind: str, now: float) -> None:
        self.tx.execute(
            self.tx.excluded_upsert(device_upgrades, ["device", "upgrade"], ["status", "last_kind", "at"]).values(
                device=device, upgrade=upgrade, status=status, last_kind=kind, at=now
            )
        )

    def started(self, ident: str) -> bool:
        row = self.tx.first(
            sa.select(1).where(device_upgrades.c.upgrade == ident, device_upgrades.c.status != "Pending")
        )
        return row is not None

    def installing_in(self, project: str) -> bool:
        """Whether a device of the site is installing one of its upgrades."""
        row = self.tx.first(
            sa.select(1)
            .select_from(device_upgrades.join(upgrades, upgrades.c.id == device_upgrades.c.upgrade))
            .where(upgrades.c.project == project, device_upgrades.c.status == "Processing")
        )
        return row is not None

    # -- phased rollouts --------------------------------------------------------------------------------
    def rollout(self, ident: str) -> tuple[waves.Plan, waves.Progress] | None:
        row = self.tx.first(
            sa.select(
                rollouts.c.wave_size, rollouts.c.wave_percent, rollouts.c.wait, rollouts.c.max_failures,
                rollouts.c.state, rollouts.c.released, rollouts.c.excused, rollouts.c.finished_at, rollouts.c.reason,
            ).where(rollouts.c.upgrade == ident)
        )  # fmt: skip
        if row is None:
            return None
        size, percent, wait, max_failures, state, released, excused, finished_at, reason = row
        return waves.Plan(size, percent, wait, max_failures), waves.Progress(
            state, released, excused, finished_at, reason
        )

    def save_rollout(self, ident: str, before: waves.Progress, after: waves.Progress) -> bool:
        """Move a rollout from ``before`` to ``after``, unless another process moved it first."""
        result = self.tx.execute(
            sa.update(rollouts)
            .where(rollouts.c.upgrade == ident, rollouts.c.state == before.state,
                   rollouts.c.released == before.released, rollouts.c.excused == before.excused)
            .values(state=after.state, released=after.released, excused=after.excused, finished_at=after.finished_at,
                    reason=after.reason)
        )  # fmt: skip
        return result.rowcount == 1

    def running_rollouts(self) -> list[str]:
        rows = self.tx.all(
            sa.select(rollouts.c.upgrade)
            .select_from(rollouts.join(upgrades, upgrades.c.id == rollouts.c.upgrade))
            .where(rollouts.c.state == waves.RUNNING, upgrades.c.deleted == 0)
            .order_by(rollouts.c.upgrade)
        )
        return [r[0] for r in rows]
