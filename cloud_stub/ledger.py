"""The subscription ledger in SQLite: who is who, projects and what they hold, orders, credits, notices.

Each operation is one transaction; a refusal (:class:`cloud_stub.rules.Refused`) changes nothing.
Payment providers are simulated (an order is paid when asked to be); the rules are the vendor's
(``cloud_stub/rules.py``). Times are epoch seconds, passed in by the caller (the CLI passes the
clock; the tests pass what they need).
"""

from __future__ import annotations

import json
import math
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
        if role in rules.PAY_PERMISSIONS and permission not in rules.PAY_PERMISSIONS[role]:
            raise Refused("bad_permission", f"a {role} may have {rules.PAY_PERMISSIONS[role]}", "seed 002 line 247")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO accounts (id, role, parent, name, permission) VALUES (?, ?, ?, ?, ?)",
                (ident, role, parent, name, permission),
            )

    def grant(self, granter: str, account: str, permission: str) -> None:
        """Distributors grant installers; installers grant PMs (seed 001 lines 54-55)."""
        role, parent = self._one("SELECT role, parent FROM accounts WHERE id = ?", (account,), f"account {account}")
        if parent != granter:
            raise Refused("not_yours", f"{account} is not under {granter}", "seed 001 lines 54-55")
        if permission not in rules.PAY_PERMISSIONS.get(role, ()):
            raise Refused("bad_permission", f"a {role} may have {rules.PAY_PERMISSIONS.get(role)}", "seed 002 line 247")
        with self.transaction() as db:
            db.execute("UPDATE accounts SET permission = ? WHERE id = ?", (permission, account))

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
        """Credits go down the chain: to sub-distributors, installers and PMs (seed 000 line 193)."""
        (parent,) = self._one("SELECT parent FROM accounts WHERE id = ?", (receiver,), f"account {receiver}")
        if parent != giver:
            raise Refused("not_yours", f"{receiver} is not under {giver}", "seed 000 line 193")
        if amount <= 0:
            raise Refused("bad_amount", "allocate at least one credit", "seed 000 line 199")
        with self.transaction() as db:
            self._credit(db, giver, -amount, now, f"allocated to {receiver}")
            return self._credit(db, receiver, amount, now, f"allocated by {giver}")

    def credit_log(self, account: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT at, amount, remaining, note FROM credit_log WHERE account = ? ORDER BY id", (account,)
        )
        return [
            {"at": at, "amount": amount, "remaining": remaining, "note": note} for at, amount, remaining, note in rows
        ]

    # -- projects -----------------------------------------------------------------------------------
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
    ) -> None:
        if project_type not in rules.CATALOGUE:
            raise Refused("bad_type", f"{project_type!r} is not a project type", "DOMAIN.md project types")
        for who, role in ((installer, "installer"), (pm, "pm")):
            if who is None:
                continue
            found = self.db.execute("SELECT role FROM accounts WHERE id = ?", (who,)).fetchone()
            if found is None or found[0] != role:
                raise ValueError(f"--{role} {who}: no {role} account of that name")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO projects (id, type, installer, pm, created, timezone, free_apps, doors)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ident, project_type, installer, pm, created.isoformat(), timezone, free_apps, json.dumps(list(doors))),
            )
            if project_type == "community":  # "With Indoor Monitor" is on by default (seed 003)
                db.execute(
                    "INSERT INTO services (project, service, subject) VALUES (?, 'with_indoor_monitor', 'project')",
                    (ident,),
                )

    def project(self, ident: str) -> dict[str, Any]:
        row = self._one(
            "SELECT id, type, installer, pm, created, timezone, free_apps, doors, settings, pm_notices"
            " FROM projects WHERE id = ?",
            (ident,),
            f"project {ident}",
        )
        keys = ("id", "type", "installer", "pm", "created", "timezone", "free_apps", "doors", "settings", "pm_notices")
        project = dict(zip(keys, row, strict=True))
        project["doors"], project["settings"] = json.loads(project["doors"]), json.loads(project["settings"])
        project["created"] = date.fromisoformat(project["created"])
        return project

    def add_apartment(self, project: str, ident: str, name: str) -> None:
        if self.project(project)["type"] != "community":
            raise Refused("not_community", "apartments belong to community projects", "seed 003")
        with self.transaction() as db:
            db.execute("INSERT INTO apartments (project, id, name) VALUES (?, ?, ?)", (project, ident, name))

    def add_app_account(self, project: str, ident: str, role: str, name: str, apartment: str | None = None) -> str:
        """An app account; the service that pays for it (master: app; family beyond the project's free
        number: additional_app; pm: pm_app; personnel: personnel_app; admin: admin_app)."""
        p = self.project(project)
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
            family = db.execute(
                "SELECT COUNT(*) FROM app_accounts WHERE project = ? AND role = 'family'", (project,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO app_accounts (project, id, apartment, role, name) VALUES (?, ?, ?, ?, ?)",
                (project, ident, apartment, role, name),
            )
        if role == "family":  # DOMAIN.md: family members beyond the project's free number are Additional App
            return "app" if family < p["free_apps"] else "additional_app"
        return {"master": "app", "pm": "pm_app", "personnel": "personnel_app", "admin": "admin_app"}[role]

    def add_device(self, mac: str, distributor: str, model: str, project: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO devices (mac, distributor, project, model) VALUES (?, ?, ?, ?)",
                (mac, distributor, project, model),
            )

    def devices(self, project: str | None = None) -> list[tuple[str, str, str | None]]:
        if project is None:
            return list(self.db.execute("SELECT mac, model, project FROM devices ORDER BY mac"))
        return list(
            self.db.execute("SELECT mac, model, project FROM devices WHERE project = ? ORDER BY mac", (project,))
        )

    def switch(self, project: str, service: str, subject: str = "project", on: bool = True) -> None:
        """Service-based charging: switch a service at community or apartment level (seed 003). PM App
        is forced on and locked while any PM App is active."""
        p = self.project(project)
        rules.offer(p["type"], service)
        if service == "pm_app" and not on:
            active = self.db.execute(
                "SELECT 1 FROM services WHERE project = ? AND service = 'pm_app' AND expires IS NOT NULL", (project,)
            ).fetchone()
            if active is not None:
                raise Refused("pm_app_locked", "PM App is forced on and locked while any PM App is active", "seed 003")
        with self.transaction() as db:
            if on:
                db.execute(
                    "INSERT INTO services (project, service, subject) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (project, service, subject),
                )
            else:
                db.execute(
                    "DELETE FROM services WHERE project = ? AND service = ? AND subject = ?",
                    (project, service, subject),
                )

    def services(self, project: str) -> list[dict[str, Any]]:
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
        """Seed 000 lines 147-149: the chosen sites (or all) and service types (or all): every service
        they hold or have switched on, as quote items."""
        chosen = []
        for project in projects:
            for entry in self.services(project):
                if services is None or entry["service"] in services:
                    chosen.append((project, entry["service"], entry["subject"]))
        if not chosen:
            raise Refused(
                "nothing_selected", "the chosen sites hold none of the chosen services", "seed 000 lines 147-149"
            )
        return chosen

    # -- whose site -----------------------------------------------------------------------------------
    def check_authority(self, actor: str, project: dict[str, Any]) -> None:
        """``Refused("not_yours")`` unless ``actor`` may act for ``project`` (rules.check_authority)."""
        role, parent = self._one("SELECT role, parent FROM accounts WHERE id = ?", (actor,), f"account {actor}")
        installer = str(project["installer"])
        if role == "sub_installer":  # its main account's sites
            role, actor = "installer", str(parent)
        chain: list[str | None] = []
        above = installer
        for _ in range(2):
            row = self.db.execute("SELECT parent FROM accounts WHERE id = ?", (above,)).fetchone()
            if row is None or row[0] is None:
                break
            chain.append(row[0])
            above = row[0]
        rules.check_authority(actor, role, tuple(chain), installer, project.get("pm"))

    # -- paying -------------------------------------------------------------------------------------
    def quote(
        self,
        payer: str,
        items: list[tuple[str, str, str]],
        now: float,
        *,
        months: int | None = None,
        renew_to: float | None = None,
        plan: str | None = None,
    ) -> dict[str, Any]:
        """The price first (seed 000 lines 147-149): what paying for ``items`` (project, service, subject) costs,
        and the new expiry of each. Regular payment renews for ``months``; credit payment renews *to* a date."""
        role, permission = self._one("SELECT role, permission FROM accounts WHERE id = ?", (payer,), f"account {payer}")
        projects = {p: self.project(p) for p, _, _ in items}
        methods = {rules.payment_method(p["type"], p["created"]) for p in projects.values()}
        if len(methods) != 1:
            raise Refused("mixed_methods", "one order pays with one method", "seed 000 lines 115-133")
        method = methods.pop()
        if method == "none":
            raise Refused(
                "no_payment_needed", "commercial projects created before 2025-06-01 need no payment", "DOMAIN.md Paying"
            )
        rules.check_permission(role, permission, method)
        for p in projects.values():
            self.check_authority(payer, p)  # whose money pays for whose site (after: may it pay at all)
        priced, amount = [], 0
        summary = {"doors": 0, "personnel_apps": 0, "admin_apps": 0, "premium_features": 0, "apps": 0}
        for project, service, subject in items:
            p = projects[project]
            offer = rules.offer(p["type"], service)
            rules.check_subject(offer, subject, p["doors"])
            current = self.db.execute(
                "SELECT expires FROM services WHERE project = ? AND service = ? AND subject = ?",
                (project, service, subject),
            ).fetchone()
            expires = current[0] if current else None
            if method == "credit":
                if renew_to is None:
                    raise Refused("renew_to_needed", "credit renewal names a 'renew to' date", "seed 001 line 220")
                new = renew_to
                periods = max(1, math.ceil((renew_to - max(expires or now, now)) / (30 * rules.DAY)))
                if renew_to <= max(expires or now, now):
                    raise Refused("renew_to_past", "'renew to' must be after the current expiry", "seed 001 line 220")
            else:
                if months is None:
                    raise Refused("length_needed", "manual renewal names a length", "seed 000 line 161")
                new = rules.renewed_expiry(expires, now, rules.months(months))
                periods = months
            amount += offer.monthly * periods
            priced.append((project, service, subject, new, plan))
            key = {"door": "doors", "personnel_app": "personnel_apps", "admin_app": "admin_apps"}.get(service)
            if key is None:
                key = "apps" if service in ("app", "additional_app", "pm_app") else "premium_features"
            summary[key] += 1
        return {"method": method, "amount": amount, "items": priced, "summary": summary, "renew_to": renew_to}

    def order(self, payer: str, quote: dict[str, Any], source: str, now: float) -> int:
        """A pending order for a quote; it must be paid within 15 minutes."""
        rules.check_source(quote["method"], source)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO orders (payer, items, method, source, amount, status, created, summary)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    payer,
                    json.dumps(quote["items"]),
                    quote["method"],
                    source,
                    quote["amount"],
                    now,
                    json.dumps(quote["summary"]),
                ),
            )
            return int(cursor.lastrowid or 0)

    def pay(self, order: int, now: float, *, auto_renew: bool = False) -> dict[str, Any]:
        """Pay a pending order (providers simulated); the services are extended in the same transaction."""
        payer, items, method, source, amount, status, created = self._one(
            "SELECT payer, items, method, source, amount, status, created FROM orders WHERE id = ?",
            (order,),
            f"order {order}",
        )
        if status != "pending":
            raise Refused("not_pending", f"order {order} is {status}", "DOMAIN.md Paying")
        if rules.order_expired(created, now):
            with self.transaction() as db:
                db.execute("UPDATE orders SET status = 'expired' WHERE id = ?", (order,))
            raise Refused("order_expired", "a pending order must be paid within 15 minutes", "DOMAIN.md Paying")
        entries = json.loads(items)
        if auto_renew:
            for project, *_ in entries:
                p = self.project(project)
                rules.check_auto_renew(p["type"], p["created"], source)
        with self.transaction() as db:
            if method == "credit":
                self._credit(db, payer, -amount, now, f"order {order}")
            for project, service, subject, new, plan in entries:
                db.execute(
                    "INSERT INTO services (project, service, subject, expires, plan, auto_renew, auto_source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, service, subject) DO UPDATE SET"
                    " expires = excluded.expires, plan = COALESCE(excluded.plan, services.plan),"
                    " auto_renew = excluded.auto_renew, auto_source = excluded.auto_source",
                    (project, service, subject, new, plan, int(auto_renew), source if auto_renew else None),
                )
            db.execute("UPDATE orders SET status = 'paid' WHERE id = ?", (order,))
        return {"order": order, "paid": amount, "method": method, "projects": sorted({e[0] for e in entries})}

    def auto_renew(self, now: float) -> list[tuple[str, str, str, float]]:
        """Every 30 days: each auto-renewing service's upcoming expiry moves on by 30 days (seed 000 line
        159), charged to the project's installer (simulated). What was renewed."""
        due = self.db.execute(
            "SELECT project, service, subject, expires FROM services WHERE auto_renew = 1 AND expires <= ?",
            (now + rules.AUTO_RENEW_PERIOD,),
        ).fetchall()
        renewed = []
        with self.transaction() as db:
            for project, service, subject, expires in due:
                new = expires + rules.AUTO_RENEW_PERIOD
                db.execute(
                    "UPDATE services SET expires = ? WHERE project = ? AND service = ? AND subject = ?",
                    (new, project, service, subject),
                )
                renewed.append((project, service, subject, new))
        return renewed

    # -- notices --------------------------------------------------------------------------------------
    def raise_notices(self, now: float) -> list[dict[str, Any]]:
        """Expiration notices at 15, 5, 3 and 1 days to the right recipients, each once (DOMAIN.md)."""
        raised = []
        rows = self.db.execute(
            "SELECT s.project, s.service, s.subject, s.expires, p.installer, p.pm, p.pm_notices"
            " FROM services s JOIN projects p ON p.id = s.project WHERE s.expires > ?",
            (now,),
        ).fetchall()
        with self.transaction() as db:
            for project, service, subject, expires, installer, pm, pm_notices in rows:
                left = expires - now
                stages = [d for d in rules.NOTICE_DAYS if left <= d * rules.DAY]
                if not stages:
                    continue
                stage = min(stages)
                for role in rules.notice_recipients(stage, bool(pm_notices)):
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
