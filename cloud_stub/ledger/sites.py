"""Sites and what is in them: projects with their settings, apartments with their own service switches
(seed 003), app accounts, and devices (the MAC library, a device's site and apartment). The
``projects``, ``apartments``, ``app_accounts`` and ``devices`` tables' SQL is here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from cloud_stub.errors import Refused
from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),  # community, single_family, commercial
    sa.Column("installer", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("pm", sa.Text, sa.ForeignKey("accounts.id")),
    sa.Column("created", sa.Text, nullable=False),  # ISO date
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("free_apps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("doors", sa.Text, nullable=False, server_default="[]"),  # JSON list; the first is free
    sa.Column("settings", sa.Text, nullable=False, server_default="{}"),  # JSON: what reaches the devices
    sa.Column("pm_notices", sa.Integer, nullable=False, server_default="1"),  # Send Expiration Email to PM
    sa.Column("pay_by_pm", sa.Text, nullable=False, server_default="none"),  # seed 002 row 8
    sa.Column("renew_notices", sa.Integer, nullable=False, server_default="1"),  # Send Renew Email To PM
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("integration", sa.Text),  # the third-party PMS, set by its integration
    sa.Column("address", sa.Text, nullable=False, server_default=""),  # seed 002 row 3: the indoor monitors' weather
    sa.Index("ix_projects_installer", "installer"),
    sa.Index("ix_projects_pm", "pm"),
)

apartments = sa.Table(
    "apartments",
    metadata,
    sa.Column("project", sa.Text, sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    # per apartment (seed 003): NULL follows the community's switch
    sa.Column("with_indoor_monitor", sa.Integer),
    sa.Column("landline", sa.Integer),
    sa.Column("video_storage", sa.Integer),
)

app_accounts = sa.Table(
    "app_accounts",
    metadata,
    sa.Column("project", sa.Text, sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("apartment", sa.Text),  # residents: their apartment
    sa.Column("role", sa.Text, nullable=False),  # master, family, pm, personnel, admin
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # the order added: family beyond the free ones pay
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("mac", sa.Text, primary_key=True),  # the MAC library
    sa.Column("distributor", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("project", sa.Text, sa.ForeignKey("projects.id")),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("apartment", sa.Text),
    sa.Column("name", sa.Text),
    sa.Index("ix_devices_project", "project"),
    sa.Index("ix_devices_distributor", "distributor"),
)

APARTMENT_SWITCHES: Final = ("with_indoor_monitor", "landline", "video_storage")  # rules.APARTMENT_SERVICES


class Site(NamedTuple):
    """A site (project) as the rules need it."""

    id: str
    type: str
    installer: str
    pm: str | None
    created: date
    timezone: str
    free_apps: int
    doors: list[str]
    settings: dict[str, Any]
    pm_notices: bool
    pay_by_pm: str
    renew_notices: bool
    name: str
    integration: str | None
    address: str = ""


class Apartment(NamedTuple):
    id: str
    name: str
    switches: dict[str, bool | None]  # its own switch, or None: the community's


class AppAccount(NamedTuple):
    id: str
    role: str
    apartment: str | None
    name: str


class Device(NamedTuple):
    mac: str
    distributor: str
    project: str | None
    model: str
    apartment: str | None
    name: str | None


_SITE = sa.select(
    projects.c.id, projects.c.type, projects.c.installer, projects.c.pm, projects.c.created, projects.c.timezone,
    projects.c.free_apps, projects.c.doors, projects.c.settings, projects.c.pm_notices, projects.c.pay_by_pm,
    projects.c.renew_notices, projects.c.name, projects.c.integration, projects.c.address,
)  # fmt: skip
_DEVICE = sa.select(
    devices.c.mac, devices.c.distributor, devices.c.project, devices.c.model, devices.c.apartment, devices.c.name
)


_SITE_BY_ID = _SITE.where(projects.c.id == sa.bindparam("ident"))  # built once: asked on every request
_DEVICE_BY_MAC = _DEVICE.where(devices.c.mac == sa.bindparam("mac"))
_APP_ACCOUNTS = (  # read raw (Transaction.rows): a payment prices from every account of the site
    sa.select(app_accounts.c.id, app_accounts.c.role, app_accounts.c.apartment, app_accounts.c.name)
    .where(app_accounts.c.project == sa.bindparam("project"))
    .order_by(app_accounts.c.position, app_accounts.c.id)
)


def _site(row: Sequence[Any]) -> Site:
    (ident, kind, installer, pm, created, zone, free, doors, settings, pm_notices, pay_by_pm, renew, name,
     integration, address) = row  # fmt: skip
    return Site(
        ident, kind, installer, pm, date.fromisoformat(created), zone, int(free), json.loads(doors),
        json.loads(settings), bool(pm_notices), pay_by_pm, bool(renew), name, integration, address,
    )  # fmt: skip


class Sites:
    """The sites of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    # -- sites ------------------------------------------------------------------------------------------
    def get(self, ident: str) -> Site | None:
        row = self.tx.first(_SITE_BY_ID, {"ident": ident})
        return None if row is None else _site(row)

    def require(self, ident: str) -> Site:
        found = self.get(ident)
        if found is None:
            raise Refused("not_found", f"no site {ident}", "ledger")
        return found

    def add(self, site: Site) -> bool:
        """A new site; False when the id is taken."""
        result = self.tx.execute(
            self.tx.insert_ignore(projects).values(
                id=site.id, type=site.type, installer=site.installer, pm=site.pm, created=site.created.isoformat(),
                timezone=site.timezone, free_apps=site.free_apps, doors=json.dumps(site.doors),
                settings=json.dumps(site.settings), name=site.name, pay_by_pm=site.pay_by_pm, address=site.address,
            )
        )  # fmt: skip
        return result.rowcount == 1

    def listed(self, *, installers: Iterable[str] | None = None, pm: str | None = None) -> list[Site]:
        """Sites made by ``installers``, or assigned to ``pm``; every site when neither is given."""
        query = _SITE.order_by(projects.c.id)
        if installers is not None:
            query = query.where(self.tx.among(projects.c.installer, list(installers)))
        if pm is not None:
            query = query.where(projects.c.pm == pm)
        return [_site(row) for row in self.tx.all(query)]

    def update(self, ident: str, fields: Mapping[str, Any], settings: Mapping[str, Any] | None) -> None:
        """Set a site's own fields (name, timezone, pm, pay_by_pm, pm_notices, renew_notices) and merge
        ``settings`` into what reaches its devices."""
        values = {k: (int(v) if isinstance(v, bool) else v) for k, v in fields.items()}
        if settings:
            current = json.loads(self.tx.scalar(sa.select(projects.c.settings).where(projects.c.id == ident)))
            values["settings"] = json.dumps({**current, **settings})
        if values:
            self.tx.execute(sa.update(projects).where(projects.c.id == ident).values(**values))

    def unassign_pm(self, pm: str) -> int:
        """``pm`` is no longer any site's property manager; how many sites had it."""
        return int(self.tx.execute(sa.update(projects).where(projects.c.pm == pm).values(pm=None)).rowcount)

    def set_integration(self, ident: str, pms: str | None) -> None:
        self.tx.execute(sa.update(projects).where(projects.c.id == ident).values(integration=pms))

    def delete(self, ident: str) -> dict[str, int]:
        """Delete a site, its apartments and app accounts; its devices go back to their library. Counts."""
        counts = {
            "devices": self.tx.execute(
                sa.update(devices).where(devices.c.project == ident).values(project=None, apartment=None)
            ).rowcount,
            "app_accounts": self.tx.execute(sa.delete(app_accounts).where(app_accounts.c.project == ident)).rowcount,
            "apartments": self.tx.execute(sa.delete(apartments).where(apartments.c.project == ident)).rowcount,
        }
        self.tx.execute(sa.delete(projects).where(projects.c.id == ident))
        return counts

    # -- apartments ---------------------------------------------------------------------------------------
    def add_apartment(self, project: str, ident: str, name: str, switches: Mapping[str, bool]) -> bool:
        values = {s: (None if s not in switches else int(switches[s])) for s in APARTMENT_SWITCHES}
        result = self.tx.execute(
            self.tx.insert_ignore(apartments).values(project=project, id=ident, name=name, **values)
        )
        return result.rowcount == 1

    def apartments(self, project: str) -> list[Apartment]:
        rows = self.tx.all(
            sa.select(apartments.c.id, apartments.c.name, *(apartments.c[s] for s in APARTMENT_SWITCHES))
            .where(apartments.c.project == project)
            .order_by(apartments.c.id)
        )
        return [
            Apartment(
                r[0],
                r[1],
                {s: (None if v is None else bool(v)) for s, v in zip(APARTMENT_SWITCHES, r[2:], strict=True)},
            )
            for r in rows
        ]

    def apartment(self, project: str, ident: str) -> Apartment | None:
        return next((a for a in self.apartments(project) if a.id == ident), None)

    def switch_apartments(self, project: str, service: str, on: bool, apartment: str | None = None) -> int:
        """Set ``service`` (one of :data:`APARTMENT_SWITCHES`) for one apartment or every one; how many."""
        if service not in APARTMENT_SWITCHES:
            raise ValueError(service)
        statement = sa.update(apartments).where(apartments.c.project == project).values({service: int(on)})
        if apartment is not None:
            statement = statement.where(apartments.c.id == apartment)
        return int(self.tx.execute(statement).rowcount)

    # -- app accounts -----------------------------------------------------------------------------------
    def add_app_account(self, project: str, ident: str, role: str, name: str, apartment: str | None) -> bool:
        position = (
            sa.select(sa.func.coalesce(sa.func.max(app_accounts.c.position), 0) + 1)
            .where(app_accounts.c.project == project)
            .scalar_subquery()
        )
        result = self.tx.execute(
            self.tx.insert_ignore(app_accounts).values(
                project=project, id=ident, role=role, name=name, apartment=apartment, position=position
            )
        )
        return result.rowcount == 1

    def app_accounts(self, project: str) -> list[AppAccount]:
        """A site's app accounts in the order they were added."""
        return [AppAccount(*row) for row in self.tx.rows(_APP_ACCOUNTS, {"project": project})]

    def count_app_accounts(self, project: str, role: str) -> int:
        return int(
            self.tx.scalar(
                sa.select(sa.func.count()).where(app_accounts.c.project == project, app_accounts.c.role == role)
            )
        )

    # -- devices (the MAC library) ---------------------------------------------------------------------
    def device(self, mac: str) -> Device | None:
        row = self.tx.first(_DEVICE_BY_MAC, {"mac": mac})
        return None if row is None else Device(*row)

    def register(self, mac: str, distributor: str, model: str) -> bool:
        """A MAC into a distributor's library; False when it is known already."""
        result = self.tx.execute(self.tx.insert_ignore(devices).values(mac=mac, distributor=distributor, model=model))
        return result.rowcount == 1

    def register_many(self, rows: Sequence[tuple[str, str, str, str | None]]) -> None:
        """(mac, distributor, model, project) for each, known MACs left as they are (the fleet simulator)."""
        if rows:
            self.tx.execute(
                self.tx.insert_ignore(devices),
                [{"mac": m, "distributor": d, "model": model, "project": p} for m, d, model, p in rows],
            )

    def place(self, mac: str, project: str, *, apartment: str | None = None, name: str | None = None) -> None:
        """Put a device in a site (and an apartment), keeping its apartment and name when not given."""
        values: dict[str, Any] = {"project": project}
        if apartment is not None:
            values["apartment"] = apartment
        if name is not None:
            values["name"] = name
        self.tx.execute(sa.update(devices).where(devices.c.mac == mac).values(**values))

    def devices(self, project: str | None = None, *, placed: bool = False) -> list[Device]:
        """The devices of a site (or every one, or every one in some site), by MAC."""
        query = _DEVICE.order_by(devices.c.mac)
        if project is not None:
            query = query.where(devices.c.project == project)
        elif placed:
            query = query.where(devices.c.project.is_not(None))
        return [Device(*row) for row in self.tx.all(query)]

    def counts(self, projects: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """Devices, apartments and app accounts of each site, in three grouped queries (the sites list)."""
        found = {p: [0, 0, 0] for p in projects}
        if not projects:
            return {}
        for index, table in enumerate((devices, apartments, app_accounts)):
            column = table.c.project
            statement = sa.select(column, sa.func.count()).where(self.tx.among(column, projects)).group_by(column)
            for project, count in self.tx.all(statement):
                found[project][index] = int(count)
        return {p: (c[0], c[1], c[2]) for p, c in found.items()}

    def remove_mac(self, mac: str) -> None:
        self.tx.execute(sa.delete(devices).where(devices.c.mac == mac, devices.c.project.is_(None)))

    def library(self, distributors: Iterable[str]) -> list[Device]:
        """The MACs registered in these distributors' libraries."""
        return [
            Device(*row)
            for row in self.tx.all(_DEVICE.where(devices.c.distributor.in_(list(distributors))).order_by(devices.c.mac))
        ]
