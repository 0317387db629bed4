"""``smartplus-cloud serve``: the issuer, the ingest and the image server, against a broker.

One MQTT client for the whole fleet. Out, retained: the ``trust`` document (re-signed when the keys
change), each device's ``entitlements`` (re-issued when what the ledger grants it changes, and well
before its ``exp``), each device's ``firmware`` job (when its rollout changes). In: every device's
events (deduplicated, firmware statuses derived), replies and state. Every ``interval`` seconds it
also runs auto-renewal and the expiration notices. The ledger may be changed by the CLI in another
process meanwhile: each pass reads it afresh and publishes only what changed. What is issued waits
in the ledger until the broker acknowledged it, so a broker (or a cluster node) lost half way through
a pass costs no device its document: it goes again on the next connection, to the next broker given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from cloud_stub import ingest, issuing, rollouts, trustkeys
from cloud_stub.ledger import Ledger
from cloud_stub.rules import Refused
from protocol import boundedjson, jws, topics
from protocol.topics import Topics

log = structlog.get_logger("cloud_stub.service")
IN_FLIGHT = 10
INGEST_BATCH = 1000
COMMAND_TTL = 600.0  # seconds a signed command stays valid
MAX_INGEST_BYTES = 64 * 1024  # what a device may send in one message (events, replies, state)


class CloudService:
    """Issuer and ingest for every device in the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        keys: Path,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        prefix: str = topics.DEFAULT_PREFIX,
        image_base: str = "http://127.0.0.1:8080/",
        clock: Callable[[], float] = time.time,
        interval: float = 1.0,
        offline_days: float = issuing.OFFLINE_DAYS,
        fallbacks: Sequence[tuple[str, int]] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ledger, self.keys, self.prefix = ledger, keys, prefix
        self.host, self.port, self.username, self.password = host, port, username, password
        # The nodes of a clustered broker: on a lost connection the next one is tried.
        self.brokers = [(host, port), *fallbacks]
        self.image_base, self.clock, self.interval, self.offline_days = image_base, clock, interval, offline_days
        self.tls = tls  # server verification, and the cloud's certificate where the broker requires one
        self.published: list[tuple[str, str]] = []  # (topic, what) for the operator and the tests
        self.passes = 0
        self._poke = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        if trustkeys.ensure(ledger, keys, clock()):
            self._resign_all()  # new signers (a ledger from before key scopes): every document again

    def poke(self) -> None:
        """Publish what changed now rather than at the next pass."""
        self._poke.set()

    def documents(self, now: float) -> int:
        """Issue every document that must be (re)published now; each waits in the ledger
        (:func:`issuing.unsent`) until the broker has acknowledged it. How many were issued."""
        listed = json.dumps(trustkeys.trust_claims(self.ledger), sort_keys=True)
        with self.ledger.transaction():  # a seq and its document in one commit
            seq = issuing.next_seq(self.ledger, "trust:*", hashlib.sha256(listed.encode()).hexdigest(), now)
            if seq is not None:
                token = trustkeys.trust_document(self.ledger, self.keys, now, seq)
                issuing.hold(self.ledger, "trust:*", Topics(self.prefix, "*").trust, token)
                if seq > 1:  # a rotation: the devices take the new trust before anything signed by the new key
                    return 1
        billing = trustkeys.active(self.ledger, self.keys, "billing")
        releases = trustkeys.active(self.ledger, self.keys, "releases")
        for ident, progress in rollouts.advance_all(self.ledger, now):  # waves released or paused first
            event = {"running": "rollout_wave_released"}.get(progress.state, f"rollout_{progress.state}")
            log.info(event, upgrade=ident, released=progress.released, reason=progress.reason)
        with self.ledger.transaction():  # every device's seq and document in one commit
            return (seq is not None) + self._device_documents(now, billing, releases)

    def _device_documents(self, now: float, billing: Any, releases: Any) -> int:
        issued = 0
        phased: dict[str, rollouts.Rollout | None] = {}  # each upgrade's rollout, read once this pass
        for mac, _, project in self.ledger.devices():
            if project is None:
                continue
            token = issuing.document_for(self.ledger, mac, billing, now, offline_days=self.offline_days)
            if token is not None:
                issuing.hold(self.ledger, mac, Topics(self.prefix, mac).entitlements, token)
                issued += 1
            job = rollouts.job_for(self.ledger, mac, self.image_base, phased)
            if job is not None:
                digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
                job_seq = issuing.next_seq(self.ledger, f"fw:{mac}", digest, now)
                if job_seq is not None:
                    claims = {"iat": int(now), "exp": int(now + 30 * 86_400), "seq": job_seq, **job}
                    token = jws.sign(releases, "firmware-job", claims)
                    issuing.hold(self.ledger, f"fw:{mac}", Topics(self.prefix, mac).firmware, token)
                    issued += 1
        return issued

    def rotate_keys(self, purpose: str = "billing") -> str:
        """Bring in a new signer for ``purpose`` (the next pass publishes trust, then documents signed by it)."""
        [kid] = trustkeys.rotate(self.ledger, self.keys, self.clock(), purpose)
        self._resign_all()
        return kid

    def rotate_root(self) -> str:
        """Make a new root: the next trust documents carry old and new, with the new one's proof."""
        return trustkeys.rotate_root(self.ledger, self.keys, self.clock())

    def _resign_all(self) -> None:
        with self.ledger.transaction() as db:
            db.execute("UPDATE issued SET digest = '' WHERE device NOT LIKE 'trust:%' AND device NOT LIKE 'cmd:%'")

    async def command(self, mac: str, op: str, args: dict[str, Any] | None = None, *, ident: str | None = None) -> str:
        """Sign a command for ``mac`` with the commands signer and publish it (QoS 1, not retained); its id.

        Commands are not retained: a device that is offline gets it from its persistent session.
        """
        client = self._client
        if client is None:
            raise Refused("not_connected", "the cloud is not connected to the broker", "PROTOCOL.md command")
        now = self.clock()
        command_id = ident or f"cmd-{uuid.uuid4().hex[:12]}"
        seq = issuing.next_seq(self.ledger, f"cmd:{mac}", command_id, now, force=True)
        assert seq is not None
        claims = {"iss": "smartplus-cloud", "aud": mac, "iat": int(now), "exp": int(now + COMMAND_TTL), "seq": seq,
                  "id": command_id, "op": op, "args": args or {}}  # fmt: skip
        token = jws.sign(trustkeys.active(self.ledger, self.keys, "commands"), "command", claims)
        await client.publish(Topics(self.prefix, mac).commands, token, qos=1)
        return command_id

    async def _send_commands(self) -> None:
        """The remote operations asked for from the CLI (``reboot``, ``resync``), signed and published once;
        one older than a command's lifetime is dropped (it would arrive expired)."""
        now = self.clock()
        for ident, mac, op, args in self.ledger.unsent_commands(COMMAND_TTL, now):
            await self.command(mac, op, args, ident=ident)
            self.ledger.command_sent(ident, now)
            log.info("command_sent", device=mac, op=op, id=ident)

    def housekeeping(self, now: float) -> None:
        for project, service, subject, new in self.ledger.auto_renew(now):
            log.info("auto_renewed", project=project, service=service, subject=subject, expires=new)
        for notice in self.ledger.raise_notices(now):
            log.info("expiry_notice", **notice)

    async def run(self) -> None:
        """Connect (again and again, to the next broker of :attr:`brokers` each time a connection is
        lost) and serve until cancelled."""
        for attempt in itertools.count():
            host, port = self.brokers[attempt % len(self.brokers)]
            try:
                async with aiomqtt.Client(
                    host,
                    port,
                    username=self.username,
                    password=self.password,
                    identifier=f"smartplus-cloud-{self.port}",  # one session, whichever node holds it
                    clean_session=False,
                    keepalive=10,
                    tls_context=self.tls,
                ) as client:
                    await client.subscribe([(topics.fleet(self.prefix, leaf), 1) for leaf in topics.DEVICE_LEAVES])
                    log.info("cloud_connected", host=host, port=port)
                    self._client = client
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self._ingest(client))
                            tasks.create_task(self._publish(client))
                    finally:
                        self._client = None
            except* aiomqtt.MqttError as group:
                log.warning("cloud_disconnected", host=host, port=port, error=str(group.exceptions[0]))
            await asyncio.sleep(0.5)

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            now = self.clock()
            self.housekeeping(now)
            self.documents(now)
            await self._send(client)
            await self._send_commands()
            self.passes += 1
            await self._until_changed()

    async def _send(self, client: aiomqtt.Client) -> None:
        """Publish what waits in the ledger (retained, QoS 1); what the broker acknowledged is marked
        sent even when the connection is lost half way, the rest goes again on the next connection."""
        pending = issuing.unsent(self.ledger)
        done: list[issuing.Unsent] = []
        try:
            for start in range(0, len(pending), IN_FLIGHT):  # aiomqtt slows down past 10 pending
                batch = pending[start : start + IN_FLIGHT]
                await asyncio.gather(*(client.publish(d.topic, d.token, qos=1, retain=True) for d in batch))
                done.extend(batch)
                self.published.extend((d.topic, d.token) for d in batch)
        finally:
            issuing.sent(self.ledger, done)  # one commit per pass: a crash before it only sends again
            if done:
                log.info("documents_published", count=len(done), left=len(pending) - len(done))

    async def _until_changed(self) -> None:
        """Until the next pass is due: ``interval`` passed, :meth:`poke`, or another process (the CLI)
        committed to the ledger (SQLite's ``data_version``, read every 50 ms): a change reaches the
        devices well within a second (bench/bench_cloud.py)."""
        seen = self.ledger.data_version()
        deadline = asyncio.get_running_loop().time() + self.interval
        while not self._poke.is_set() and self.ledger.data_version() == seen:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.05, left)):
                    await self._poke.wait()
        self._poke.clear()

    async def _ingest(self, client: aiomqtt.Client) -> None:
        """Take what arrives, a batch per transaction: what is already queued joins the one in hand
        (a commit per message would let a fleet's state reports hold the publishing back)."""
        messages = client.messages
        async for message in messages:
            batch = [message]
            while len(messages) and len(batch) < INGEST_BATCH:
                batch.append(await anext(messages))
            with self.ledger.transaction():
                for each in batch:
                    self._take(each)

    def _take(self, message: aiomqtt.Message) -> None:
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
            now = self.clock()
            if leaf == "events":
                ingest.take_event(self.ledger, device, body, now)
            elif leaf == "replies":
                ingest.take_reply(self.ledger, device, body, now)
            elif leaf == "state":
                ingest.take_state(self.ledger, device, body, now)
        except (ValueError, KeyError, TypeError, Refused) as exc:
            log.warning("ingest_refused", device=device[:64], leaf=leaf, error=str(exc)[:200])
        except Exception:  # a defect on one device's message must not stop the fleet's ingest
            log.exception("ingest_failed", device=device[:64], leaf=leaf)
