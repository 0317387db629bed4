"""Accounts and their API tokens: who is who (DOMAIN.md "Who is who"), the chain of parents above each
account, and the bearer tokens of the HTTP API (kept as SHA-256 digests). The ``accounts`` and
``api_tokens`` tables' SQL is here and nowhere else; who may act for what is decided in
``cloud_stub/operations/authority.py`` from what this module reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from cloud_stub.errors import Refused
from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),  # distributor, sub_distributor, installer, sub_installer, pm
    sa.Column("parent", sa.Text, sa.ForeignKey("accounts.id")),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("permission", sa.Text, nullable=False),  # "Pay by Installer": none, regular, credit
    sa.Column("end_user_email", sa.Integer, nullable=False, server_default="1"),  # Single-Family Email Setting
    sa.Index("ix_accounts_parent", "parent"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("digest", sa.Text, primary_key=True),  # SHA-256 of the token: the token itself is never kept
    sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("id", sa.Text, nullable=False),  # the handle it is listed and revoked by
    sa.Column("expires", sa.Float, nullable=False),
    sa.Column("revoked", sa.Float),
    sa.Column("label", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_api_tokens_id", "id", unique=True),
    sa.Index("ix_api_tokens_account", "account"),
)


class Account(NamedTuple):
    id: str
    role: str
    parent: str | None
    name: str
    permission: str
    end_user_email: bool


class Token(NamedTuple):
    id: str
    account: str
    label: str
    created: float
    expires: float
    revoked: float | None


_ACCOUNT = sa.select(
    accounts.c.id, accounts.c.role, accounts.c.parent, accounts.c.name, accounts.c.permission,
    accounts.c.end_user_email,
)  # fmt: skip


# The statements every request asks, built once with their parameters bound by name: SQLAlchemy then keeps
# their compiled form and cache key with them instead of making both again per request (~0.3 ms each).
_BY_ID = _ACCOUNT.where(accounts.c.id == sa.bindparam("ident"))
_PARENT = sa.select(accounts.c.parent).where(accounts.c.id == sa.bindparam("ident"))
_BY_TOKEN = _ACCOUNT.join_from(accounts, api_tokens, api_tokens.c.account == accounts.c.id).where(
    api_tokens.c.digest == sa.bindparam("digest"),
    api_tokens.c.revoked.is_(None),
    api_tokens.c.expires > sa.bindparam("now", type_=sa.Float),
)


def _account(row: Any) -> Account:
    return Account(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


class Accounts:
    """The accounts of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def get(self, ident: str) -> Account | None:
        row = self.tx.first(_BY_ID, {"ident": ident})
        return None if row is None else _account(row)

    def require(self, ident: str) -> Account:
        """The account, or ``Refused("not_found")``."""
        found = self.get(ident)
        if found is None:
            raise Refused("not_found", f"no account {ident}", "ledger")
        return found

    def add(self, ident: str, role: str, name: str, parent: str | None, permission: str) -> bool:
        """A new account; False when the id is taken."""
        result = self.tx.execute(
            self.tx.insert_ignore(accounts).values(id=ident, role=role, parent=parent, name=name, permission=permission)
        )
        return result.rowcount == 1

    def rename(self, ident: str, name: str) -> None:
        self.tx.execute(sa.update(accounts).where(accounts.c.id == ident).values(name=name))

    def set_permission(self, ident: str, permission: str) -> None:
        self.tx.execute(sa.update(accounts).where(accounts.c.id == ident).values(permission=permission))

    def set_end_user_email(self, ident: str, on: bool) -> None:
        self.tx.execute(sa.update(accounts).where(accounts.c.id == ident).values(end_user_email=int(on)))

    def chain(self, ident: str, depth: int = 3) -> tuple[str, ...]:
        """The parents above ``ident``, nearest first (at most ``depth``)."""
        found: list[str] = []
        above = ident
        for _ in range(depth):
            parent = self.tx.scalar(_PARENT, {"ident": above})
            if parent is None:
                break
            found.append(parent)
            above = parent
        return tuple(found)

    def installers_under(self, ident: str) -> list[str]:
        """The installers directly under ``ident`` and under its sub-distributors."""
        subs = sa.select(accounts.c.id).where(accounts.c.parent == ident, accounts.c.role == "sub_distributor")
        rows = self.tx.all(
            sa.select(accounts.c.id).where(
                accounts.c.role == "installer", sa.or_(accounts.c.parent == ident, accounts.c.parent.in_(subs))
            )
        )
        return [r[0] for r in rows]

    def under(self, ident: str) -> list[Account]:
        """The accounts directly under ``ident``."""
        return [_account(r) for r in self.tx.all(_ACCOUNT.where(accounts.c.parent == ident).order_by(accounts.c.id))]

    def end_user_email(self, ident: str) -> bool:
        return bool(self.tx.scalar(sa.select(accounts.c.end_user_email).where(accounts.c.id == ident)))

    # -- API tokens -----------------------------------------------------------------------------------
    def add_token(self, digest: str, handle: str, account: str, now: float, expires: float, label: str) -> None:
        self.tx.execute(
            sa.insert(api_tokens).values(
                digest=digest, id=handle, account=account, created=now, expires=expires, label=label
            )
        )

    def token_account(self, digest: str, now: float) -> Account | None:
        """The account of a token that is neither revoked nor expired (one query: asked on every request)."""
        row = self.tx.first(_BY_TOKEN, {"digest": digest, "now": now})
        return None if row is None else _account(row)

    def tokens(self, account: str | None) -> Sequence[Token]:
        query = sa.select(
            api_tokens.c.id, api_tokens.c.account, api_tokens.c.label, api_tokens.c.created, api_tokens.c.expires,
            api_tokens.c.revoked,
        ).order_by(api_tokens.c.created, api_tokens.c.id)  # fmt: skip
        if account is not None:
            query = query.where(api_tokens.c.account == account)
        return [Token(*row) for row in self.tx.all(query)]

    def revoke_token(self, handle: str, now: float) -> bool:
        """Revoke a token by its handle; False when there is none not yet revoked."""
        result = self.tx.execute(
            sa.update(api_tokens).where(api_tokens.c.id == handle, api_tokens.c.revoked.is_(None)).values(revoked=now)
        )
        return result.rowcount == 1
