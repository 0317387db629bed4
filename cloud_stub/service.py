"""``smartplus-cloud serve``'s fleet side: the issuer and the ingest, against a broker.

One MQTT client for the whole fleet. Out, retained: the ``trust`` document (re-signed when the keys
change), each device's ``entitlements`` (re-issued when what the ledger grants it changes, and well
before its ``exp``), each device's ``firmware`` job (when its rollout changes). In: every device's
events (deduplicated, firmware statuses derived), replies and state. On every pass it also runs
auto-renewal, the expiration notices, expires unpaid orders and forgets old idempotency keys.

The ledger may be changed by other processes meanwhile (the CLI, the API, another ``serve`` on the same
PostgreSQL ledger): each pass reads it afresh and publishes only what changed, and a change is heard of
at once (``cloud_stub/storage/changes.py``). What is issued waits in the ledger until the broker
acknowledged it, so a broker (or a cluster node) lost half way through a pass costs no device its
document: it goes again on the next connection, to the next broker given. Two ``serve`` processes on one
ledger never issue a ``seq`` twice or renew a cycle twice (conditional writes, in the operations).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import aiomqtt
import structlog

from cloud_stub.errors import CloudError, Refused
from cloud_stub.ledger import Ledger, UnitOfWork
from cloud_stub.ledger.documents import Unsent
from cloud_stub.operations import ingest, issuing, keys, paying, upgrades
from cloud_stub.operations.authority import OPERATOR
from cloud_stub.storage.changes import Changes, changes_of
from protocol import boundedjson, topics
from protocol.cancelling import raise_if_cancelling
from protocol.topics import Topics

log = structlog.get_logger("cloud_stub.service")
IN_FLIGHT: Final = 10
INGEST_BATCH: Final = 1000
MAX_INGEST_BYTES: Final = 64 * 1024  # what a device may send in one message (events, replies, state)
KEPT: Final = 1000  # published documents remembered for the operator and the tests
IDEMPOTENCY_SECONDS: Final = 24 * 3600.0


@dataclass(frozen=True)
class Broker:
    """Where the fleet's broker is, and how ``serve`` logs in."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None  # server verification, and the cloud's certificate for mutual TLS


class CloudService:
    """Issuer and ingest for every device in the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        keys_dir: Path,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        prefix: str = topics.DEFAULT_PREFIX,
        image_base: str = "http://127.0.0.1:8080/",
        interval: float = 1.0,
        offline_days: float = issuing.OFFLINE_DAYS,
        fallbacks: Sequence[tuple[str, int]] = (),
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
    ) -> None:
        self.ledger, self.keys, self.prefix = ledger, keys_dir, prefix
        # The nodes of a clustered broker: on a lost connection the next one is tried.
        self.brokers = [Broker(h, p, username, password, tls) for h, p in [(host, port), *fallbacks]]
        self.identifier = client_id or f"smartplus-cloud-{port}"  # one session, whichever node holds it
        self.options = issuing.Options(prefix, image_base, offline_days)
        self.interval = interval
        self.published: deque[tuple[str, str]] = deque(maxlen=KEPT)  # (topic, token) for the operator, tests
        self.passes = 0
        self._poke = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._changes: Changes | None = None
        ledger.run(lambda uow: keys.ensure(uow, keys_dir))  # new signers: every document is signed again

    def poke(self) -> None:
        """Publish what changed now rather than at the next pass."""
        self._poke.set()

    def documents(self) -> int:
        """Issue every document that must be (re)published now; each waits in the ledger until the broker
        acknowledged it. How many were issued."""
        seq = self.ledger.run(lambda uow: issuing.issue_trust(uow, self.keys, self.prefix))
        if seq is not None and seq > 1:
            return 1  # a rotation: the devices take the new trust before anything signed by the new key
        for ident, progress in self.ledger.run(lambda uow: upgrades.advance_rollouts(uow, OPERATOR)):
            event = {"running": "rollout_wave_released"}.get(progress.state, f"rollout_{progress.state}")
            log.info(event, upgrade=ident, released=progress.released, reason=progress.reason)
        issued = self.ledger.run(lambda uow: issuing.issue_devices(uow, self.keys, self.options))
        return (seq is not None) + issued

    def rotate_keys(self, purpose: str = "billing") -> str:
        """Bring in a new signer for ``purpose`` (the next pass publishes trust, then documents signed by it)."""
        [kid] = self.ledger.run(lambda uow: keys.rotate(uow, OPERATOR, self.keys, purpose))
        return str(kid)

    def rotate_root(self) -> str:
        """Make a new root: the next trust documents carry old and new, with the new one's proof."""
        return self.ledger.run(lambda uow: keys.rotate_root(uow, OPERATOR, self.keys))

    async def command(self, mac: str, op: str, args: dict[str, Any] | None = None, *, ident: str | None = None) -> str:
        """Sign a command for ``mac`` with the commands signer and publish it (QoS 1, not retained); its id.
        A device that is offline gets it from its persistent session."""
        client = self._client
        if client is None:
            raise Refused("not_connected", "the cloud is not connected to the broker", "PROTOCOL.md command")
        command_id = ident or f"cmd-{uuid.uuid4().hex[:12]}"
        token = self.ledger.run(lambda uow: issuing.sign_command(uow, self.keys, mac, command_id, op, args))
        await client.publish(Topics(self.prefix, mac).commands, token, qos=1)
        raise_if_cancelling()  # a stop as the PUBACK came: the passes must not go on
        return command_id

    async def _send_commands(self) -> None:
        """The remote operations asked for (``reboot``, ``resync``), each claimed, signed and published once;
        one older than a command's lifetime is dropped (it would arrive expired)."""
        queued = self.ledger.read(lambda uow: uow.remote.unsent(uow.now - issuing.COMMAND_TTL))
        for each in queued:
            if not self.ledger.run(partial(_claim, each.id)):
                continue  # another serve process sent it
            try:
                await self.command(each.device, each.op, each.args, ident=each.id)
            except BaseException:
                self.ledger.run(partial(_release, each.id))
                raise
            log.info("command_sent", device=each.device, op=each.op, id=each.id)

    def housekeeping(self) -> None:
        """Auto-renewal, expiration notices, expired orders, old idempotency keys."""
        for renewal in self.ledger.run(lambda uow: paying.auto_renew(uow, OPERATOR)):
            log.info("auto_renewed", **renewal.model_dump())
        for notice in self.ledger.run(lambda uow: paying.raise_notices(uow, OPERATOR)):
            log.info("expiry_notice", **notice.model_dump(exclude={"at"}))
        self.ledger.run(lambda uow: paying.expire_orders(uow, OPERATOR))
        self.ledger.run(lambda uow: uow.requests.forget_older(uow.now - IDEMPOTENCY_SECONDS))

    async def run(self) -> None:
        """Connect (again and again, to the next broker each time a connection is lost) and serve until
        cancelled."""
        self._changes = changes_of(self.ledger.database)
        try:
            try:
                await self._changes.start()
            except CloudError as exc:  # the first wait listens again; the passes go on meanwhile
                log.error("changes_not_heard", error=str(exc)[:300])
            for attempt in itertools.count():
                broker = self.brokers[attempt % len(self.brokers)]
                try:
                    await self._connected(broker)
                except* aiomqtt.MqttError as group:
                    log.warning("cloud_disconnected", host=broker.host, port=broker.port,
                                error=str(group.exceptions[0]))  # fmt: skip
                await asyncio.sleep(0.5)
        finally:
            await self._changes.close()

    async def _connected(self, broker: Broker) -> None:
        async with aiomqtt.Client(
            broker.host, broker.port, username=broker.username, password=broker.password,
            identifier=self.identifier, clean_session=False, keepalive=10, tls_context=broker.tls,
        ) as client:  # fmt: skip
            await client.subscribe([(topics.fleet(self.prefix, leaf), 1) for leaf in topics.DEVICE_LEAVES])
            raise_if_cancelling()  # a SIGTERM as the SUBACK came: serve would otherwise never stop
            log.info("cloud_connected", host=broker.host, port=broker.port)
            self._client = client
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._ingest(client))
                    tasks.create_task(self._publish(client))
                    # Stay in the body until a child fails: Python 3.11's TaskGroup, left from its exit, leaks a
                    # cancellation request on this task (gh-116720), which the next connection's check above
                    # would take for a stop (protocol/cancelling.py).
                    await asyncio.Event().wait()
            finally:
                self._client = None

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            try:
                self.housekeeping()
                self.documents()
                await self._send(client)
                await self._send_commands()
            except CloudError as exc:  # the ledger unavailable, a signer missing: said, and tried on the next pass
                log.error("pass_failed", error=str(exc)[:300])
            self.passes += 1
            await self._until_changed()

    async def _send(self, client: aiomqtt.Client) -> None:
        """Publish what waits in the ledger (retained, QoS 1); what the broker acknowledged is marked sent
        even when the connection is lost half way, the rest goes again on the next connection."""
        pending = self.ledger.read(lambda uow: uow.issued.unsent())
        done: list[Unsent] = []
        try:
            for start in range(0, len(pending), IN_FLIGHT):  # aiomqtt slows down past 10 pending
                batch = pending[start : start + IN_FLIGHT]
                await asyncio.gather(*(client.publish(d.topic, d.token, qos=1, retain=True) for d in batch))
                raise_if_cancelling()
                done.extend(batch)
                self.published.extend((d.topic, d.token) for d in batch)
        finally:
            if done:  # one commit per pass: a crash before it only sends again
                self.ledger.run(lambda uow: uow.issued.sent(done))
                log.info("documents_published", count=len(done), left=len(pending) - len(done))

    async def _until_changed(self) -> None:
        """Until the next pass is due: ``interval`` passed, :meth:`poke`, or another process changed the
        ledger: a change reaches the devices well within a second (bench/bench_cloud.py)."""
        assert self._changes is not None
        poked = asyncio.ensure_future(self._poke.wait())
        changed = asyncio.ensure_future(self._changes.wait(self.interval))
        try:
            await asyncio.wait({poked, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (poked, changed):
                waiter.cancel()
            await asyncio.gather(poked, changed, return_exceptions=True)
        self._poke.clear()

    async def _ingest(self, client: aiomqtt.Client) -> None:
        """Take what arrives, a batch per transaction: what is already queued joins the one in hand (a
        commit per message would let a fleet's state reports hold the publishing back)."""
        messages = client.messages
        async for message in messages:
            batch = [message]
            while len(messages) and len(batch) < INGEST_BATCH:
                batch.append(await anext(messages))
            try:
                self.ledger.run(partial(self._take_all, batch))
            except CloudError as exc:
                log.error("ingest_failed", error=str(exc)[:300], messages=len(batch))

    def _take_all(self, batch: list[aiomqtt.Message], uow: UnitOfWork) -> None:
        for message in batch:
            self._take(uow, message)

    def _take(self, uow: UnitOfWork, message: aiomqtt.Message) -> None:
        parts = str(message.topic).split("/")
        if len(parts) < 2:
            return
        device, leaf = parts[-2], parts[-1]
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if len(payload) > MAX_INGEST_BYTES:  # an event's data is at most 16 KiB (agent/outbox/events.py)
            log.warning("ingest_refused", device=device[:64], leaf=leaf, error=f"{len(payload)} bytes")
            return
        try:
            body: Any = boundedjson.loads(payload, max_depth=16) if payload else None
            if not isinstance(body, dict):
                return
            with uow.tx.savepoint():  # one device's malformed report undoes only itself
                if leaf == "events":
                    ingest.take_event(uow, device, body)
                elif leaf == "replies":
                    ingest.take_reply(uow, device, body)
                elif leaf == "state":
                    ingest.take_state(uow, device, body)
        except (ValueError, KeyError, TypeError, Refused) as exc:
            log.warning("ingest_refused", device=device[:64], leaf=leaf, error=str(exc)[:200])


def _claim(ident: str, uow: UnitOfWork) -> bool:
    return uow.remote.claim(ident, uow.now)


def _release(ident: str, uow: UnitOfWork) -> None:
    uow.remote.release(ident)
