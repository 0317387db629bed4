"""Commands from the cloud (PROTOCOL.md "command"): what each does and the one reply it gets.

:func:`plan` is pure: from the verified claims and the policy's decisions it makes the reply and the
effect. :func:`apply` writes the effect in the transaction that also stores the command document and
queues the reply (``agent/device.py`` ``also=``), so the effect, the reply and the high-water mark
commit together: a daemon that dies after acting still answers, exactly once. A command id that has
been answered before is not carried out again and gets no second reply.

Ops: ``resync`` (republish state; with ``from_seq`` and optionally ``to_seq``, also send again the
events of that range the outbox still keeps: how the cloud fills a gap in seq), ``set_settings``
(DOMAIN.md "Site settings", persisted),
``reboot`` (the daemon restarts cleanly after replying), ``issue_credentials`` (refused as
``service_limited`` while doors are limited), ``revoke_credentials`` (never gated: taking access
away is always allowed), ``open_door`` (queued for the drivers), ``collect_diagnostics`` (the reply
carries the daemon's checks and its last ``lines`` log lines: agent/runtime/diagnostics.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeVar

from msgspec import Meta

from agent.entitlements.policy import Decision
from agent.local import credentials, door_actions
from agent.local.credentials import value_digest
from agent.store.database import Transaction
from protocol import logs
from protocol.claims import AwareDatetime, CommandClaims, Id, Invalid, Model, convert, to_builtins, to_json
from protocol.settings import site_settings


class _Args(Model, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Credential(Model, frozen=True, kw_only=True):
    """An access method for a door (agent/local/credentials.py uses it; docs/drivers.md).

    ``value`` is what the reader reads (a PIN, a card number, a face template id, a QR payload, a BLE
    key id); without it the reader must read the ``id``. It is stored only as its SHA-256. ``dynamic``
    marks a dynamic QR code (accepted only while ``dynamic_qr`` is active); ``floors`` are the floors
    the elevator enables for its holder. Any further members are kept for the reader (:meth:`stored`).
    """

    id: Id
    kind: Literal["pin", "card", "face", "qr", "ble"]
    value: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    dynamic: bool = False
    floors: Annotated[tuple[Id, ...], Meta(max_length=64)] = ()

    def stored(self, extra: Mapping[str, Any] | None = None) -> str:
        """The body kept in the database: the members, then ``extra`` (those of the command this struct
        does not name), with ``value`` replaced by its SHA-256 (a PIN is never on disk)."""
        body = {**to_builtins(self), **(extra or {})}
        del body["value"]
        body["value_sha256"] = value_digest(self.value if self.value is not None else self.id)
        return json.dumps(body, separators=(",", ":"))


_CREDENTIAL_MEMBERS: Final = frozenset(Credential.__struct_fields__)


class IssueArgs(_Args, frozen=True, kw_only=True):
    """``issue_credentials``."""

    door: Id
    credentials: Annotated[tuple[Credential, ...], Meta(min_length=1, max_length=10_000)]


class Issue(NamedTuple):
    """Credentials to issue at a door, each as its id, kind and stored body."""

    door: str
    rows: list[tuple[str, str, str]]


def _issue(args: Mapping[str, Any]) -> Issue:
    issue = _parse(IssueArgs, args)
    raw = args["credentials"]  # the list the struct was decoded from, with the members it does not name
    rows: list[tuple[str, str, str]] = [
        (c.id, c.kind, c.stored({k: v for k, v in given.items() if k not in _CREDENTIAL_MEMBERS}))
        for c, given in zip(issue.credentials, raw, strict=True)
    ]
    return Issue(issue.door, rows)


class RevokeArgs(_Args, frozen=True, kw_only=True):
    """``revoke_credentials``: these ids, on one door or on every door."""

    door: Id | None = None
    ids: Annotated[tuple[Id, ...], Meta(min_length=1, max_length=10_000)]


class ResyncArgs(_Args, frozen=True, kw_only=True):
    """``resync``: with ``from_seq``, the events to send again."""

    from_seq: Annotated[int, Meta(ge=1)] | None = None
    to_seq: Annotated[int, Meta(ge=1)] | None = None


class OpenDoorArgs(_Args, frozen=True, kw_only=True):
    """``open_door``."""

    door: Id
    seconds: Annotated[int, Meta(ge=1, le=60)] = 5


class DiagnosticsArgs(_Args, frozen=True, kw_only=True):
    """``collect_diagnostics``: how many of the last log lines to include."""

    lines: Annotated[int, Meta(ge=0, le=logs.RECENT)] = 200  # the log keeps RECENT lines


class Effect(NamedTuple):
    """What a command changes on the device, besides its reply."""

    settings: Mapping[str, Any] | None = None
    issue: Issue | None = None
    revoke: RevokeArgs | None = None
    open_door: OpenDoorArgs | None = None
    restart: bool = False
    resync: bool = False
    replay: tuple[int, int | None] | None = None  # (from_seq, to_seq): events to send again
    diagnostics: int | None = None  # collect_diagnostics: the reply carries them, with this many log lines


class Plan(NamedTuple):
    """The reply, and the effect to apply with it."""

    reply: dict[str, Any]
    effect: Effect


_A = TypeVar("_A", bound=_Args)


def _parse(model: type[_A], args: Mapping[str, Any]) -> _A:
    # Strictly, as the JSON it came as: arrays for tuples, no "5" for 5.
    return convert(model, args)


def _ok(claims: CommandClaims, **extra: Any) -> dict[str, Any]:
    return {"id": claims.id, "ok": True, **extra}


def _error(claims: CommandClaims, code: str, message: str) -> dict[str, Any]:
    return {"id": claims.id, "ok": False, "error": {"code": code, "message": message}}


def plan(claims: CommandClaims, decide: Callable[[str, str | None], Decision]) -> Plan:
    """The reply and effect of a verified command, given the policy's decisions now."""
    op, args = claims.op, claims.args
    try:
        if op == "resync":
            resync = _parse(ResyncArgs, args)
            if resync.from_seq is None:
                return Plan(_ok(claims), Effect(resync=True))
            if resync.to_seq is not None and resync.to_seq < resync.from_seq:
                return Plan(_error(claims, "invalid_args", "to_seq is below from_seq"), Effect())
            return Plan(_ok(claims), Effect(resync=True, replay=(resync.from_seq, resync.to_seq)))
        if op == "reboot":
            return Plan(_ok(claims), Effect(restart=True))
        if op == "set_settings":
            return Plan(_ok(claims), Effect(settings=site_settings(args)))
        if op == "issue_credentials":
            issue = _issue(args)
            decision = decide("issue_access", f"door:{issue.door}")
            if not decision.allowed:
                return Plan(_error(claims, "service_limited", f"{decision.reason}: {decision.detail}"), Effect())
            return Plan(_ok(claims, issued=len(issue.rows)), Effect(issue=issue))
        if op == "revoke_credentials":
            return Plan(_ok(claims), Effect(revoke=_parse(RevokeArgs, args)))
        if op == "open_door":
            return Plan(_ok(claims, queued=True), Effect(open_door=_parse(OpenDoorArgs, args)))
        if op == "collect_diagnostics":
            return Plan(_ok(claims), Effect(diagnostics=_parse(DiagnosticsArgs, args).lines))
    except Invalid as exc:
        return Plan(_error(claims, "invalid_args", str(exc)), Effect())
    return Plan(_error(claims, "unknown_op", f"op {op!r} is not one this device carries out"), Effect())


async def apply(tx: Transaction, claims: CommandClaims, effect: Effect, now: float) -> None:
    """Write ``effect`` in the command's transaction."""
    if effect.settings:
        await tx.executemany(
            """INSERT INTO settings (name, value, issued_at) VALUES (?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET value = excluded.value, issued_at = excluded.issued_at
               WHERE excluded.issued_at >= settings.issued_at""",
            [(name, json.dumps(value), float(claims.iat)) for name, value in effect.settings.items()],
        )
    if effect.issue is not None:
        await credentials.issue(tx, effect.issue.door, effect.issue.rows, now)
    if effect.revoke is not None:
        await credentials.revoke(tx, effect.revoke.ids, effect.revoke.door)
    if effect.open_door is not None:
        await door_actions.queue_open(tx, claims.id, effect.open_door.door, to_json(effect.open_door), now)


async def answered(tx: Transaction, command_id: str) -> bool:
    """Whether this command id has been answered before."""
    return await tx.fetchone("SELECT 1 FROM commands WHERE id = ?", (command_id,)) is not None


async def record(tx: Transaction, claims: CommandClaims, reply: dict[str, Any], now: float) -> None:
    """Remember that this command id has been answered, and how."""
    await tx.execute(
        "INSERT INTO commands (id, op, reply, handled_at) VALUES (?, ?, ?, ?)",
        (claims.id, claims.op, json.dumps(reply), now),
    )


async def clear_settings(tx: Transaction) -> int:
    """Forget the settings commands set (a reset after upgrade); how many there were."""
    return await tx.execute("DELETE FROM settings")


async def forget_answered(tx: Transaction) -> int:
    """Forget which command ids were answered (a reset after upgrade); how many there were."""
    return await tx.execute("DELETE FROM commands")


async def effective_settings(
    tx: Transaction, document_settings: Mapping[str, Any], document_iat: float
) -> dict[str, Any]:
    """Site settings in effect: per setting, the later of the entitlements document and the last command."""
    rows = await tx.fetchall("SELECT name, value, issued_at FROM settings")
    settings = dict(document_settings)
    for name, value, issued_at in rows:
        if name not in settings or issued_at >= document_iat:
            settings[name] = json.loads(value)
    return settings
