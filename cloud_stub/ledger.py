"""The subscription ledger in SQLite: who is who, projects and what they hold, orders, credits, notices.

Each operation is one transaction; a refusal (:class:`cloud_stub.rules.Refused`) changes nothing.
Payment providers are simulated (an order is paid when asked to be); the rules are the vendor's
(``cloud_stub/rules.py``). Times are epoch seconds, passed in by the caller (the CLI passes the
clock; the tests pass what they need).
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Final

from cloud_stub import rules
from cloud_stub.rules import Refused

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            role TEXT NOT NULL,            -- distributor, sub_distributor, installer, sub_installer, pm
            parent TEXT REFERENCES accounts (id),
            name TEXT NOT NULL,
            permission TEXT NOT NULL,      -- to pay: none, regular, credit (seed 002 line 247)
            credits INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE credit_log (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts (id),
            at REAL NOT NULL,
            amount INTEGER NOT NULL,       -- + received, - spent or allocated
            remaining INTEGER NOT NULL,
            note TEXT NOT NULL
        )""",
        """CREATE TABLE projects (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,            -- community, single_family, commercial
            installer TEXT NOT NULL REFERENCES accounts (id),
            pm TEXT REFERENCES accounts (id),
            created TEXT NOT NULL,         -- ISO date
            timezone TEXT NOT NULL,
            free_apps INTEGER NOT NULL DEFAULT 0,
            doors TEXT NOT NULL DEFAULT '[]',
            settings TEXT NOT NULL DEFAULT '{}',
            pm_notices INTEGER NOT NULL DEFAULT 1
        )""",
        """CREATE TABLE devices (
            mac TEXT PRIMARY KEY,          -- the MAC library
            distributor TEXT NOT NULL REFERENCES accounts (id),
            project TEXT REFERENCES projects (id),
            model TEXT NOT NULL
        )""",
        """CREATE TABLE services (
            project TEXT NOT NULL REFERENCES projects (id),
            service TEXT NOT NULL,
            subject TEXT NOT NULL,
            expires REAL,                  -- NULL: switched on, never paid
            plan TEXT,
            auto_renew INTEGER NOT NULL DEFAULT 0,
            auto_source TEXT,
            PRIMARY KEY (project, service, subject)
        )""",
        """CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            payer TEXT NOT NULL REFERENCES accounts (id),
            items TEXT NOT NULL,           -- JSON [[project, service, subject, new_expiry], ...]
            method TEXT NOT NULL,
            source TEXT NOT NULL,
            amount INTEGER NOT NULL,
            status TEXT NOT NULL,          -- pending, paid, expired
            created REAL NOT NULL,
            summary TEXT NOT NULL
        )""",
        """CREATE TABLE notices (
            key TEXT PRIMARY KEY,          -- stage:service:subject:expires:recipient
            at REAL NOT NULL,
            project TEXT NOT NULL,
            stage INTEGER NOT NULL,
            recipient_role TEXT NOT NULL,
            recipient TEXT,
            text TEXT NOT NULL
        )""",
        """CREATE TABLE issued (
            device TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            digest TEXT NOT NULL           -- of the claims last issued: re-issue only on change
        )""",
    ),
    # 2: what devices send (ingest), signing keys and their rotation, firmware and its rollouts.
    (
        """CREATE TABLE events (
            event_id TEXT PRIMARY KEY,     -- dedupe: a redelivery is dropped here
            device TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            kind TEXT NOT NULL,
            project TEXT,
            occurred_at TEXT NOT NULL,
            received_at REAL NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX events_device_seq ON events (device, seq)",
        "CREATE INDEX events_project_type ON events (project, type)",
        """CREATE TABLE device_state (
            device TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        """CREATE TABLE replies (
            id TEXT PRIMARY KEY,
            device TEXT NOT NULL,
            body TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        """CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            file TEXT NOT NULL,            -- the private key's PEM file
            created REAL NOT NULL,
            not_after REAL NOT NULL,
            state TEXT NOT NULL            -- active (signs), listed (trusted, not signing), retired
        )""",
        """CREATE TABLE firmware (
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            file TEXT NOT NULL,            -- the image, served over HTTP with Range
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            log TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (model, version)
        )""",
        """CREATE TABLE upgrades (
            id TEXT PRIMARY KEY,           -- the job_id the devices see
            project TEXT NOT NULL REFERENCES projects (id),
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            devices TEXT NOT NULL,         -- JSON list of MACs
            at REAL,                       -- NULL: right now
            reset INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        )""",
        """CREATE TABLE device_upgrades (
            device TEXT NOT NULL,
            upgrade TEXT NOT NULL,
            status TEXT NOT NULL,          -- Pending, Processing, Executed, Failed (seed 002 line 751)
            last_kind TEXT,
            at REAL NOT NULL,
            PRIMARY KEY (device, upgrade)
        )""",
        "ALTER TABLE issued ADD COLUMN issued_at REAL NOT NULL DEFAULT 0",
    ),
    # 3: apartments and the app accounts of residents, personnel and administrators.
    (
        """CREATE TABLE apartments (
            project TEXT NOT NULL REFERENCES projects (id),
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (project, id)
        )""",
        """CREATE TABLE app_accounts (
            project TEXT NOT NULL REFERENCES projects (id),
            id TEXT NOT NULL,
            apartment TEXT,                -- residents: their apartment
            role TEXT NOT NULL,            -- master, family, pm, personnel, admin
            name TEXT NOT NULL,
            PRIMARY KEY (project, id)
        )""",
    ),
    # 4: what is issued waits here until the broker acknowledged it (lost with a broker, sent again).
    (
        "ALTER TABLE issued ADD COLUMN topic TEXT",
        "ALTER TABLE issued ADD COLUMN token TEXT",  # NULL once the broker acknowledged it
    ),
    # 5: key scopes and root rotation (PROTOCOL.md; cloud_stub/trustkeys.py).
    (
        # billing, releases, commands; "any": a signer from before purposes (no typs)
        "ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'any'",
        """CREATE TABLE roots (
            kid TEXT PRIMARY KEY,
            file TEXT NOT NULL,            -- the private key's PEM file
            created REAL NOT NULL,
            state TEXT NOT NULL            -- active (trusted; the oldest signs trust), retired
        )""",
    ),
    # 6: orders as the seeds show them, site settings and notices, apartments' services, remote operations.
    (
        "ALTER TABLE orders ADD COLUMN txn TEXT",  # the transaction number the payer sees (seed 001 line 284)
        "ALTER TABLE orders ADD COLUMN kind TEXT NOT NULL DEFAULT 'manual'",  # manual, auto
        "ALTER TABLE orders ADD COLUMN paid_at REAL",
        "CREATE UNIQUE INDEX orders_txn ON orders (txn)",
        "CREATE INDEX orders_payer ON orders (payer, id)",
        "ALTER TABLE services ADD COLUMN auto_payer TEXT REFERENCES accounts (id)",
        "ALTER TABLE projects ADD COLUMN pay_by_pm TEXT NOT NULL DEFAULT 'none'",  # seed 002 row 8
        "ALTER TABLE projects ADD COLUMN renew_notices INTEGER NOT NULL DEFAULT 1",  # seed 002 row 10
        "ALTER TABLE projects ADD COLUMN name TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE projects ADD COLUMN integration TEXT",  # the third-party PMS, set by its integration
        "ALTER TABLE accounts ADD COLUMN end_user_email INTEGER NOT NULL DEFAULT 1",  # Single-Family Email Setting
        # per apartment (seed 003): NULL follows the community's switch
        "ALTER TABLE apartments ADD COLUMN with_indoor_monitor INTEGER",
        "ALTER TABLE apartments ADD COLUMN landline INTEGER",
        "ALTER TABLE apartments ADD COLUMN video_storage INTEGER",
        "ALTER TABLE devices ADD COLUMN apartment TEXT",
        "ALTER TABLE devices ADD COLUMN name TEXT",
        """CREATE TABLE commands (
            id TEXT PRIMARY KEY,           -- the command id the device answers with
            device TEXT NOT NULL,
            op TEXT NOT NULL,
            args TEXT NOT NULL,
            by TEXT NOT NULL,              -- the account that asked
            created REAL NOT NULL,
            sent REAL                      -- NULL until serve has published it
        )""",
    ),
)


class Ledger:
    """The ledger of one cloud."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The connection, for the ledger's own modules (issuing, ingest, rollouts, trustkeys): writes go
        # through :meth:`transaction`.
        self.db = sqlite3.connect(path, isolation_level=None)
        self._depth = 0
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA journal_mode = WAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in statements:
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        self.db.close()

    def data_version(self) -> int:
        """Changes when another connection commits (how ``serve`` notices the CLI's changes)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; one opened inside another joins it (one commit, one fsync, for a batch)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
        self.db.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...], what: str) -> Any:
        row = self.db.execute(sql, params).fetchone()
        if row is None:
            raise Refused("not_found", f"no {what}", "ledger")
        return row

    # -- who is who ---------------------------------------------------------------------------------
    def add_account(
        self, ident: str, role: str, name: str, parent: str | None = None, permission: str = "none"
    ) -> None:
        allowed_parent = {
            "distributor": (None,),
            "sub_distributor": ("distributor",),
            "installer": ("distributor", "sub_distributor"),
            "sub_installer": ("installer",),
            "pm": ("installer",),
        }
        if role not in allowed_parent:
            raise Refused("bad_role", f"{role!r} is not a role", "DOMAIN.md who is who")
        parent_role = (
            None
            if parent is None
            else self._one("SELECT role FROM accounts WHERE id = ?", (parent,), f"account {parent}")[0]
        )
        if parent_role not in allowed_parent[role]:
            raise Refused("bad_parent", f"a {role} cannot be under a {parent_role or 'nobody'}", "DOMAIN.md who is who")
        if role == "pm" and permission != "none":
            rules.check_pm_grant()
        if role in rules.PAY_PERMISSIONS and permission not in rules.PAY_PERMISSIONS[role]:
            raise Refused("bad_permission", f"a {role} may have {rules.PAY_PERMISSIONS[role]}", "seed 002 line 247")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO accounts (id, role, parent, name, permission) VALUES (?, ?, ?, ?, ?)",
                (ident, role, parent, name, permission),
            )

    def account(self, ident: str) -> tuple[str, str | None, str]:
        """(role, parent, permission) of an account."""
        row = self._one("SELECT role, parent, permission FROM accounts WHERE id = ?", (ident,), f"account {ident}")
        return row[0], row[1], row[2]

    def _chain(self, account: str, depth: int = 3) -> tuple[str | None, ...]:
        """The parents above ``account``, nearest first."""
        chain: list[str | None] = []
        above = account
        for _ in range(depth):
            row = self.db.execute("SELECT parent FROM accounts WHERE id = ?", (above,)).fetchone()
            if row is None or row[0] is None:
                break
            chain.append(row[0])
            above = row[0]
        return tuple(chain)

    def grant(self, granter: str, account: str, permission: str) -> None:
        """Distributors grant their installers "Pay by Installer" (seed 001 lines 54-55); a PM's permission is
        its site's "Pay by PM" (:meth:`set_site`)."""
        role, parent, _ = self.account(account)
        if parent != granter:
            raise Refused("not_yours", f"{account} is not under {granter}", "seed 001 lines 54-55")
        if role == "pm":
            rules.check_pm_grant()
        if permission not in rules.PAY_PERMISSIONS.get(role, ()):
            raise Refused("bad_permission", f"a {role} may have {rules.PAY_PERMISSIONS.get(role)}", "seed 002 line 247")
        with self.transaction() as db:
            db.execute("UPDATE accounts SET permission = ? WHERE id = ?", (permission, account))

    def set_end_user_email(self, installer: str, on: bool) -> None:
        """The installer's Single-Family Email Setting (seed 002 line 195): renewal and expiration emails to the
        end users of its single-family sites."""
        role, _, _ = self.account(installer)
        if role != "installer":
            raise Refused("not_installer", "the Single-Family Email Setting is an installer's", "seed 002 line 195")
        with self.transaction() as db:
            db.execute("UPDATE accounts SET end_user_email = ? WHERE id = ?", (int(on), installer))

    # -- credits ----------------------------------------------------------------------------------
    def _credit(self, db: sqlite3.Connection, account: str, amount: int, now: float, note: str) -> int:
        (credits,) = self._one("SELECT credits FROM accounts WHERE id = ?", (account,), f"account {account}")
        remaining = credits + amount
        if remaining < 0:
            raise Refused(
                "not_enough_credits", f"{account} has {credits} credits, {-amount} needed", "seed 000 line 197"
            )
        db.execute("UPDATE accounts SET credits = ? WHERE id = ?", (remaining, account))
        db.execute(
            "INSERT INTO credit_log (account, at, amount, remaining, note) VALUES (?, ?, ?, ?, ?)",
            (account, now, amount, remaining, note),
        )
        return int(remaining)

    def buy_credits(self, distributor: str, amount: int, source: str, now: float) -> int:
        """A distributor buys credits from the vendor, paying by Stripe, PayPal or coupon (seed 000 177-189)."""
        (role,) = self._one("SELECT role FROM accounts WHERE id = ?", (distributor,), f"account {distributor}")
        if role != "distributor":
            raise Refused("not_distributor", "only distributors buy credits from the vendor", "seed 000 line 177")
        rules.check_source("regular", source)
        if amount <= 0:
            raise Refused("bad_amount", "buy at least one credit", "seed 000 line 185")
        with self.transaction() as db:
            return self._credit(db, distributor, amount, now, f"bought by {source}")

    def allocate(self, giver: str, receiver: str, amount: int, now: float) -> int:
        """Credits go down the chain: to one's sub-distributors, installers and PMs (seed 000 line 193)."""
        role, _, _ = self.account(receiver)
        rules.check_allocation(giver, role, self._chain(receiver))
        if amount <= 0:
            raise Refused("bad_amount", "allocate at least one credit", "seed 000 line 199")
        with self.transaction() as db:
            self._credit(db, giver, -amount, now, f"allocated to {receiver}")
            return self._credit(db, receiver, amount, now, f"allocated by {giver}")

    def credit_log(self, account: str) -> list[dict[str, Any]]:
        self.account(account)
        rows = self.db.execute(
            "SELECT at, amount, remaining, note FROM credit_log WHERE account = ? ORDER BY id", (account,)
        )
        return [
            {"at": at, "amount": amount, "remaining": remaining, "note": note} for at, amount, remaining, note in rows
        ]

    def credit_totals(self, account: str) -> dict[str, int]:
        """Seed 001 "Credit Logs": available (held now), total (ever received: bought or allocated in) and
        used (spent on orders or passed down the chain)."""
        self.account(account)
        received, given = self.db.execute(
            "SELECT COALESCE(SUM(MAX(amount, 0)), 0), COALESCE(SUM(MAX(-amount, 0)), 0) FROM credit_log"
            " WHERE account = ?",
            (account,),
        ).fetchone()
        (available,) = self._one("SELECT credits FROM accounts WHERE id = ?", (account,), f"account {account}")
        return {"available": int(available), "total": int(received), "used": int(given)}

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

    PROJECT_COLUMNS: Final = (
        "id", "type", "installer", "pm", "created", "timezone", "free_apps", "doors", "settings", "pm_notices",
        "pay_by_pm", "renew_notices", "name", "integration",
    )  # fmt: skip

    def project(self, ident: str) -> dict[str, Any]:
        row = self._one(
            f"SELECT {', '.join(self.PROJECT_COLUMNS)} FROM projects WHERE id = ?",  # noqa: S608 -- our columns
            (ident,),
            f"project {ident}",
        )
        project = dict(zip(self.PROJECT_COLUMNS, row, strict=True))
        project["doors"], project["settings"] = json.loads(project["doors"]), json.loads(project["settings"])
        project["created"] = date.fromisoformat(project["created"])
        project["pm_notices"], project["renew_notices"] = bool(project["pm_notices"]), bool(project["renew_notices"])
        return project

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

    def place_device(self, actor: str, mac: str, project: str, name: str | None = None) -> str:
        """Put a device of the MAC library into a site the actor acts for."""
        p = self.project(project)
        self.check_authority(actor, p)
        mac = rules.normal_mac(mac)
        with self.transaction() as db:
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

    # -- whose site -----------------------------------------------------------------------------------
    def check_authority(self, actor: str, project: dict[str, Any]) -> None:
        """``Refused("not_yours")`` unless ``actor`` may act for ``project`` (rules.check_authority)."""
        role, parent, _ = self.account(actor)
        installer = str(project["installer"])
        if role == "sub_installer":  # its main account's sites
            role, actor = "installer", str(parent)
        rules.check_authority(actor, role, self._chain(installer, 2), installer, project.get("pm"))

    # -- paying -------------------------------------------------------------------------------------
    def _payer_permission(self, role: str, permission: str, projects: dict[str, dict[str, Any]]) -> str:
        """A PM's permission is the "Pay by PM" of the sites it pays for (seed 002 row 8): all must allow it."""
        if role != "pm":
            return permission
        return "none" if any(p["pay_by_pm"] == "none" for p in projects.values()) else "regular"

    def quote(
        self,
        payer: str,
        items: list[tuple[str, str, str]],
        now: float,
        *,
        months: int | None = None,
        renew_to: float | date | None = None,
        plan: str | None = None,
    ) -> dict[str, Any]:
        """The price first (seed 000 lines 147-149): what paying for ``items`` (project, service, subject) costs,
        and the new expiry of each. Regular payment renews for ``months``; credit payment renews *to* a date
        (a ``date``: its 23:59:59 in each site's time zone). An item named twice is one item."""
        role, parent, permission = self.account(payer)
        if role == "sub_installer":  # it pays as its main account ("the data shown are the same")
            role, _, permission = self.account(str(parent))
        items = list(dict.fromkeys(items))
        if not items:
            raise Refused("nothing_selected", "name at least one service", "seed 000 lines 147-149")
        projects = {p: self.project(p) for p, _, _ in items}
        methods = {rules.payment_method(p["type"], p["created"]) for p in projects.values()}
        if len(methods) != 1:
            raise Refused("mixed_methods", "one order pays with one method", "seed 000 lines 115-133")
        method = methods.pop()
        if method == "none":
            raise Refused(
                "no_payment_needed", "commercial projects created before 2025-06-01 need no payment", "DOMAIN.md Paying"
            )
        if role == "pm":  # its permission is each site's "Pay by PM": its own sites first
            for p in projects.values():
                self.check_authority(payer, p)
        rules.check_permission(role, self._payer_permission(role, permission, projects), method)
        for p in projects.values():
            self.check_authority(payer, p)  # whose money pays for whose site (after: may it pay at all)
        accounts = {project: self.account_services(project) for project in projects}  # one read per site
        priced, amount = [], 0
        summary = {"doors": 0, "personnel_apps": 0, "admin_apps": 0, "premium_features": 0, "apps": 0}
        for project, service, subject in items:
            p = projects[project]
            monthly = self._price(p, service, subject, plan, accounts[project])
            current = self.db.execute(
                "SELECT expires FROM services WHERE project = ? AND service = ? AND subject = ?",
                (project, service, subject),
            ).fetchone()
            expires = current[0] if current else None
            if method == "credit":
                if renew_to is None:
                    raise Refused("renew_to_needed", "credit renewal names a 'renew to' date", "seed 001 line 220")
                new = rules.end_of_day(renew_to, p["timezone"]) if isinstance(renew_to, date) else renew_to
                if new <= max(expires or now, now):
                    raise Refused("renew_to_past", "'renew to' must be after the current expiry", "seed 001 line 220")
                periods = max(1, math.ceil((new - max(expires or now, now)) / (30 * rules.DAY)))
            else:
                if months is None:
                    raise Refused("length_needed", "manual renewal names a length", "seed 000 line 161")
                new = rules.renewed_expiry(expires, now, rules.months(months))
                periods = months
            amount += monthly * periods
            priced.append((project, service, subject, new, plan if service == "attendance" else None))
            key = {"door": "doors", "personnel_app": "personnel_apps", "admin_app": "admin_apps"}.get(service)
            if key is None:
                key = "apps" if service in ("app", "additional_app", "pm_app") else "premium_features"
            summary[key] += 1
        shown_to = renew_to.isoformat() if isinstance(renew_to, date) else renew_to
        return {"method": method, "amount": amount, "items": priced, "summary": summary, "renew_to": shown_to}

    def _price(
        self, p: dict[str, Any], service: str, subject: str, plan: str | None, accounts: dict[str, tuple[str, str]]
    ) -> int:
        """The monthly price of one item, refusing what the site does not have or has switched off;
        ``accounts`` are the site's (:meth:`account_services`)."""
        offer = rules.offer(p["type"], service)
        rules.check_switchable(service)
        rules.check_subject(offer, subject, p["doors"])
        level, _, ident = subject.partition(":")
        project = p["id"]
        monthly = offer.monthly
        if level == "account":
            found = accounts.get(ident)
            if found is None:
                raise Refused("unknown_account", f"{project} has no app account {ident}", "DOMAIN.md project types")
            rules.check_account_service(service, found[0], ident)
            if service == "app" and p["type"] == "community":  # seed 003: the App charge follows the monitor
                (apartment,) = self._one(
                    "SELECT apartment FROM app_accounts WHERE project = ? AND id = ?", (project, ident), ident
                )
                if not self.apartment_switch(project, apartment, "with_indoor_monitor"):
                    monthly = rules.APP_WITHOUT_MONITOR
        elif level == "apartment":
            if not self.db.execute(
                "SELECT 1 FROM apartments WHERE project = ? AND id = ?", (project, ident)
            ).fetchone():
                raise Refused("unknown_apartment", f"{project} has no apartment {ident}", "seed 003")
            if not self.apartment_switch(project, ident, service):
                raise Refused("switched_off", f"{service} is switched off for apartment {ident}", "seed 003")
        elif p["type"] == "community" and "apartment" in offer.levels and service != "with_indoor_monitor":
            raise Refused(
                "per_apartment", f"a community's {service} is charged per apartment (apartment:ID)", "seed 003"
            )
        elif p["type"] == "community" and level == "project" and not self._switched(project, service):
            raise Refused("switched_off", f"{service} is switched off for {project}", "seed 003")
        if service == "attendance":
            (personnel,) = self.db.execute(
                "SELECT COUNT(*) FROM app_accounts WHERE project = ? AND role = 'personnel'", (project,)
            ).fetchone()
            monthly = rules.attendance_price(plan, personnel)
        return monthly

    def order(self, payer: str, quote: dict[str, Any], source: str, now: float, *, kind: str = "manual") -> int:
        """A pending order for a quote, with its transaction number; it must be paid within 15 minutes."""
        rules.check_source(quote["method"], source)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO orders (payer, items, method, source, amount, status, created, summary, txn, kind)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (payer, json.dumps(quote["items"]), quote["method"], source, quote["amount"], now,
                 json.dumps(quote["summary"]), self._txn(db), kind),
            )  # fmt: skip
            return int(cursor.lastrowid or 0)

    @staticmethod
    def _txn(db: sqlite3.Connection) -> str:
        """A 17-digit transaction number, as the seeds show them (seed 001 line 284)."""
        while True:
            txn = str(10**16 + secrets.randbelow(9 * 10**16))
            if db.execute("SELECT 1 FROM orders WHERE txn = ?", (txn,)).fetchone() is None:
                return txn

    def order_of(self, txn: str) -> int:
        (ident,) = self._one("SELECT id FROM orders WHERE txn = ?", (txn,), f"order {txn}")
        return int(ident)

    def pay(self, order: int, now: float, *, auto_renew: bool = False, payer: str | None = None) -> dict[str, Any]:
        """Pay a pending order (providers simulated); the services are extended in the same transaction.
        ``payer``, when given, must be the account that placed the order."""
        owner, items, method, source, amount, status, created, txn = self._one(
            "SELECT payer, items, method, source, amount, status, created, txn FROM orders WHERE id = ?",
            (order,),
            f"order {order}",
        )
        if payer is not None and payer != owner:
            raise Refused("not_yours", f"order {txn} was placed by another account", "seed 002 line 186")
        if status == "pending" and rules.order_expired(created, now):
            with self.transaction() as db:
                db.execute("UPDATE orders SET status = 'expired' WHERE id = ?", (order,))
            raise Refused("order_expired", "a pending order must be paid within 15 minutes", "DOMAIN.md Paying")
        if status != "pending":
            raise Refused("not_pending", f"order {txn} is {status}", "DOMAIN.md Paying")
        entries = json.loads(items)
        if auto_renew:
            for project, *_ in entries:
                p = self.project(project)
                rules.check_auto_renew(p["type"], p["created"], source)
        with self.transaction() as db:
            if method == "credit":
                self._credit(db, owner, -amount, now, f"order {txn}")
            self._extend(db, entries, auto_source=source if auto_renew else None, payer=owner)
            db.execute("UPDATE orders SET status = 'paid', paid_at = ? WHERE id = ?", (now, order))
            self._renewal_notices(db, order, txn, entries, now)
        return {
            "order": order, "txn": txn, "paid": amount, "method": method,
            "projects": sorted({e[0] for e in entries}),
        }  # fmt: skip

    def _extend(
        self, db: sqlite3.Connection, entries: list[Any], *, auto_source: str | None, payer: str | None
    ) -> None:
        for project, service, subject, new, plan in entries:
            db.execute(
                "INSERT INTO services (project, service, subject, expires, plan, auto_renew, auto_source, auto_payer)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, service, subject) DO UPDATE SET"
                " expires = excluded.expires, plan = COALESCE(excluded.plan, services.plan),"
                " auto_renew = excluded.auto_renew, auto_source = excluded.auto_source,"
                " auto_payer = excluded.auto_payer",
                (project, service, subject, new, plan, int(auto_source is not None), auto_source,
                 payer if auto_source else None),
            )  # fmt: skip
            if service == "pm_app":  # seed 003 line 225: a PM App active forces the PM App option on
                db.execute(
                    "INSERT INTO services (project, service, subject) VALUES (?, 'pm_app', 'project')"
                    " ON CONFLICT DO NOTHING",
                    (project,),
                )

    def payments(self, payer: str) -> list[dict[str, Any]]:
        """The payment records of ``payer`` (seed 002 line 186), newest first: manual and automatic orders."""
        self.account(payer)
        rows = self.db.execute(
            "SELECT txn, kind, status, method, source, amount, created, paid_at, items FROM orders"
            " WHERE payer = ? ORDER BY id DESC",
            (payer,),
        )
        return [
            {"txn": txn, "kind": kind, "status": status, "method": method, "source": source, "amount": amount,
             "created": created, "paid_at": paid_at, "items": [e[:3] for e in json.loads(items)]}
            for txn, kind, status, method, source, amount, created, paid_at, items in rows
        ]  # fmt: skip

    def cancel_auto_renew(self, actor: str, items: list[tuple[str, str, str]]) -> int:
        """Stop auto-renewal of the chosen services; how many were auto-renewing."""
        for project in {p for p, _, _ in items}:
            self.check_authority(actor, self.project(project))
        with self.transaction() as db:
            return sum(
                db.execute(
                    "UPDATE services SET auto_renew = 0, auto_source = NULL, auto_payer = NULL"
                    " WHERE project = ? AND service = ? AND subject = ? AND auto_renew = 1",
                    item,
                ).rowcount
                for item in dict.fromkeys(items)
            )

    def auto_renew(self, now: float) -> list[tuple[str, str, str, float]]:
        """Seed 000 line 159: each auto-renewing service whose upcoming expiry is reached moves on by 30 days,
        once per cycle; each renewal is an order of its payer, paid from the chosen source and recorded
        (kind ``auto``). What was renewed."""
        due = self.db.execute(
            "SELECT s.project, s.service, s.subject, s.expires, s.plan, s.auto_payer, s.auto_source, p.type, p.doors,"
            " p.id FROM services s JOIN projects p ON p.id = s.project WHERE s.auto_renew = 1 AND s.expires <= ?"
            " ORDER BY s.project, s.service, s.subject",
            (now,),
        ).fetchall()
        renewed = []
        with self.transaction() as db:
            for project, service, subject, expires, plan, payer, source, *_ in due:
                new = rules.auto_renewal(expires, now)
                if new is None or payer is None:
                    continue
                try:
                    monthly = self._price(self.project(project), service, subject, plan, self.account_services(project))
                except Refused:
                    continue  # the account or apartment is gone, or the service switched off: not renewed
                entries = [(project, service, subject, new, plan)]
                cursor = db.execute(
                    "INSERT INTO orders (payer, items, method, source, amount, status, created, summary, txn, kind,"
                    " paid_at) VALUES (?, ?, 'regular', ?, ?, 'paid', ?, '{}', ?, 'auto', ?)",
                    (payer, json.dumps(entries), source, monthly, now, self._txn(db), now),
                )
                db.execute(
                    "UPDATE services SET expires = ? WHERE project = ? AND service = ? AND subject = ?",
                    (new, project, service, subject),
                )
                order = int(cursor.lastrowid or 0)
                (txn,) = db.execute("SELECT txn FROM orders WHERE id = ?", (order,)).fetchone()
                self._renewal_notices(db, order, txn, entries, now)
                renewed.append((project, service, subject, new))
        return renewed

    # -- notices --------------------------------------------------------------------------------------
    def _renewal_notices(self, db: sqlite3.Connection, order: int, txn: str, entries: list[Any], now: float) -> None:
        """Seed 002 row 10: a renewal is told to the installer, to the PM when "Send Renew Email To PM" is on,
        and (single-family, the installer's email setting on) to the end users."""
        for project in sorted({e[0] for e in entries}):
            p = self.project(project)
            (end_user_email,) = self._one(
                "SELECT end_user_email FROM accounts WHERE id = ?", (p["installer"],), "installer"
            )
            count = sum(1 for e in entries if e[0] == project)
            for role in rules.renewal_recipients(p["type"], p["renew_notices"], bool(end_user_email)):
                recipient = {"installer": p["installer"], "pm": p["pm"], "end_user": "end users"}[role]
                if recipient is None:
                    continue
                db.execute(
                    "INSERT OR IGNORE INTO notices (key, at, project, stage, recipient_role, recipient, text)"
                    " VALUES (?, ?, ?, 0, ?, ?, ?)",
                    (f"renewed:{order}:{project}:{role}", now, project, role, recipient,
                     f"{count} service(s) of {project} renewed (order {txn})"),
                )  # fmt: skip

    def notices_of(self, project: str) -> list[dict[str, Any]]:
        """The notices raised for a site (stage 0: a renewal; 15, 5, 3, 1: days before an expiry)."""
        self.project(project)
        rows = self.db.execute(
            "SELECT at, stage, recipient_role, recipient, text FROM notices WHERE project = ? ORDER BY at, key",
            (project,),
        )
        return [{"at": at, "stage": st, "role": role, "recipient": r, "text": t} for at, st, role, r, t in rows]

    def raise_notices(self, now: float) -> list[dict[str, Any]]:
        """Expiration notices at 15, 5, 3 and 1 days to the right recipients, each once (DOMAIN.md)."""
        raised = []
        rows = self.db.execute(
            "SELECT s.project, s.service, s.subject, s.expires, p.installer, p.pm, p.pm_notices, p.type,"
            " a.end_user_email FROM services s JOIN projects p ON p.id = s.project"
            " JOIN accounts a ON a.id = p.installer WHERE s.expires > ?",
            (now,),
        ).fetchall()
        with self.transaction() as db:
            for project, service, subject, expires, installer, pm, pm_notices, kind, end_user_email in rows:
                left = expires - now
                stages = [d for d in rules.NOTICE_DAYS if left <= d * rules.DAY]
                if not stages:
                    continue
                stage = min(stages)
                for role in rules.expiry_recipients(stage, bool(pm_notices), kind, bool(end_user_email)):
                    recipient = {"installer": installer, "pm": pm, "end_user": subject}[role]
                    key = f"{stage}:{service}:{subject}:{expires}:{role}"
                    text = f"{service} for {subject} in {project} expires in {stage} day(s)"
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO notices (key, at, project, stage, recipient_role, recipient, text)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, now, project, stage, role, recipient, text),
                    )
                    if cursor.rowcount:
                        raised.append(
                            {"project": project, "stage": stage, "role": role, "recipient": recipient, "text": text}
                        )
        return raised

    def set_pm_notices(self, project: str, on: bool) -> None:
        with self.transaction() as db:
            db.execute("UPDATE projects SET pm_notices = ? WHERE id = ?", (int(on), project))

    # -- remote operations ----------------------------------------------------------------------------
    REMOTE_OPS: Final = ("reboot", "resync")

    def ask_device(self, actor: str, mac: str, op: str, now: float) -> str:
        """Queue a remote operation for a device of a site the actor acts for; ``serve`` signs and publishes
        it (commands signer) on its next pass. The command id, to wait for the reply with."""
        if op not in self.REMOTE_OPS:
            raise Refused("bad_op", f"remote operations are {', '.join(self.REMOTE_OPS)}", "DOMAIN.md site settings")
        mac = rules.normal_mac(mac)
        (project,) = self._one("SELECT project FROM devices WHERE mac = ?", (mac,), f"device {mac}")
        if project is None:
            raise Refused("not_in_site", f"{mac} is in no site", "DOMAIN.md")
        self.check_authority(actor, self.project(project))
        ident = f"cmd-{secrets.token_hex(6)}"
        with self.transaction() as db:
            db.execute(
                "INSERT INTO commands (id, device, op, args, by, created) VALUES (?, ?, ?, '{}', ?, ?)",
                (ident, mac, op, actor, now),
            )
        return ident

    def unsent_commands(self, max_age: float, now: float) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Queued commands not yet published and younger than ``max_age``: (id, device, op, args)."""
        rows = self.db.execute(
            "SELECT id, device, op, args FROM commands WHERE sent IS NULL AND created > ? ORDER BY created",
            (now - max_age,),
        )
        return [(i, d, op, json.loads(args)) for i, d, op, args in rows]

    def command_sent(self, ident: str, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE commands SET sent = ? WHERE id = ?", (now, ident))

    def reply(self, ident: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM replies WHERE id = ?", (ident,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))
