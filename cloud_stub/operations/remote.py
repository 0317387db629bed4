"""Remote operations (DOMAIN.md "Site settings that reach the device": reboot; PROTOCOL.md "Commands":
resync): queued in the ledger for a device of a site the actor acts for; ``serve`` signs each with the
commands signer and publishes it once; the device's reply comes back through the ingest."""

from __future__ import annotations

import secrets
from typing import Final, Literal

from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Mac, Request

COMMAND_TTL: Final = 600.0  # seconds a signed command stays valid: one queued longer is never sent


class AskDevice(Request):
    mac: Mac
    op: Literal["reboot", "resync"]


def ask(uow: UnitOfWork, actor: Actor, request: AskDevice) -> str:
    """Queue ``op`` for a device of a site the actor acts for; the command id, to wait for the reply with."""
    mac = request.mac  # normalised by the request
    device = uow.sites.device(mac)
    if device is None:
        raise Refused("not_found", f"no device {mac}", "ledger")
    if device.project is None:
        raise Refused("not_in_site", f"{mac} is in no site", "DOMAIN.md")
    authority.site(uow, actor, device.project)
    ident = f"cmd-{secrets.token_hex(6)}"
    uow.remote.queue(ident, mac, request.op, actor.id, uow.now)
    return ident


def reply(uow: UnitOfWork, actor: Actor, ident: str) -> dict[str, object] | None:
    """The device's reply to a command, once it came (the asker's or the operator's to read)."""
    asker = uow.remote.asker(ident)
    if asker is None:
        raise Refused("not_found", f"no command {ident}", "ledger")
    if not actor.is_operator and asker != actor.id:
        raise Refused("not_yours", f"command {ident} was asked by another account", "seed 001 Roles and Permissions")
    return uow.reports.reply(ident)
