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
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from agent.entitlements.policy import Decision
from agent.local import credentials, door_actions
from agent.local.credentials import value_digest
from agent.store.database import Transaction
from protocol import logs
from protocol.claims import ID_PATTERN, CommandClaims, describe_validation_error
from protocol.settings import SiteSettings

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class _Args(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", defer_build=True)


class Credential(BaseModel):
    """An access method for a door (agent/local/credentials.py uses it; docs/drivers.md).

    ``value`` is what the reader reads (a PIN, a card number, a face template id, a QR payload, a BLE
    key id); without it the reader must read the ``id``. It is stored only as its SHA-256. ``dynamic``
    marks a dynamic QR code (accepted only while ``dynamic_qr`` is active); ``floors`` are the floors
    the elevator enables for its holder. Any further fields are kept for the reader.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="allow", defer_build=True)

    id: Id
    kind: Literal["pin", "card", "face", "qr", "ble"]
    value: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    dynamic: bool = False
    floors: Annotated[tuple[Id, ...], Field(max_length=64)] = ()

    def stored(self) -> str:
        """The body kept in the database: ``value`` replaced by its SHA-256 (a PIN is never on disk)."""
        body = self.model_dump(mode="json", exclude={"value"})
        body["value_sha256"] = value_digest(self.value if self.value is not None else self.id)
        return json.dumps(body, separators=(",", ":"))


class IssueArgs(_Args):
    """``issue_credentials``."""

    door: Id
    credentials: Annotated[tuple[Credential, ...], Field(min_length=1, max_length=10_000)]


class RevokeArgs(_Args):
    """``revoke_credentials``: these ids, on one door or on every door."""

    door: Id | None = None
    ids: Annotated[tuple[Id, ...], Field(min_length=1, max_length=10_000)]


class ResyncArgs(_Args):
    """``resync``: with ``from_seq``, the events to send again."""

    from_seq: Annotated[int, Field(ge=1)] | None = None
    to_seq: Annotated[int, Field(ge=1)] | None = None


class OpenDoorArgs(_Args):
    """``open_door``."""

    door: Id
    seconds: Annotated[int, Field(ge=1, le=60)] = 5


class DiagnosticsArgs(_Args):
    """``collect_diagnostics``: how many of the last log lines to include."""

    lines: Annotated[int, Field(ge=0, le=logs.RECENT)] = 200  # the log keeps RECENT lines


class Effect(NamedTuple):
    """What a command changes on the device, besides its reply."""

    settings: Mapping[str, Any] | None = None
    issue: IssueArgs | None = None
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


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], args: Mapping[str, Any]) -> _M:
    # Validated as the JSON it came as: strict JSON mode takes arrays for tuples, refuses "5" for 5.
    return model.model_validate_json(json.dumps(args))


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
            settings = _parse(SiteSettings, args)
            return Plan(_ok(claims), Effect(settings=settings.model_dump(exclude_none=True)))
        if op == "issue_credentials":
            issue = _parse(IssueArgs, args)
            decision = decide("issue_access", f"door:{issue.door}")
            if not decision.allowed:
                return Plan(_error(claims, "service_limited", f"{decision.reason}: {decision.detail}"), Effect())
            return Plan(_ok(claims, issued=len(issue.credentials)), Effect(issue=issue))
        if op == "revoke_credentials":
            return Plan(_ok(claims), Effect(revoke=_parse(RevokeArgs, args)))
        if op == "open_door":
            return Plan(_ok(claims, queued=True), Effect(open_door=_parse(OpenDoorArgs, args)))
        if op == "collect_diagnostics":
            return Plan(_ok(claims), Effect(diagnostics=_parse(DiagnosticsArgs, args).lines))
    except ValidationError as exc:
        return Plan(_error(claims, "invalid_args", describe_validation_error(exc)), Effect())
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
        issued = [(c.id, c.kind, c.stored()) for c in effect.issue.credentials]
        await credentials.issue(tx, effect.issue.door, issued, now)
    if effect.revoke is not None:
        await credentials.revoke(tx, effect.revoke.ids, effect.revoke.door)
    if effect.open_door is not None:
        await door_actions.queue_open(tx, claims.id, effect.open_door.door, effect.open_door.model_dump_json(), now)


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
