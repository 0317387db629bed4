"""The portal's logins and sessions (seed 002 "Log into SmartPlus", "Privacy Policy", "Email Confirmation";
issue 25's security reviewer): passwords hashed with argon2id, email two-factor codes, the Privacy Policy
and an email address confirmed at the first login, single-use expiring links to set or reset a password,
a lockout after repeated failures, sessions rotated at each step of a login, a distributor acting in an
installer's portal with its permission, and an audit line for each.

A login goes through these stages, one table (a session keeps only whether its code is still owed; the
rest is read from the login, so that a link confirmed in another browser moves every session on):

| stage | until | then |
| --- | --- | --- |
| ``code`` | the emailed six-digit code is given (email two-factor on) | ``privacy`` |
| ``privacy`` | Agree (Disagree: logged out, "you cannot log into the platform") | ``email`` |
| ``email`` | an email address is given and its emailed link followed | ``in`` |
| ``in`` | logged out, or the session's 12 hours pass | |

Who asks before a login is :data:`VISITOR` (no account): these operations are the only ones that take it.
The mail is queued in the same transaction (``uow.mail``) and sent after it commits (``cloud_stub/mail.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from typing import Annotated, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import AfterValidator, Field

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.logins import Code, Login, Session
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Ident, Request, Result, Text

VISITOR: Final = Actor("-", "visitor")  # a browser before its login
MINUTE: Final = 60.0
SESSION_SECONDS: Final = 12 * 3600.0
CODE_SECONDS: Final = 10 * MINUTE
CODE_TRIES: Final = 5
LINK_SECONDS: Final = 3600.0  # a password link
WELCOME_SECONDS: Final = 7 * 86400.0  # the first password link of a new login
CONFIRM_SECONDS: Final = 86400.0
LOCK_AFTER: Final = 5  # failures in a row
LOCK_SECONDS: Final = 15 * MINUTE
MIN_PASSWORD: Final = 10
Stage = Literal["code", "privacy", "email", "in"]
_SEED: Final = "seed 002 Log into SmartPlus"
_WRONG: Final = "the user name or the password is wrong"

# RFC 9106's second recommended profile (argon2id, 64 MiB, 3 passes, 4 lanes): argon2-cffi's defaults.
_hasher: Final = PasswordHasher()
_NO_ONE: Final = _hasher.hash(secrets.token_urlsafe(16))  # verified against for unknown names: same time


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _code_digest(session: str, code: str) -> str:
    return digest(f"{session}:{code}")


_EMAIL: Final = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;.]+(\.[^@\s<>\"',;.]+)+$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not an email address (name@example.com)")
    return value


Email = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_email)]
Password = Annotated[str, Field(max_length=128)]


class Opened(Result):
    """A session: its cookie's value (the only copy) and where the login stands."""

    token: str
    stage: Stage
    account: str


class SessionView(Result):
    """Who a session's cookie speaks for."""

    digest: str
    account: str
    acting_for: str | None
    stage: Stage


def stage_of(login: Login, session: Session) -> Stage:
    """Where a login stands: the table above."""
    return "code" if session.stage == "code" else _after_code(login)


def _after_code(login: Login) -> Stage:
    if login.privacy_agreed is None:
        return "privacy"
    if login.email_confirmed is None:
        return "email"
    return "in"


def _open(uow: UnitOfWork, account: str, code_owed: bool, acting_for: str | None = None) -> str:
    token = secrets.token_urlsafe(32)
    stage = "code" if code_owed else "in"
    created = uow.now
    uow.logins.open_session(
        Session(digest(token), account, acting_for, stage, created, created + SESSION_SECONDS), created
    )
    return token


def _login(uow: UnitOfWork, account: str) -> Login:
    found = uow.logins.get(account)
    if found is None:
        raise Refused("no_login", f"{account} has no portal login", _SEED)
    return found


def _send_code(uow: UnitOfWork, login: Login, session: str) -> None:
    code = f"{secrets.randbelow(10**6):06d}"
    uow.logins.add_code(Code(_code_digest(session, code), "code", login.account, session, None, uow.now + CODE_SECONDS,
                             None, 0))  # fmt: skip
    uow.mail.queue("code", login.email, "Your SmartPlus verification code",
                   f"Your verification code is {code}.\nIt expires in 10 minutes. If you did not try to log in, change"
                   " your password.\n", uow.now)  # fmt: skip


def check_password_rule(account: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Refused("weak_password", f"a password has {MIN_PASSWORD} characters or more", "docs/portal.md")
    if password.strip().lower() == account.lower():
        raise Refused("weak_password", "a password is not the user name", "docs/portal.md")


# -- logging in ----------------------------------------------------------------------------------------------
class LogIn(Request):
    account: Annotated[str, Field(max_length=64)]
    password: Password


def log_in(uow: UnitOfWork, actor: Actor, request: LogIn) -> Opened:
    """A user name and password: a new session (its code mailed when two-factor is on), or ``login_refused``
    (the same answer for an unknown name and a wrong password, in the same time), or ``locked`` after
    :data:`LOCK_AFTER` failures in a row for :data:`LOCK_SECONDS`. Each is audited."""
    if actor is not VISITOR:
        raise Refused("logged_in", "log out first", _SEED)
    login = uow.logins.get(request.account)
    if login is None or login.password is None:
        _verify(_NO_ONE, request.password)
        uow.audit.add(uow.now, "-", "login_refused", request.account[:64], reason="unknown")
        uow.commit()
        raise Refused("login_refused", _WRONG, _SEED)
    if login.locked_until is not None and login.locked_until > uow.now:
        uow.audit.add(uow.now, login.account, "login_refused", login.account, reason="locked")
        uow.commit()
        minutes = max(1, round((login.locked_until - uow.now) / MINUTE))
        raise Refused("locked", f"too many failed attempts: try again in {minutes} minutes", _SEED)
    if not _verify(login.password, request.password):
        count = uow.logins.failed(login.account, None)
        if count >= LOCK_AFTER:
            uow.logins.update(login.account, locked_until=uow.now + LOCK_SECONDS, failures=0)
            uow.audit.add(uow.now, login.account, "login_locked", login.account, failures=count)
        uow.audit.add(uow.now, login.account, "login_refused", login.account, reason="password", failures=count)
        uow.commit()
        raise Refused("login_refused", _WRONG, _SEED)
    uow.logins.forget_expired(uow.now)  # ended sessions and spent codes go at each login: nothing else keeps them
    values: dict[str, object] = {"failures": 0, "locked_until": None}
    if _hasher.check_needs_rehash(login.password):
        values["password"] = _hasher.hash(request.password)
    uow.logins.update(login.account, **values)
    token = _open(uow, login.account, login.two_factor)
    if login.two_factor:
        _send_code(uow, login, digest(token))
    uow.audit.add(uow.now, login.account, "login", login.account, two_factor=login.two_factor)
    return Opened(token=token, stage="code" if login.two_factor else _after_code(login), account=login.account)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def session_of(uow: UnitOfWork, token: str) -> SessionView | None:
    """The session a cookie names, if it has not ended."""
    session = uow.logins.session(digest(token), uow.now)
    if session is None:
        return None
    login = uow.logins.get(session.account)
    if login is None:
        return None
    return SessionView(digest=session.digest, account=session.account, acting_for=session.acting_for,
                       stage=stage_of(login, session))  # fmt: skip


def actor_of(uow: UnitOfWork, session: SessionView) -> Actor:
    """Who a logged-in session acts as: its account, or the installer its distributor switched into (with the
    distributor named, for the audit)."""
    if session.acting_for is None:
        return authority.resolve(uow, session.account)
    return dataclasses.replace(authority.resolve(uow, session.acting_for), by=session.account)


def _rotated(uow: UnitOfWork, session: SessionView, *, acting_for: str | None = None, code: bool = False) -> str:
    """A new cookie for the session's next step; the old one ends (a cookie seen before a step is worth
    nothing after it)."""
    uow.logins.close_session(session.digest)
    return _open(uow, session.account, code, acting_for)


class GiveCode(Request):
    code: Annotated[str, Field(min_length=1, max_length=12)]


def give_code(uow: UnitOfWork, session: SessionView, request: GiveCode) -> Opened:
    """The emailed code: the session goes on (a new cookie); :data:`CODE_TRIES` wrong tries end the code."""
    if session.stage != "code":
        raise Refused("no_code_owed", "no code is asked of this session", _SEED)
    owed = uow.logins.session_code(session.digest)
    if owed is None or owed.expires <= uow.now:
        raise Refused("code_expired", "the code has expired: log in again for a new one", _SEED)
    given = _code_digest(session.digest, request.code.strip())
    if not hmac.compare_digest(given, owed.digest):
        tries = uow.logins.tried(owed.digest)
        if tries >= CODE_TRIES:
            uow.logins.use_code(owed.digest, uow.now)
        uow.audit.add(uow.now, session.account, "code_refused", session.account, tries=tries)
        uow.commit()
        raise Refused("bad_code", "the code is wrong" + (": log in again" if tries >= CODE_TRIES else ""), _SEED)
    uow.logins.use_code(owed.digest, uow.now)
    token = _rotated(uow, session)
    uow.audit.add(uow.now, session.account, "code_accepted", session.account)
    fresh = session_of(uow, token)
    assert fresh is not None
    return Opened(token=token, stage=fresh.stage, account=session.account)


class Agree(Request):
    agree: bool


def privacy(uow: UnitOfWork, session: SessionView, request: Agree) -> Opened | None:
    """Agree: the login goes on (None: Disagree, the session ends and "you cannot log in")."""
    if session.stage != "privacy":
        raise Refused("not_asked", "the Privacy Policy was answered already", "seed 002 Privacy Policy")
    if not request.agree:
        uow.logins.close_session(session.digest)
        uow.audit.add(uow.now, session.account, "privacy_refused", session.account)
        return None
    uow.logins.update(session.account, privacy_agreed=uow.now)
    uow.audit.add(uow.now, session.account, "privacy_agreed", session.account)
    token = _rotated(uow, session)
    fresh = session_of(uow, token)
    assert fresh is not None
    return Opened(token=token, stage=fresh.stage, account=session.account)


class GiveEmail(Request):
    email: Email
    base: Annotated[str, Field(max_length=300)]  # the portal's address, for the link


def _confirmation(uow: UnitOfWork, account: str, email: str, base: str) -> None:
    token = secrets.token_urlsafe(32)
    uow.logins.void_codes(account, "confirm")
    uow.logins.add_code(Code(digest(token), "confirm", account, None, email, uow.now + CONFIRM_SECONDS, None, 0))
    uow.mail.queue("confirm", email, "Confirm your SmartPlus email address",
                   f"Follow this link to confirm this address for the SmartPlus portal account {account}:\n"
                   f"{base.rstrip('/')}/confirm/{token}\nIt works once, for 24 hours.\n", uow.now)  # fmt: skip


def give_email(uow: UnitOfWork, session: SessionView, request: GiveEmail) -> str:
    """The email address asked at the first login (or changed in Setting > Notification): a confirmation
    link is mailed to it; it is the account's once the link is followed."""
    _confirmation(uow, session.account, request.email, request.base)
    uow.audit.add(uow.now, session.account, "email_given", session.account)
    return request.email


def change_email(uow: UnitOfWork, actor: Actor, request: GiveEmail) -> str:
    """Setting > Notification: a new address for the account's own login; it is used once its emailed link
    is followed (until then codes, links and notices go to the confirmed one)."""
    if actor.is_operator or uow.logins.get(actor.id) is None:
        raise Refused("no_login", f"{actor.id} has no portal login", _SEED)
    _confirmation(uow, actor.id, request.email, request.base)
    authority.audit(uow, actor, "email_given", actor.id)
    return request.email


class Confirm(Request):
    token: Annotated[str, Field(min_length=1, max_length=100)]


def confirm_email(uow: UnitOfWork, actor: Actor, request: Confirm) -> str:
    """A confirmation link followed (from any browser): the address becomes the account's."""
    code = uow.logins.code(digest(request.token))
    if code is None or code.purpose != "confirm" or code.used is not None or code.expires <= uow.now:
        raise Refused("bad_link", "the link is unknown, used or expired", "seed 002 Email Confirmation")
    if not uow.logins.use_code(code.digest, uow.now):
        raise Refused("bad_link", "the link is unknown, used or expired", "seed 002 Email Confirmation")
    uow.logins.update(code.account, email=code.email, email_confirmed=uow.now)
    uow.audit.add(uow.now, code.account, "email_confirmed", code.account)
    return code.account


def log_out(uow: UnitOfWork, session: SessionView) -> None:
    uow.logins.close_session(session.digest)
    uow.audit.add(uow.now, session.account, "logout", session.account)


# -- passwords ------------------------------------------------------------------------------------------------
class ForgotPassword(Request):
    account: Annotated[str, Field(max_length=254)]  # the user name or the email address
    base: Annotated[str, Field(max_length=300)]


def _password_link(uow: UnitOfWork, login: Login, base: str, seconds: float, kind: str) -> None:
    token = secrets.token_urlsafe(32)
    uow.logins.void_codes(login.account, "reset")
    uow.logins.add_code(Code(digest(token), "reset", login.account, None, None, uow.now + seconds, None, 0))
    hours = round(seconds / 3600)
    subject, lead = (
        ("Your SmartPlus portal account", f"An account {login.account} was made for you on the SmartPlus portal.")
        if kind == "welcome"
        else ("Reset your SmartPlus password", f"Someone asked to reset the password of {login.account}.")
    )
    uow.mail.queue(kind, login.email, subject,
                   f"{lead}\nSet a password here (it works once, for {hours} hours):\n"
                   f"{base.rstrip('/')}/reset/{token}\n", uow.now)  # fmt: skip


def forgot_password(uow: UnitOfWork, actor: Actor, request: ForgotPassword) -> None:
    """A reset link mailed to the account's confirmed address; the answer is the same whether or not there
    is such an account (nobody learns who has one)."""
    login = uow.logins.get(request.account)
    if login is None and "@" in request.account:
        login = uow.logins.by_email(request.account)
    if login is None or not login.email:
        uow.audit.add(uow.now, "-", "reset_refused", request.account[:64])
        return
    _password_link(uow, login, request.base, LINK_SECONDS, "reset")
    uow.audit.add(uow.now, login.account, "reset_asked", login.account)


class ResetPassword(Request):
    token: Annotated[str, Field(min_length=1, max_length=100)]
    password: Password


def link_account(uow: UnitOfWork, token: str) -> str:
    """Whose a password link is, if it still works."""
    code = uow.logins.code(digest(token))
    if code is None or code.purpose != "reset" or code.used is not None or code.expires <= uow.now:
        raise Refused("bad_link", "the link is unknown, used or expired: ask for a new one", "docs/portal.md")
    return code.account


def reset_password(uow: UnitOfWork, actor: Actor, request: ResetPassword) -> str:
    """A password set through its link, once: every session of the account ends, the lock is lifted."""
    account = link_account(uow, request.token)
    check_password_rule(account, request.password)
    if not uow.logins.use_code(digest(request.token), uow.now):
        raise Refused("bad_link", "the link is unknown, used or expired: ask for a new one", "docs/portal.md")
    uow.logins.update(account, password=_hasher.hash(request.password), password_set=uow.now, failures=0,
                      locked_until=None)  # fmt: skip
    ended = uow.logins.close_sessions(account)
    uow.audit.add(uow.now, account, "password_reset", account, sessions_ended=ended)
    return account


class ChangePassword(Request):
    old: Password
    new: Password


def change_password(uow: UnitOfWork, session: SessionView, request: ChangePassword) -> Opened:
    """Change Password (seed 002): the old one first; the other sessions end, this one gets a new cookie."""
    login = _login(uow, session.account)
    if login.password is None or not _verify(login.password, request.old):
        uow.audit.add(uow.now, session.account, "password_refused", session.account)
        raise Refused("wrong_password", "the original password is wrong", "seed 002 Change Installer Account Password")
    check_password_rule(session.account, request.new)
    uow.logins.update(session.account, password=_hasher.hash(request.new), password_set=uow.now)
    uow.logins.close_sessions(session.account, keep=session.digest)
    token = _rotated(uow, session, acting_for=session.acting_for)
    uow.audit.add(uow.now, session.account, "password_changed", session.account)
    return Opened(token=token, stage="in", account=session.account)


# -- logins made for people --------------------------------------------------------------------------------------
class SetLogin(Request):
    account: Ident
    email: Email
    two_factor: bool = False
    password: Password | None = None  # None: a link to set one is mailed
    base: Annotated[str, Field(max_length=300)] = "http://localhost"


class LoginView(Result):
    account: str
    email: str
    two_factor: bool
    password_set: bool
    locked: bool


def view(login: Login, now: float) -> LoginView:
    return LoginView(account=login.account, email=login.email, two_factor=login.two_factor,
                     password_set=login.password is not None,
                     locked=login.locked_until is not None and login.locked_until > now)  # fmt: skip


def set_login(uow: UnitOfWork, actor: Actor, request: SetLogin) -> LoginView:
    """A portal login for an account: by the operator for anyone, or by an installer for its property
    managers and sub-installers (seed 002 "Add Property Manager Account", "Add Sub-Installer Account").
    Without a password, a link to set one is mailed ("The SmartPlus portal login password will be sent to
    the email address"). An existing login keeps its password and takes the new email and two-factor."""
    account = uow.accounts.require(request.account)
    if not actor.is_operator:
        authority.child(uow, actor, account.id)
    existing = uow.logins.get(account.id)
    if existing is None:
        uow.logins.add(account.id, request.email, request.two_factor)
        # An address given by the operator or a parent counts as confirmed: the link went to it.
        uow.logins.update(account.id, email_confirmed=uow.now)
    else:
        uow.logins.update(account.id, email=request.email, two_factor=int(request.two_factor))
    if request.password is not None:
        check_password_rule(account.id, request.password)
        uow.logins.update(account.id, password=_hasher.hash(request.password), password_set=uow.now)
    elif existing is None:
        _password_link(uow, _login(uow, account.id), request.base, WELCOME_SECONDS, "welcome")
    authority.audit(uow, actor, "login_set", account.id, two_factor=request.two_factor,
                  password="given" if request.password else "link")  # fmt: skip
    return view(_login(uow, account.id), uow.now)


class AdminReset(Request):
    account: Ident
    base: Annotated[str, Field(max_length=300)]


def send_reset(uow: UnitOfWork, actor: Actor, request: AdminReset) -> str:
    """Reset Password on a PM's or sub-account's page: a link mailed to it (its password is never shown)."""
    authority.child(uow, actor, request.account)
    login = _login(uow, request.account)
    _password_link(uow, login, request.base, LINK_SECONDS, "reset")
    authority.audit(uow, actor, "reset_sent", request.account)
    return login.email


# -- a distributor in an installer's portal -------------------------------------------------------------------------
def switch_into(uow: UnitOfWork, session: SessionView, installer: str) -> Opened:
    """A distributor switches into one of its installers' portals, if the installer grants it (Setting >
    Account Setting, "Permission Granted", on by default); every page then shows whose portal it is."""
    actor = authority.resolve(uow, session.account)
    if actor.role not in ("distributor", "sub_distributor"):
        raise Refused("not_yours", "only a distributor switches into an installer's portal", "seed 002 Account Setting")
    target = authority.account(uow, actor, installer)
    if target.role != "installer":
        raise Refused("not_yours", f"{installer} is not an installer", "seed 002 Account Setting")
    if uow.logins.setting(installer, "access_permission") is False:
        raise Refused("no_access", f"{installer} has not granted access to its account", "seed 002 Account Setting")
    token = _rotated(uow, session, acting_for=installer)
    uow.audit.add(uow.now, session.account, "acting_for", installer, acting_for=installer)
    return Opened(token=token, stage="in", account=session.account)


def switch_back(uow: UnitOfWork, session: SessionView) -> Opened:
    token = _rotated(uow, session)
    uow.audit.add(uow.now, session.account, "acting_for_ended", session.acting_for or "-")
    return Opened(token=token, stage="in", account=session.account)


class Setting(Request):
    name: Literal["time_zone", "billing", "customer_service", "access_permission", "log_setting", "notification",
                  "service_provider"]  # fmt: skip
    value: dict[Annotated[str, Field(max_length=40)], Text | bool] | bool | Text


def set_setting(uow: UnitOfWork, actor: Actor, request: Setting) -> str:
    """One of the account's Setting pages (seed 002 "Setting")."""
    if actor.is_operator:
        raise Refused("not_yours", "the operator has no settings pages", "seed 002 Setting")
    if request.name == "time_zone":
        from cloud_stub import rules

        rules.check_zone(str(request.value))
    uow.logins.set_setting(actor.principal, request.name, request.value)
    if request.name == "log_setting" and actor.principal_role == "installer" and isinstance(request.value, dict):
        # Log Setting reaches the devices: every site of the installer's keeps visitor call snapshots or not
        # (DOMAIN.md "Site settings that reach the device": visitor_call_snapshot).
        on = bool(request.value.get("snapshots", True))
        for site in authority.sites(uow, actor):
            uow.sites.update(site.id, {}, {"visitor_call_snapshot": on})
    authority.audit(uow, actor, "setting_changed", actor.principal, name=request.name)
    return request.name


def settings(uow: UnitOfWork, actor: Actor, name: str) -> object:
    return uow.logins.setting(actor.principal, name)


class SessionLabel(Result):
    """What the account menu shows."""

    account: str
    name: str
    role: str
    acting_for: str | None


def label(uow: UnitOfWork, session: SessionView) -> SessionLabel:
    account = uow.accounts.require(session.account)
    return SessionLabel(account=account.id, name=account.name, role=account.role, acting_for=session.acting_for)
