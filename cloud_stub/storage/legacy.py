"""Ledgers from before Alembic: their schema versions (SQLite's ``PRAGMA user_version``, 1 to 8), kept
verbatim so that ``smartplus-cloud migrate`` can bring any such file to version 8, which is Alembic's
first revision (``0001``); the revisions after it are Alembic's (``migrations/versions/``). Never edited:
persisted versions are never renumbered."""

from __future__ import annotations

from typing import Final

from sqlalchemy.engine import Connection

LAST: Final = 8  # the version Alembic's baseline (0001) describes

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


def upgrade(connection: Connection, version: int) -> None:
    """Run the steps after ``version`` up to :data:`LAST`, in the caller's transaction."""
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in statements:
            connection.exec_driver_sql(statement)
        connection.exec_driver_sql(f"PRAGMA user_version = {number}")
