"""The ledger's store: its SQLite schema (migrations in ``PRAGMA user_version``), transactions, who is
who, credits and their log, a site's row and whose it is, and the remote operations queued for ``serve``.

Each operation is one transaction; a refusal (:class:`cloud_stub.rules.Refused`) changes nothing. Times are
epoch seconds, passed in by the caller. :class:`cloud_stub.ledger.Ledger` builds on this (sites, paying).
"""

from __future__ import annotations

import json
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
    # 7: phased rollouts (cloud_stub/waves.py): an upgrade that goes out in waves and pauses itself.
    (
        """CREATE TABLE rollouts (
            upgrade TEXT PRIMARY KEY REFERENCES upgrades (id),
            wave_size INTEGER,             -- devices a wave, or
            wave_percent REAL,             -- a share of the upgrade's devices a wave
            wait REAL NOT NULL,            -- seconds between a wave finishing and the next released
            max_failures REAL NOT NULL,    -- share of a wave failed that pauses it (0-1)
            state TEXT NOT NULL,           -- running, paused, cancelled, completed
            released INTEGER NOT NULL,     -- waves released so far
            excused INTEGER NOT NULL,      -- waves resumed past (their failures no longer pause it)
            finished_at REAL,              -- when the last released wave finished
            reason TEXT                    -- why it paused
        )""",
    ),
    # 8: the HTTP API's tokens (cloud_stub/api.py): one account each, kept as their SHA-256.
    (
        """CREATE TABLE api_tokens (
            digest TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts (id),
            created REAL NOT NULL
        )""",
    ),
)


class LedgerCore:
    """The connection, accounts, credits, a site's row, authority over it, and queued remote operations."""

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

    # -- whose site -----------------------------------------------------------------------------------
    def check_authority(self, actor: str, project: dict[str, Any]) -> None:
        """``Refused("not_yours")`` unless ``actor`` may act for ``project`` (rules.check_authority)."""
        role, parent, _ = self.account(actor)
        installer = str(project["installer"])
        if role == "sub_installer":  # its main account's sites
            role, actor = "installer", str(parent)
        rules.check_authority(actor, role, self._chain(installer, 2), installer, project.get("pm"))

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
