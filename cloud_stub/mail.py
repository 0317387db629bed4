"""Sending the ledger's mail through an SMTP relay (``[mail]`` in serve.toml; docs/portal.md "Mail").

Operations queue mail in the transaction of what it tells (``cloud_stub/ledger/mail.py``); this sends it
after: each message claimed, handed to the relay (smtplib, in a thread), then marked sent. A relay that is
down or refuses leaves the message waiting with its next try (30 s, doubling, at most an hour): nothing is
lost. A sender that dies after the relay took a message and before marking it sends it again after the
claim's minute (at least once, as mail is).
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Final

import structlog

from cloud_stub.errors import LedgerError
from cloud_stub.ledger import Ledger
from cloud_stub.ledger.mail import Message

log = structlog.get_logger("cloud_stub.mail")
KEEP_SENT: Final = 30 * 86_400.0  # a sent message is kept this long (what was sent, when), then forgotten
FIRST_RETRY: Final = 30.0
LAST_RETRY: Final = 3600.0
TIMEOUT: Final = 20.0


@dataclass(frozen=True)
class Relay:
    """Where mail goes: an SMTP relay, STARTTLS when asked, a login when given."""

    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None


def _send(relay: Relay, message: Message) -> None:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = relay.sender, message.recipient, message.subject
    mail["Message-ID"] = make_msgid(domain=relay.sender.rsplit("@", 1)[-1].strip("> ") or "localhost")
    mail.set_content(message.body)
    with smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT) as smtp:
        if relay.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if relay.username:
            smtp.login(relay.username, relay.password or "")
        smtp.send_message(mail)


def retry_after(attempts: int) -> float:
    return float(min(LAST_RETRY, FIRST_RETRY * 2**attempts))


class Mailer:
    """Sends what is due, when poked (:meth:`poke`) or every ``interval`` seconds."""

    def __init__(self, ledger: Ledger, relay: Relay, interval: float = 2.0) -> None:
        self.ledger, self.relay, self.interval = ledger, relay, interval
        self._poked = asyncio.Event()

    def poke(self) -> None:
        self._poked.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.send_due)
            except LedgerError as exc:
                log.warning("mail_ledger_unavailable", error=str(exc)[:200])
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # doorbell rings, and the sender then outlives its stop (a test's teardown hung on it)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._poked.wait()
            self._poked.clear()

    def send_due(self) -> int:
        """Send every message due now; how many went."""
        sent = 0
        due = self.ledger.read(lambda uow: uow.mail.due(uow.now))
        if not due:  # an idle moment: sent mail past its keeping goes
            self.ledger.run(lambda uow: uow.mail.forget_sent(uow.now - KEEP_SENT))
        for message in due:
            sent += self._send_one(message)
        return sent

    def _send_one(self, message: Message) -> int:
        ident = message.id
        if not self.ledger.run(lambda uow: uow.mail.claim(ident, uow.now)):
            return 0  # another sender has it
        try:
            _send(self.relay, message)
        except (OSError, smtplib.SMTPException) as exc:
            wait, said = retry_after(message.attempts), _said(exc)
            self.ledger.run(lambda uow: uow.mail.failed(ident, uow.now + wait, said))
            log.warning("mail_deferred", id=ident, kind=message.kind, error=said, retry_in=wait)
            return 0
        self.ledger.run(lambda uow: uow.mail.sent(ident, uow.now))
        log.info("mail_sent", id=ident, kind=message.kind)  # never its body: codes and links
        return 1


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
