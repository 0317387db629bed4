"""Schema migrations of the agent's database, versioned from the first table.

``PRAGMA user_version`` is the number of migrations applied. Each migration runs in its own
transaction together with the version bump, so a crash leaves the schema at one version or the next.
Migrations are only ever appended: a released one is never edited or renumbered.

**A rollback to older firmware** (docs/firmware.md "A database that survives a rollback"): each
migration says, in :data:`READABLE_FROM`, the oldest schema an agent must know to go on using the
database after it. A migration that only adds (a table, a column with a default) keeps the number
before it: an older agent ignores what it does not know. One that changes what an older agent would
misread raises it to its own number. The value in force is kept in the database (``schema_compat``,
written with each migration), so that an agent that does not know the newer migrations can read it.
Before any migration that raises it above the database's schema, the database is copied to
``agent.db.schema-<n>`` (``agent/store/database.py``); an older agent that finds a database it may
not use restores that copy and carries over what happened since (``agent/store/rollback.py``).
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
    # 2: the sync daemon: the outbox of everything the device sends, its counters, site settings,
    #    credentials and door actions kept for the drivers, commands answered, notices raised.
    (
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, -- queue order; never reused, so the pump's cursor holds
            topic TEXT NOT NULL,           -- events | replies
            seq INTEGER UNIQUE,            -- events: the event's seq; replies: NULL
            event_id TEXT UNIQUE,          -- events: the UUIDv7; replies: NULL
            type TEXT NOT NULL,            -- the event type, or reply
            kind TEXT NOT NULL,
            source TEXT,
            priority INTEGER NOT NULL,     -- eviction class: lowest goes first
            gate TEXT,                     -- the decision that must allow it out (report_alarm...), or NULL
            held_since REAL,               -- trusted time it was first held back
            created REAL NOT NULL,
            sent_at REAL,                  -- PUBACKed: out of the queue, kept for replay (outbox.keep_sent)
            body TEXT NOT NULL             -- JSON object, without seq and held_since
        )""",
        "CREATE INDEX outbox_eviction ON outbox (priority, id) WHERE sent_at IS NULL",
        "CREATE INDEX outbox_gate ON outbox (gate, id) WHERE gate IS NOT NULL AND sent_at IS NULL",
        "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
        "CREATE INDEX outbox_sent ON outbox (id) WHERE sent_at IS NOT NULL",
        """CREATE TABLE counters (        -- next_seq, evicted:<type>, ...
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )""",
        """CREATE TABLE settings (        -- site settings set by command (DOMAIN.md "Site settings")
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,           -- JSON
            issued_at REAL NOT NULL        -- the command's iat: the latest of command and document wins
        )""",
        """CREATE TABLE credentials (     -- access methods issued to this device, for the drivers
            door TEXT NOT NULL,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,            -- pin | card | face | qr | ble
            body TEXT NOT NULL,            -- JSON, as the command gave it
            issued_at REAL NOT NULL,
            PRIMARY KEY (door, id)
        )""",
        """CREATE TABLE door_actions (    -- remote door operations waiting for the drivers
            id INTEGER PRIMARY KEY,
            command_id TEXT NOT NULL,
            door TEXT NOT NULL,
            action TEXT NOT NULL,
            body TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        """CREATE TABLE commands (        -- each command id is answered once; a retry gets the same reply
            id TEXT PRIMARY KEY,
            op TEXT NOT NULL,
            reply TEXT NOT NULL,
            handled_at REAL NOT NULL
        )""",
        """CREATE TABLE notices (         -- expiry notices already raised as events
            key TEXT PRIMARY KEY,
            raised_at REAL NOT NULL
        )""",
    ),
    # 3: firmware jobs and their state (firmware/machine.py); one row per job, the history kept.
    (
        """CREATE TABLE firmware_jobs (
            job_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,          -- the firmware-job document's seq
            state TEXT NOT NULL,           -- firmware/machine.py State
            claims TEXT NOT NULL,          -- the verified job, JSON
            target TEXT,                   -- the slot it installs into, once chosen
            transitions INTEGER NOT NULL,  -- how many; a cap catches loops
            reason TEXT,                   -- why it failed, was refused or rolled back
            updated REAL
        )""",
    ),
    # 4: hostile input and key scopes (issue 12): payloads whose handling failed (not handled again),
    #    the document types each signing key may sign, the root keys a trust document rotated to, and
    #    the part of the clock's floor that signed documents vouch for.
    (
        """CREATE TABLE poison_messages (  -- payloads that made the device fail: reported once, then skipped
            digest BLOB PRIMARY KEY,       -- SHA-256 of the payload
            typ TEXT NOT NULL,             -- the topic's document type
            error TEXT NOT NULL,           -- the exception, for the operator
            failed_at REAL NOT NULL
        )""",
        "ALTER TABLE signing_keys ADD COLUMN typs TEXT",  # JSON array, or NULL: every type (PROTOCOL.md "Key scopes")
        """CREATE TABLE roots (            -- root keys set by a trust document ("Root rotation"); none: the config's
            kid TEXT PRIMARY KEY,
            x BLOB NOT NULL,
            trust_seq INTEGER NOT NULL     -- the trust document that set them
        )""",
        # The floor's signed part: the latest accepted iat, carried on the same monotonic reading as
        # trusted_at. generation counts corrections of a floor a wall clock had raised (agent/clock.py).
        "ALTER TABLE clock ADD COLUMN signed_at REAL NOT NULL DEFAULT 0",
        "ALTER TABLE clock ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
    ),
    # 5: what an older agent may do with this database after a firmware rollback (module docstring).
    ("CREATE TABLE schema_compat (id INTEGER PRIMARY KEY CHECK (id = 1), readable_from INTEGER NOT NULL)",),
    # 6: the credential reader's index entry, packed beside each credential (agent/local/credentials.py), so
    #    that 100,000 of them load without parsing their bodies. An older agent that changes a body leaves the
    #    entry stale: the trigger clears it, and the loader packs that row from its body.
    (
        "ALTER TABLE credentials ADD COLUMN lookup BLOB",
        "ALTER TABLE credentials ADD COLUMN held BLOB",
        """CREATE TRIGGER credentials_repack AFTER UPDATE OF body ON credentials
           WHEN NEW.held IS OLD.held
           BEGIN UPDATE credentials SET lookup = NULL, held = NULL WHERE rowid = NEW.rowid; END""",
    ),
)

# The oldest schema an agent must know to use the database after each migration (module docstring).
# 4 is breaking: an agent before key scopes would store keys without them (NULL: every type).
READABLE_FROM: Final[tuple[int, ...]] = (1, 2, 3, 4, 4, 4)

SCHEMA_VERSION: Final = len(MIGRATIONS)
