"""The portal as its tests meet it: a ledger with two tenants (each a distributor, an installer, its
property manager and sub-installer, a site with an apartment, a device and an app account), the one ASGI
application served by uvicorn on a free port, the mail sender, and a real SMTP server (aiosmtpd) that
keeps what it is sent."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from cloud_stub import asgi
from cloud_stub.http import Served
from cloud_stub.ledger import Ledger
from cloud_stub.mail import Mailer, Relay
from cloud_stub.operations import accounts, credits, logins, sites
from tests.support.brokers import free_port
from tests.support.ledger import LedgerAt, call

PASSWORD = "correct horse battery"
# Each tenant: its accounts (id, role, parent, permission), and the site its installer made.
TENANTS: dict[str, dict[str, Any]] = {
    "t1": {"distributor": "d1", "subdist": "sd1", "installer": "i1", "pm": "pm1", "sub": "si1", "site": "elm",
           "site_name": "Elm Court", "mac": "0c1100000001", "apartment": "a101", "app": "alice"},
    "t2": {"distributor": "d2", "subdist": "sd2", "installer": "i2", "pm": "pm2", "sub": "si2", "site": "oak",
           "site_name": "Oak House", "mac": "0c1100000002", "apartment": "b202", "app": "bob"},
}  # fmt: skip
ROLES = ("distributor", "subdist", "installer", "pm", "sub")


class Mailbox:
    """An SMTP server of the test's own: every message it is handed, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 -- aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> Mailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    async def wait(self, to: str, subject: str, seconds: float = 20.0, after: int = 0) -> Message:
        """The first message to ``to`` whose subject has ``subject``, from the ``after``-th on."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self.messages[after:]:
                if message["To"] == to and subject in str(message["Subject"]):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"no mail to {to} about {subject!r} in {seconds} s: {[m['Subject'] for m in self.messages]}"
        )


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def code_in(message: Message) -> str:
    found = re.search(r"\b(\d{6})\b", body(message))
    assert found, body(message)
    return found.group(1)


def link_in(message: Message) -> str:
    found = re.search(r"https?://\S+", body(message))
    assert found, body(message)
    return found.group(0)


def seed(book: Ledger) -> None:
    """Two tenants, every role with a portal login (password :data:`PASSWORD`, Privacy Policy not yet
    agreed, address confirmed), credits with the installers, a site each."""
    for tenant in TENANTS.values():
        d, i = tenant["distributor"], tenant["installer"]
        for request in (
            accounts.AddAccount(id=d, role="distributor", name=f"Distributor {d}"),
            accounts.AddAccount(
                id=tenant["subdist"], role="sub_distributor", name=f"Sub {tenant['subdist']}", parent=d
            ),
            accounts.AddAccount(id=i, role="installer", name=f"Installer {i}", parent=d, permission="credit"),
            accounts.AddAccount(id=tenant["pm"], role="pm", name=f"PM {tenant['pm']}", parent=i),
            accounts.AddAccount(id=tenant["sub"], role="sub_installer", name=f"Sub {tenant['sub']}", parent=i),
        ):
            call(book, accounts.add_account, None, request)
        for role in ROLES:
            who = tenant[role]
            call(book, logins.set_login, None, logins.SetLogin(account=who, email=f"{who}@example.com",
                                                              password=PASSWORD))  # fmt: skip
        call(book, credits.buy, d, credits.BuyCredits(amount=1000))
        call(book, credits.allocate, d, credits.Allocate(account=i, amount=500))
        call(book, sites.add_site, i, sites.AddSite(id=tenant["site"], type="community", installer=i, pm=tenant["pm"],
                                                    created=date(2025, 1, 2), name=tenant["site_name"]))  # fmt: skip
        call(book, sites.add_device, i, sites.AddDevice(mac=tenant["mac"], distributor=d, model="R29",
                                                        project=tenant["site"]))  # fmt: skip
        call(book, sites.add_apartment, i, sites.AddApartment(project=tenant["site"], id=tenant["apartment"],
                                                              name=f"Apt {tenant['apartment']}",
                                                              services={"with_indoor_monitor": False}))  # fmt: skip
        call(book, sites.add_app_account, i, sites.AddAppAccount(project=tenant["site"], id=tenant["app"],
                                                                 role="master", name=tenant["app"].title(),
                                                                 apartment=tenant["apartment"]))  # fmt: skip


@dataclass
class PortalServer:
    """The served portal and what stands behind it."""

    url: str
    book: Ledger
    mailbox: Mailbox
    mailer: Mailer
    clock: Callable[[], float]
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def portal_server(where: LedgerAt, clock: Callable[[], float] = time.time) -> AsyncIterator[PortalServer]:
    book = where.open(clock)
    seed(book)
    mailbox = Mailbox().start()
    mailer = Mailer(book, Relay("127.0.0.1", mailbox.port, "SmartPlus <no-reply@example.com>"), interval=0.2)
    served = await Served(asgi.application(book, poke=mailer.poke)).start()
    sending = asyncio.create_task(mailer.run())
    try:
        yield PortalServer(f"http://127.0.0.1:{served.port}", book, mailbox, mailer, clock)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await served.stop()
        mailbox.stop()
        book.close()
