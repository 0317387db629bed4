"""Accounts and API tokens: who is who (DOMAIN.md "Who is who"), "Pay by Installer" (seed 001 lines 54-55),
the Single-Family Email Setting (seed 002 line 195), and the HTTP API's bearer tokens."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Ident, Request, Result, Text, given, not_both

DAY: Final = 86_400.0
TOKEN_DAYS: Final = 90  # a token's life unless told otherwise
MAX_TOKEN_DAYS: Final = 366
Role = Literal["distributor", "sub_distributor", "installer", "sub_installer", "pm"]
Permission = Literal["none", "regular", "credit"]

# Who may be under whom (DOMAIN.md "Who is who").
PARENTS: Final[dict[str, tuple[str | None, ...]]] = {
    "distributor": (None,),
    "sub_distributor": ("distributor",),
    "installer": ("distributor", "sub_distributor"),
    "sub_installer": ("installer",),
    "pm": ("installer",),
}


class AddAccount(Request):
    id: Ident
    role: Role
    name: Text
    parent: Ident | None = None
    permission: Permission = "none"


class AccountView(Result):
    id: str
    role: str
    parent: str | None
    name: str
    permission: str


def add_account(uow: UnitOfWork, actor: Actor, request: AddAccount) -> AccountView:
    """The operator adds a distributor, sub-distributor, installer, sub-installer or property manager."""
    authority.operator_only(actor, "adding accounts")
    if request.id == authority.OPERATOR.id:
        raise Refused("reserved", f"{request.id!r} names the platform operator", "docs/cloud.md")
    parent_role = None if request.parent is None else uow.accounts.require(request.parent).role
    if parent_role not in PARENTS[request.role]:
        raise Refused(
            "bad_parent", f"a {request.role} cannot be under a {parent_role or 'nobody'}", "DOMAIN.md who is who"
        )
    if request.role == "pm" and request.permission != "none":
        rules.check_pm_grant()
    if request.role in rules.PAY_PERMISSIONS and request.permission not in rules.PAY_PERMISSIONS[request.role]:
        raise Refused(
            "bad_permission", f"a {request.role} may have {rules.PAY_PERMISSIONS[request.role]}", "seed 002 line 247"
        )
    if not uow.accounts.add(request.id, request.role, request.name, request.parent, request.permission):
        raise Refused("already_exists", f"there is an account {request.id} already", "ledger")
    authority.audit(uow, actor, "account_added", request.id, role=request.role, parent=request.parent)
    return AccountView(id=request.id, role=request.role, parent=request.parent, name=request.name,
                       permission=request.permission)  # fmt: skip


class Grant(Request):
    account: Ident
    permission: Permission


def grant(uow: UnitOfWork, actor: Actor, request: Grant) -> AccountView:
    """A distributor grants an installer under it "Pay by Installer" (seed 001 lines 54-55); a PM's
    permission is its site's "Pay by PM" (``site-set``)."""
    found = authority.child(uow, actor, request.account)
    if found.role == "pm":
        rules.check_pm_grant()
    if request.permission not in rules.PAY_PERMISSIONS.get(found.role, ()):
        raise Refused(
            "bad_permission", f"a {found.role} may have {rules.PAY_PERMISSIONS.get(found.role)}", "seed 002 line 247"
        )
    uow.accounts.set_permission(found.id, request.permission)
    authority.audit(uow, actor, "permission_granted", found.id, permission=request.permission)
    return AccountView(id=found.id, role=found.role, parent=found.parent, name=found.name,
                       permission=request.permission)  # fmt: skip


class EmailSetting(Request):
    on: bool


def email_setting(uow: UnitOfWork, actor: Actor, request: EmailSetting) -> str:
    """An installer's Single-Family Email Setting (seed 002 line 195): renewal and expiration emails to the
    end users of its single-family sites; a sub-installer sets its main installer's, whose data it shares."""
    if actor.principal_role != "installer":
        raise Refused("not_installer", "the Single-Family Email Setting is an installer's", "seed 002 line 195")
    uow.accounts.set_end_user_email(actor.principal, request.on)
    return f"single-family email {'on' if request.on else 'off'}"


# -- API tokens -----------------------------------------------------------------------------------------
class CreateToken(Request):
    """A token for ``account``, valid ``days`` from now (90 by default) or until ``expires``, not both."""

    model_config = ConfigDict(json_schema_extra=not_both(given("days"), given("expires")))

    account: Ident
    days: Annotated[int, Field(ge=1, le=MAX_TOKEN_DAYS)] | None = None
    expires: AwareDatetime | None = None
    label: Text = ""

    @model_validator(mode="after")
    def _one_end(self) -> CreateToken:
        if self.days is not None and self.expires is not None:
            raise ValueError("days or expires, not both")
        return self


class NewToken(Result):
    id: str
    account: str
    token: str  # shown once: the ledger keeps its SHA-256
    expires: float


class TokenView(Result):
    id: str
    account: str
    label: str
    created: float
    expires: float
    revoked: float | None
    state: Literal["active", "expired", "revoked"]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(uow: UnitOfWork, actor: Actor, request: CreateToken) -> NewToken:
    """The operator makes an account a token for the HTTP API, valid ``days`` (shown once)."""
    authority.operator_only(actor, "making API tokens")
    uow.accounts.require(request.account)
    if request.expires is None:
        expires = uow.now + (request.days or TOKEN_DAYS) * DAY
    else:
        expires = request.expires.timestamp()
        if not uow.now < expires <= uow.now + MAX_TOKEN_DAYS * DAY:
            raise Refused("bad_expiry", f"a token expires within {MAX_TOKEN_DAYS} days from now", "docs/cloud.md")
    token = secrets.token_urlsafe(32)
    handle = f"tok-{secrets.token_hex(6)}"
    uow.accounts.add_token(_digest(token), handle, request.account, uow.now, expires, request.label)
    return NewToken(id=handle, account=request.account, token=token, expires=expires)


class ListTokens(Request):
    account: Ident | None = None


def tokens(uow: UnitOfWork, actor: Actor, request: ListTokens) -> list[TokenView]:
    """The tokens of an account (the operator: of every account or one), newest last, never their secret."""
    if not actor.is_operator:
        authority.account(uow, actor, request.account or actor.id)
    account = request.account if actor.is_operator else (request.account or actor.id)
    return [
        TokenView(
            id=t.id, account=t.account, label=t.label, created=t.created, expires=t.expires, revoked=t.revoked,
            state="revoked" if t.revoked is not None else "expired" if t.expires <= uow.now else "active",
        )
        for t in uow.accounts.tokens(account)
    ]  # fmt: skip


class RevokeToken(Request):
    id: Ident


def revoke_token(uow: UnitOfWork, actor: Actor, request: RevokeToken) -> str:
    """The operator revokes a token: from now on it is refused (401)."""
    authority.operator_only(actor, "revoking API tokens")
    if not uow.accounts.revoke_token(request.id, uow.now):
        raise Refused("not_found", f"no token {request.id} that is not revoked", "ledger")
    return f"{request.id} revoked"


def token_actor(uow: UnitOfWork, token: str) -> Actor | None:
    """Who a bearer token speaks for: None when unknown, expired or revoked."""
    account = uow.accounts.token_account(_digest(token), uow.now)
    return None if account is None else authority.actor_of(account)
