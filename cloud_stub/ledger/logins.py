"""The portal's people: each account's login (email, argon2id password hash, Privacy Policy agreement, email
two-factor, failures and lockout), its browser sessions, the one-time secrets mailed to it (two-factor
codes, password links, email confirmations) and its settings pages. The ``logins``, ``portal_sessions``,
``login_codes``, ``account_settings`` and ``portal_secrets`` tables' SQL is here and nowhere else; what
a login may do is decided in ``cloud_stub/operations/logins.py``.

Secrets are kept as SHA-256 digests (a session cookie, a link's token, a code bound to its session): a
copy of the ledger logs nobody in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

logins = sa.Table(
    "logins",
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("email", sa.Text, nullable=False),  # "" until the account gives one at its first login
    sa.Column("email_confirmed", sa.Float),
    sa.Column("password", sa.Text),  # argon2id; NULL until set through its emailed link
    sa.Column("password_set", sa.Float),
    sa.Column("privacy_agreed", sa.Float),
    sa.Column("two_factor", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", sa.Float),
)

portal_sessions = sa.Table(
    "portal_sessions",
    metadata,
    sa.Column("digest", sa.Text, primary_key=True),  # SHA-256 of the cookie's value
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("acting_for", sa.Text, sa.ForeignKey("accounts.id")),  # a distributor in an installer's portal
    sa.Column("stage", sa.Text, nullable=False),  # code, privacy, email, in (operations/logins.py STAGES)
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("seen", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Index("ix_portal_sessions_account", "account"),
)

login_codes = sa.Table(
    "login_codes",
    metadata,
    sa.Column("digest", sa.Text, primary_key=True),  # SHA-256 of the link's token, or of session + code
    sa.Column("purpose", sa.Text, nullable=False),  # code, reset, confirm
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("session", sa.Text),  # a two-factor code's session digest
    sa.Column("email", sa.Text),  # the address a confirmation is for
    sa.Column("expires", sa.Float, nullable=False),
    sa.Column("used", sa.Float),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_login_codes_session", "session"),
    sa.Index("ix_login_codes_account", "account"),
)

account_settings = sa.Table(
    "account_settings",
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),  # billing, customer_service, time_zone, ...
    sa.Column("value", sa.Text, nullable=False),  # JSON
)

portal_secrets = sa.Table(
    "portal_secrets",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class Login(NamedTuple):
    account: str
    email: str
    email_confirmed: float | None
    password: str | None
    password_set: float | None
    privacy_agreed: float | None
    two_factor: bool
    failures: int
    locked_until: float | None


class Session(NamedTuple):
    digest: str
    account: str
    acting_for: str | None
    stage: str
    created: float
    expires: float


class Code(NamedTuple):
    digest: str
    purpose: str
    account: str
    session: str | None
    email: str | None
    expires: float
    used: float | None
    tries: int


_LOGIN = sa.select(*logins.c)
_SESSION = sa.select(
    portal_sessions.c.digest, portal_sessions.c.account, portal_sessions.c.acting_for, portal_sessions.c.stage,
    portal_sessions.c.created, portal_sessions.c.expires,
)  # fmt: skip


def _login(row: Any) -> Login:
    return Login(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], row[8])


class Logins:
    """Logins, sessions, one-time codes and account settings in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    # -- logins ------------------------------------------------------------------------------------------
    def get(self, account: str) -> Login | None:
        row = self.tx.first(_LOGIN.where(logins.c.account == account))
        return None if row is None else _login(row)

    def by_email(self, email: str) -> Login | None:
        """The login whose confirmed address is ``email`` (the oldest, if several share it)."""
        row = self.tx.first(
            _LOGIN.where(sa.func.lower(logins.c.email) == email.lower(), logins.c.email_confirmed.is_not(None))
            .order_by(logins.c.account)
            .limit(1)
        )
        return None if row is None else _login(row)

    def add(self, account: str, email: str, two_factor: bool) -> bool:
        statement = self.tx.insert_ignore(logins).values(account=account, email=email, two_factor=int(two_factor))
        return bool(self.tx.execute(statement).rowcount == 1)

    def remove(self, account: str) -> None:
        """The account's login goes, with its sessions, codes and settings (the account stays: its history
        of payments and notices names it)."""
        for table in (portal_sessions, login_codes, account_settings, logins):
            self.tx.execute(sa.delete(table).where(table.c.account == account))

    def update(self, account: str, **values: Any) -> None:
        self.tx.execute(sa.update(logins).where(logins.c.account == account).values(**values))

    def failed(self, account: str, locked_until: float | None) -> int:
        """One more failure (and the lock, when given); the count after it."""
        values: dict[str, Any] = {"failures": logins.c.failures + 1}
        if locked_until is not None:
            values["locked_until"] = locked_until
        self.tx.execute(sa.update(logins).where(logins.c.account == account).values(**values))
        return int(self.tx.scalar(sa.select(logins.c.failures).where(logins.c.account == account)))

    def of(self, accounts: Sequence[str]) -> dict[str, Login]:
        if not accounts:
            return {}
        return {r[0]: _login(r) for r in self.tx.all(_LOGIN.where(logins.c.account.in_(list(accounts))))}

    # -- sessions ----------------------------------------------------------------------------------------
    def open_session(self, session: Session, now: float) -> None:
        self.tx.execute(
            self.tx.insert(portal_sessions).values(
                digest=session.digest, account=session.account, acting_for=session.acting_for, stage=session.stage,
                created=session.created, seen=now, expires=session.expires,
            )
        )  # fmt: skip

    def session(self, digest: str, now: float) -> Session | None:
        row = self.tx.first(_SESSION.where(portal_sessions.c.digest == digest, portal_sessions.c.expires > now))
        return None if row is None else Session(*row)

    def set_session(self, digest: str, **values: Any) -> None:
        self.tx.execute(sa.update(portal_sessions).where(portal_sessions.c.digest == digest).values(**values))

    def close_session(self, digest: str) -> None:
        self.tx.execute(sa.delete(portal_sessions).where(portal_sessions.c.digest == digest))
        self.tx.execute(sa.delete(login_codes).where(login_codes.c.session == digest))

    def close_sessions(self, account: str, keep: str | None = None) -> int:
        """Every session of ``account`` (but ``keep``) ends: a password changed or reset."""
        condition = portal_sessions.c.account == account
        if keep is not None:
            condition = condition & (portal_sessions.c.digest != keep)
        return int(self.tx.execute(sa.delete(portal_sessions).where(condition)).rowcount)

    def forget_expired(self, now: float) -> int:
        gone = self.tx.execute(sa.delete(portal_sessions).where(portal_sessions.c.expires <= now)).rowcount
        self.tx.execute(sa.delete(login_codes).where(login_codes.c.expires <= now))
        return int(gone)

    # -- one-time codes ----------------------------------------------------------------------------------
    def add_code(self, code: Code) -> None:
        self.tx.execute(self.tx.insert(login_codes).values(**code._asdict()))

    def code(self, digest: str) -> Code | None:
        row = self.tx.first(sa.select(*login_codes.c).where(login_codes.c.digest == digest))
        return None if row is None else Code(*row)

    def session_code(self, session: str) -> Code | None:
        """The newest unused two-factor code of a session."""
        row = self.tx.first(
            sa.select(*login_codes.c)
            .where(login_codes.c.session == session, login_codes.c.purpose == "code", login_codes.c.used.is_(None))
            .order_by(login_codes.c.expires.desc())
            .limit(1)
        )
        return None if row is None else Code(*row)

    def use_code(self, digest: str, now: float) -> bool:
        """Mark a code used, once: False if it was used already (two requests racing with one link)."""
        result = self.tx.execute(
            sa.update(login_codes).where(login_codes.c.digest == digest, login_codes.c.used.is_(None)).values(used=now)
        )
        return bool(result.rowcount == 1)

    def tried(self, digest: str) -> int:
        self.tx.execute(
            sa.update(login_codes).where(login_codes.c.digest == digest).values(tries=login_codes.c.tries + 1)
        )
        return int(self.tx.scalar(sa.select(login_codes.c.tries).where(login_codes.c.digest == digest)))

    def void_codes(self, account: str, purpose: str) -> None:
        """Earlier unused codes of one purpose stop working when a new one is sent."""
        self.tx.execute(
            sa.update(login_codes)
            .where(login_codes.c.account == account, login_codes.c.purpose == purpose, login_codes.c.used.is_(None))
            .values(used=0.0)
        )

    # -- settings pages ----------------------------------------------------------------------------------
    def setting(self, account: str, name: str) -> Any:
        value = self.tx.scalar(
            sa.select(account_settings.c.value).where(
                account_settings.c.account == account, account_settings.c.name == name
            )
        )
        return None if value is None else json.loads(value)

    def flagged(self, accounts: Sequence[str], name: str) -> set[str]:
        """Which of ``accounts`` have the setting ``name`` set true (one query for them all)."""
        if not accounts:
            return set()
        rows = self.tx.all(
            sa.select(account_settings.c.account, account_settings.c.value).where(
                account_settings.c.name == name, self.tx.among(account_settings.c.account, list(accounts))
            )
        )
        return {account for account, value in rows if json.loads(value) is True}

    def set_setting(self, account: str, name: str, value: Any) -> None:
        text = json.dumps(value, sort_keys=True)
        self.tx.execute(
            self.tx.upsert(account_settings, ["account", "name"], {"value": text}).values(
                account=account, name=name, value=text
            )
        )

    # -- the portal's own secret (CSRF tokens) -----------------------------------------------------------
    def secret(self, name: str, fresh: str) -> str:
        """The secret called ``name``: ``fresh`` if none was kept yet (the first process to ask keeps it)."""
        self.tx.execute(self.tx.insert_ignore(portal_secrets).values(name=name, value=fresh))
        return str(self.tx.scalar(sa.select(portal_secrets.c.value).where(portal_secrets.c.name == name)))
