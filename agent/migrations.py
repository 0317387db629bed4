"""Schema migrations of the agent's database, versioned from the first table.

``PRAGMA user_version`` is the number of migrations applied. Each migration runs in its own
transaction together with the version bump, so a crash leaves the schema at one version or the next.
Migrations are only ever appended: a released one is never edited or renumbered.
"""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: signed documents in force, what is derived from them (what the device enforces from on
    #    start, without parsing the tokens again), and the trusted clock's anchor.
    (
        """CREATE TABLE documents (
            typ TEXT PRIMARY KEY,          -- trust | entitlements | firmware-job | command
            seq INTEGER NOT NULL,          -- the high-water mark of this typ
            digest BLOB NOT NULL,          -- SHA-256 of header.payload: tells a redelivery apart
            iat INTEGER NOT NULL,
            exp INTEGER NOT NULL,
            kid TEXT NOT NULL,
            token TEXT NOT NULL,           -- the compact JWS as accepted
            accepted_at REAL NOT NULL      -- trusted time of acceptance
        )""",
        """CREATE TABLE project (         -- derived from the entitlements document in force
            doc_seq INTEGER NOT NULL,
            id TEXT NOT NULL,
            type TEXT NOT NULL,
            created TEXT,                  -- ISO date, or NULL when the document gives none
            doors TEXT NOT NULL,           -- JSON array, the free door first
            free_apps INTEGER NOT NULL,
            settings TEXT NOT NULL         -- JSON object
        )""",
        """CREATE TABLE services (        -- derived from the entitlements document in force
            doc_seq INTEGER NOT NULL,
            service TEXT NOT NULL,
            subject TEXT NOT NULL,
            expires REAL NOT NULL,
            plan TEXT
        )""",
        """CREATE TABLE signing_keys (    -- derived from the trust document in force
            trust_seq INTEGER NOT NULL,
            kid TEXT PRIMARY KEY,
            x BLOB NOT NULL,
            not_after REAL NOT NULL
        )""",
        """CREATE TABLE clock (           -- the trusted clock's persisted floor
            id INTEGER PRIMARY KEY CHECK (id = 1),
            trusted_at REAL NOT NULL,
            boot_id TEXT,
            at_monotonic REAL NOT NULL
        )""",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
