"""Sites and what is in them: projects and their settings, apartments and their service switches, app
accounts, devices from the MAC library, service-based charging (seed 003), and what a site could pay for."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from typing import Any, Final

from cloud_stub import rules
from cloud_stub.rules import Refused
from cloud_stub.store import LedgerCore


class Sites(LedgerCore):
    """The ledger's sites (docs/cloud.md "The rules")."""

    # -- sites --------------------------------------------------------------------------------------
    def add_project(
        self,
        ident: str,
        project_type: str,
        installer: str,
        created: date,
        *,
        timezone: str = "UTC",
        doors: tuple[str, ...] = (),
        free_apps: int = 0,
        pm: str | None = None,
        name: str = "",
    ) -> None:
        if project_type not in rules.CATALOGUE:
            raise Refused("bad_type", f"{project_type!r} is not a project type", "DOMAIN.md project types")
        for who, role in ((installer, "installer"), (pm, "pm")):
            if who is None:
                continue
            found = self.db.execute("SELECT role FROM accounts WHERE id = ?", (who,)).fetchone()
            if found is None or found[0] != role:
                raise ValueError(f"--{role} {who}: no {role} account of that name")
        if pm is not None:
            self._check_pm(pm, installer)
        rules.check_zone(timezone)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO projects (id, type, installer, pm, created, timezone, free_apps, doors, name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ident, project_type, installer, pm, created.isoformat(), timezone, free_apps,
                 json.dumps(list(doors)), name or ident),
            )  # fmt: skip
            if project_type == "community":  # "With Indoor Monitor" is on by default (seed 003)
                db.execute(
                    "INSERT INTO services (project, service, subject) VALUES (?, 'with_indoor_monitor', 'project')",
                    (ident,),
                )

    def _check_pm(self, pm: str, installer: str) -> None:
        """A site's PM is one of its installer's (seed 001 "Roles and Permissions")."""
        role, parent, _ = self.account(pm)
        if role != "pm" or parent != installer:
            raise Refused("not_yours", f"{pm} is not a PM of {installer}", "seed 001 Roles and Permissions")

    def sites(self, actor: str) -> list[dict[str, Any]]:
        """The sites ``actor`` acts for."""
        shown = []
        for (ident,) in self.db.execute("SELECT id FROM projects ORDER BY id").fetchall():
            p = self.project(ident)
            try:
                self.check_authority(actor, p)
            except Refused:
                continue
            shown.append({k: p[k] for k in ("id", "name", "type", "installer", "pm", "timezone")})
        return shown

    # Site fields an installer edits (seed 002 rows 1-11), beside the settings that reach the device.
    SITE_FIELDS: Final = ("name", "timezone", "pm", "pay_by_pm", "pm_notices", "renew_notices")

    def set_site(self, actor: str, ident: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Edit a site: its own fields (:data:`SITE_FIELDS`: "Pay by PM", "Send Expiration Email to PM", "Send
        Renew Email To PM", the PM, the time zone) and the settings that reach the device (DOMAIN.md)."""
        p = self.project(ident)
        self.check_authority(actor, p)
        fields = {k: v for k, v in changes.items() if k in self.SITE_FIELDS}
        settings = rules.check_site_settings({k: v for k, v in changes.items() if k not in self.SITE_FIELDS})
        if "pay_by_pm" in fields and fields["pay_by_pm"] not in rules.PAY_BY_PM:
            raise Refused("bad_permission", f"'Pay by PM' is one of {rules.PAY_BY_PM}", "seed 002 row 8")
        if fields.get("pm") is not None:
            self._check_pm(str(fields["pm"]), p["installer"])
        for flag in ("pm_notices", "renew_notices"):
            if flag in fields and not isinstance(fields[flag], bool):
                raise Refused("bad_setting", f"{flag} is true or false", "seed 002 rows 9-10")
        if "name" in fields and not isinstance(fields["name"], str):
            raise Refused("bad_setting", "name is text", "seed 002")
        zone = settings.get("timezone", fields.get("timezone"))
        if zone is not None:
            rules.check_zone(str(zone))
            fields["timezone"] = settings["timezone"] = zone
        with self.transaction() as db:
            for key, value in fields.items():
                db.execute(f"UPDATE projects SET {key} = ? WHERE id = ?", (value, ident))  # noqa: S608 -- listed
            if settings:
                merged = {**p["settings"], **settings}
                db.execute("UPDATE projects SET settings = ? WHERE id = ?", (json.dumps(merged), ident))
        return self.project(ident)

    def delete_site(self, actor: str, ident: str) -> dict[str, int]:
        """Delete a site: its apartments, app accounts, services, notices and upgrades go; its devices go back
        to their distributor's MAC library. Refused while an upgrade of it is being installed."""
        self.check_authority(actor, self.project(ident))
        busy = self.db.execute(
            "SELECT 1 FROM device_upgrades d JOIN upgrades u ON u.id = d.upgrade"
            " WHERE u.project = ? AND d.status = 'Processing'",
            (ident,),
        ).fetchone()
        if busy is not None:
            raise Refused("upgrade_running", "a device of this site is installing an upgrade", "seed 002 line 751")
        counts = {}
        with self.transaction() as db:
            (counts["devices"],) = db.execute("SELECT COUNT(*) FROM devices WHERE project = ?", (ident,)).fetchone()
            db.execute("UPDATE devices SET project = NULL, apartment = NULL WHERE project = ?", (ident,))
            db.execute(
                "DELETE FROM device_upgrades WHERE upgrade IN (SELECT id FROM upgrades WHERE project = ?)", (ident,)
            )
            for table in ("upgrades", "services", "app_accounts", "apartments", "notices"):
                key = "project"
                counts[table] = db.execute(f"DELETE FROM {table} WHERE {key} = ?", (ident,)).rowcount  # noqa: S608
            db.execute("DELETE FROM projects WHERE id = ?", (ident,))
        return counts

    def integrate(self, actor: str, ident: str, pms: str | None) -> None:
        """A third-party PMS integrated (or removed): the site's Integration service follows it (seed 000
        line 47); it is never sold or switched by hand."""
        p = self.project(ident)
        self.check_authority(actor, p)
        rules.offer(p["type"], "integration")
        with self.transaction() as db:
            db.execute("UPDATE projects SET integration = ? WHERE id = ?", (pms, ident))
            if pms is None:
                db.execute("DELETE FROM services WHERE project = ? AND service = 'integration'", (ident,))
            else:
                db.execute(
                    "INSERT INTO services (project, service, subject, expires) VALUES (?, 'integration', 'project',"
                    " 253402300799) ON CONFLICT (project, service, subject) DO NOTHING",  # 9999-12-31: no end
                    (ident,),
                )

    # -- apartments, app accounts, devices ------------------------------------------------------------
    def add_apartment(
        self,
        project: str,
        ident: str,
        name: str,
        *,
        actor: str | None = None,
        device: tuple[str, str] | None = None,
        services: dict[str, bool] | None = None,
    ) -> None:
        """An apartment of a community; ``device`` (MAC, name) is its indoor monitor, required while With
        Indoor Monitor is on for it (seed 003 line 263); ``services`` sets its own switches."""
        p = self.project(project)
        if actor is not None:
            self.check_authority(actor, p)
        if p["type"] != "community":
            raise Refused("not_community", "apartments belong to community projects", "seed 003")
        switches = dict(services or {})
        for service in switches:
            rules.check_apartment_service(service)
        monitor = switches.get("with_indoor_monitor", self._switched(project, "with_indoor_monitor"))
        if monitor and device is None:
            raise Refused(
                "indoor_monitor_needed",
                "With Indoor Monitor is on: give the apartment's indoor monitor (--device-mac, --device-name)",
                "seed 003 line 263",
            )
        with self.transaction() as db:
            db.execute(
                "INSERT INTO apartments (project, id, name, with_indoor_monitor, landline, video_storage)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (project, ident, name, *(self._flag(switches.get(s)) for s in rules.APARTMENT_SERVICES)),
            )
            if device is not None:
                self._place(db, device[0], p, apartment=ident, name=device[1])

    @staticmethod
    def _flag(value: bool | None) -> int | None:
        return None if value is None else int(value)

    def _switched(self, project: str, service: str, subject: str = "project") -> bool:
        row = self.db.execute(
            "SELECT 1 FROM services WHERE project = ? AND service = ? AND subject = ?", (project, service, subject)
        ).fetchone()
        return row is not None

    def apartment_switch(self, project: str, apartment: str, service: str) -> bool:
        """Whether ``service`` is on for ``apartment``: its own switch, else the community's."""
        row = self._one(
            f"SELECT {service} FROM apartments WHERE project = ? AND id = ?",  # noqa: S608 -- APARTMENT_SERVICES
            (project, apartment),
            f"apartment {apartment} in {project}",
        )
        return bool(row[0]) if row[0] is not None else self._switched(project, service)

    def apartments(self, project: str) -> list[dict[str, Any]]:
        self.project(project)
        rows = self.db.execute("SELECT id, name FROM apartments WHERE project = ? ORDER BY id", (project,)).fetchall()
        return [
            {
                "id": ident,
                "name": name,
                **{s: self.apartment_switch(project, ident, s) for s in rules.APARTMENT_SERVICES},
            }
            for ident, name in rows
        ]

    def add_app_account(
        self, project: str, ident: str, role: str, name: str, apartment: str | None = None, *, actor: str | None = None
    ) -> str:
        """An app account; the service that pays for it (master: app; family beyond the project's free
        number: additional_app; pm: pm_app; personnel: personnel_app; admin: admin_app)."""
        p = self.project(project)
        if actor is not None:
            self.check_authority(actor, p)
        allowed = {
            "community": ("master", "family", "pm"),
            "single_family": ("master", "family"),
            "commercial": ("personnel", "admin"),
        }[p["type"]]
        if role not in allowed:
            raise Refused("bad_role", f"{p['type']} projects have {', '.join(allowed)} accounts", "DOMAIN.md")
        if p["type"] == "community" and role in ("master", "family"):
            if apartment is None:
                raise Refused("apartment_needed", "a resident's account belongs to an apartment", "seed 003")
            self._one(
                "SELECT 1 FROM apartments WHERE project = ? AND id = ?", (project, apartment), f"apartment {apartment}"
            )
        with self.transaction() as db:
            db.execute(
                "INSERT INTO app_accounts (project, id, apartment, role, name) VALUES (?, ?, ?, ?, ?)",
                (project, ident, apartment, role, name),
            )
        return self.account_services(project)[ident][1]

    def account_services(self, project: str) -> dict[str, tuple[str, str]]:
        """Each app account of a site: (role, the service that pays for it). Family members beyond the
        project's free number, in the order they were added, are Additional App (DOMAIN.md)."""
        p = self.project(project)
        shown, family = {}, 0
        rows = self.db.execute("SELECT id, role FROM app_accounts WHERE project = ? ORDER BY rowid", (project,))
        for ident, role in rows:
            service = rules.ACCOUNT_SERVICES[role][0]
            if role == "family":
                service = "app" if family < p["free_apps"] else "additional_app"
                family += 1
            shown[ident] = (role, service)
        return shown

    def add_device(
        self,
        mac: str,
        distributor: str,
        model: str,
        project: str | None = None,
        *,
        actor: str | None = None,
        name: str | None = None,
    ) -> str:
        """A MAC into ``distributor``'s library (DOMAIN.md), and into ``project`` if named: only a site whose
        installer works under that distributor; a MAC already in another site is refused."""
        mac = rules.normal_mac(mac)
        role, _, _ = self.account(distributor)
        if role not in ("distributor", "sub_distributor"):
            raise Refused("not_distributor", f"{distributor} has no MAC library", "DOMAIN.md who is who")
        p = self.project(project) if project is not None else None
        if p is not None and actor is not None:
            self.check_authority(actor, p)
        with self.transaction() as db:
            known = db.execute("SELECT distributor, model FROM devices WHERE mac = ?", (mac,)).fetchone()
            if known is None:
                db.execute("INSERT INTO devices (mac, distributor, model) VALUES (?, ?, ?)", (mac, distributor, model))
            elif known[0] != distributor:
                raise Refused("not_yours", f"{mac} is in another distributor's MAC library", "DOMAIN.md who is who")
            if p is not None:
                self._place(db, mac, p, name=name)
        return mac

    def _place(
        self, db: sqlite3.Connection, mac: str, p: dict[str, Any], *, apartment: str | None = None, name: str | None
    ) -> None:
        mac = rules.normal_mac(mac)
        row = db.execute("SELECT distributor, project FROM devices WHERE mac = ?", (mac,)).fetchone()
        if row is None:
            raise Refused("not_in_library", f"{mac} is not in a MAC library (add-device first)", "DOMAIN.md")
        library, site = row
        if library not in self._chain(p["installer"]):
            raise Refused("not_yours", f"{mac} is in another distributor's MAC library", "DOMAIN.md who is who")
        if site is not None and site != p["id"]:
            raise Refused("device_taken", f"{mac} is already in site {site}", "DOMAIN.md who is who")
        db.execute(
            "UPDATE devices SET project = ?, apartment = COALESCE(?, apartment), name = COALESCE(?, name)"
            " WHERE mac = ?",
            (p["id"], apartment, name, mac),
        )

    def devices(self, project: str | None = None) -> list[tuple[str, str, str | None]]:
        if project is None:
            return list(self.db.execute("SELECT mac, model, project FROM devices ORDER BY mac"))
        return list(
            self.db.execute("SELECT mac, model, project FROM devices WHERE project = ? ORDER BY mac", (project,))
        )

    # -- service-based charging (seed 003) -------------------------------------------------------------
    def switch(
        self,
        project: str,
        service: str,
        subject: str = "project",
        on: bool = True,
        *,
        actor: str | None = None,
        now: float | None = None,
    ) -> int:
        """Switch a service at community level, for one apartment (``apartment:ID``: With Indoor Monitor,
        Landline, Video Storage) or for every apartment (``apartments``: the bulk update of With Indoor
        Monitor and Landline). PM App is forced on and locked while any PM App account is active. How many
        switches changed."""
        p = self.project(project)
        if actor is not None:
            self.check_authority(actor, p)
        rules.offer(p["type"], service)
        rules.check_switchable(service)
        if service == "pm_app" and not on:
            active = self.db.execute(
                "SELECT 1 FROM services WHERE project = ? AND service = 'pm_app' AND subject != 'project'"
                " AND expires > ?",
                (project, now if now is not None else 0.0),
            ).fetchone()
            if active is not None:
                raise Refused(
                    "pm_app_locked", "PM App is forced on and locked while any PM App is active", "seed 003 line 225"
                )
        if subject == "apartments":
            if service not in rules.BULK_SERVICES:
                raise Refused(
                    "not_bulk", f"the bulk update covers {', '.join(rules.BULK_SERVICES)}", "seed 003 line 229"
                )
            with self.transaction() as db:
                return db.execute(
                    f"UPDATE apartments SET {service} = ? WHERE project = ?",  # noqa: S608 -- BULK_SERVICES
                    (int(on), project),
                ).rowcount
        if subject.startswith("apartment:"):
            rules.check_apartment_service(service)
            apartment = subject.partition(":")[2]
            self.apartment_switch(project, apartment, service)  # it exists
            with self.transaction() as db:
                db.execute(
                    f"UPDATE apartments SET {service} = ? WHERE project = ? AND id = ?",  # noqa: S608 -- checked
                    (int(on), project, apartment),
                )
            return 1
        if subject != "project":
            raise Refused("bad_subject", "switch a service for project, apartment:ID or apartments", "seed 003")
        with self.transaction() as db:
            if on:
                return db.execute(
                    "INSERT INTO services (project, service, subject) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (project, service, subject),
                ).rowcount
            return db.execute(
                "DELETE FROM services WHERE project = ? AND service = ? AND subject = ?",
                (project, service, subject),
            ).rowcount

    def services(self, project: str) -> list[dict[str, Any]]:
        self.project(project)
        rows = self.db.execute(
            "SELECT service, subject, expires, plan, auto_renew FROM services WHERE project = ?"
            " ORDER BY service, subject",
            (project,),
        )
        return [
            {"service": s, "subject": subj, "expires": e, "plan": plan, "auto_renew": bool(auto)}
            for s, subj, e, plan, auto in rows
        ]

    def select(self, projects: list[str], services: list[str] | None = None) -> list[tuple[str, str, str]]:
        """Seed 000 lines 147-149: the chosen sites (or all) and service types (or all), as quote items: what
        each site could pay for, not only what it holds. Its units: every door but the free one, every app
        account (by the service that pays for it), every apartment with Landline or Video Storage on; and the
        site-wide features it holds or (community) has switched on. Premium features never taken are named
        with --item: "All" renews a site, it does not buy every feature there is."""
        chosen: list[tuple[str, str, str]] = []
        for project in projects:
            p = self.project(project)
            sold = {o.service: o for o in rules.CATALOGUE[p["type"]]}
            units = [("door", f"door:{d}") for d in p["doors"][1:] if "door" in sold]
            units += [(service, f"account:{a}") for a, (_, service) in self.account_services(project).items()]
            if p["type"] == "community":
                for apartment in self.apartments(project):
                    units += [
                        (s, f"apartment:{apartment['id']}") for s in ("landline", "video_storage") if apartment[s]
                    ]
            held = {(e["service"], e["subject"]) for e in self.services(project) if e["subject"] == "project"}
            units += sorted(
                (s, subj)
                for s, subj in held
                if sold[s].monthly > 0 and not (p["type"] == "community" and "apartment" in sold[s].levels)
            )
            chosen += [(project, s, subj) for s, subj in units if services is None or s in services]
        if not chosen:
            raise Refused(
                "nothing_selected", "the chosen sites have none of the chosen services", "seed 000 lines 147-149"
            )
        return list(dict.fromkeys(chosen))

    def set_pm_notices(self, project: str, on: bool) -> None:
        with self.transaction() as db:
            db.execute("UPDATE projects SET pm_notices = ? WHERE id = ?", (int(on), project))
