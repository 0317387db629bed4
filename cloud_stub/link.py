"""The cloud's MQTT link to one device: signed documents out, events, replies and state in.

A plain MQTT client, as the cloud (or code outside the project) uses it (PROTOCOL.md is the
contract): it keeps a persistent session, reconnects on its own when the broker restarts, and
collects what arrives: events deduplicated by ``event_id``, gaps in ``seq``, replies by command id,
the retained state. :meth:`DeviceLink.converge` is the cloud's half of "nothing lost past the broker":
it asks the device to send again what is missing from seq (agent/outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any, Self

import aiomqtt

from protocol import boundedjson
from protocol.cancelling import raise_if_cancelling
from protocol.topics import DEFAULT_PREFIX, Topics


class DeviceLink:
    """Publishes documents to a device and collects what it sends. Use ``async with``."""

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        user: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.prefix, self.tls = host, port, prefix, tls
        self.device_id = device_id
        self.identifier = f"cloud-{uuid.uuid4().hex[:8]}"
        self._user, self._password = user, password
        self.events: dict[str, dict[str, Any]] = {}  # by event_id, first copy
        self.deliveries = 0  # every event message, duplicates included
        self.seq_to_id: dict[int, str] = {}
        self.conflicts: list[tuple[int, str, str]] = []  # one seq, two event ids
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.states: list[dict[str, Any]] = []
        self.unreadable = 0  # messages that were not JSON objects (counted, dropped)
        self.stray: list[str] = []  # messages on topics never subscribed to (amqtt after a freeze: docs/sync.md)
        self.arrived = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def topic(self, leaf: str) -> str:
        """``P/devices/D/<leaf>``, or ``P/trust``."""
        topics = Topics(self.prefix, self.device_id)
        return topics.trust if leaf == "trust" else topics.device(leaf)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._stay_connected())
        async with asyncio.timeout(15):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _stay_connected(self) -> None:
        while True:
            client = aiomqtt.Client(
                self.host,
                self.port,
                username=self._user,
                password=self._password,
                identifier=self.identifier,
                clean_session=False,
                keepalive=5,
                tls_context=self.tls,
            )
            try:
                async with client:
                    await client.subscribe([(self.topic(leaf), 1) for leaf in ("events", "replies", "state")])
                    raise_if_cancelling()
                    self._client = client
                    self._connected.set()
                    ours = {self.topic(leaf): leaf for leaf in ("events", "replies", "state")}
                    async for message in client.messages:
                        leaf = ours.get(str(message.topic))
                        if leaf is None:  # never subscribed to (amqtt crosses sessions after a stall): drop it
                            self.stray.append(str(message.topic))
                            continue
                        self._take(leaf, message.payload)
            except aiomqtt.MqttError:
                pass
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(0.1)

    def _take(self, leaf: str, payload: Any) -> None:
        try:
            body = boundedjson.loads(payload)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            self.unreadable += 1
            return
        if leaf == "events":
            self.deliveries += 1
            event_id, seq = body["event_id"], body["seq"]
            self.events.setdefault(event_id, body)
            known = self.seq_to_id.setdefault(seq, event_id)
            if known != event_id:
                self.conflicts.append((seq, known, event_id))
        elif leaf == "replies":
            self.replies.setdefault(body["id"], []).append(body)
        else:
            self.states.append(body)
        self.arrived.set()

    async def publish(self, leaf: str, payload: str | bytes, *, retain: bool = False) -> None:
        """Publish to the device's ``leaf`` topic (or the fleet's trust topic), waiting for a connection."""
        async with asyncio.timeout(20):
            while True:
                await self._connected.wait()
                client = self._client
                if client is None:
                    continue
                try:
                    await client.publish(self.topic(leaf), payload, qos=1, retain=retain)
                    raise_if_cancelling()
                    return
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.05)

    async def wait_until(self, condition: Callable[[], bool], seconds: float = 20.0, what: str = "") -> None:
        """Return once ``condition()`` holds, re-checked on every arrival; fail after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or condition}")
            self.arrived.clear()
            if condition():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):  # not wait_for (protocol/cancelling.py)
                    await self.arrived.wait()

    async def converge(self, acknowledged: set[str], resync: Callable[[int], str], seconds: float = 60.0) -> int:
        """Wait until every acknowledged event has arrived, asking the device to send again from the
        first gap in seq (or past the highest seq seen) when they do not; how many times it asked.

        This is the cloud's half of "nothing lost past the broker" (agent/outbox.py): a broker may
        acknowledge a message and still lose it; the device keeps what it sent and sends it again.
        """
        deadline, asked = time.monotonic() + seconds, 0
        while not acknowledged <= set(self.events):
            if time.monotonic() > deadline:
                missing = len(acknowledged - set(self.events))
                raise AssertionError(f"{missing} acknowledged events never arrived, after {asked} requests")
            try:
                await self.wait_until(lambda: acknowledged <= set(self.events), seconds=4)
            except AssertionError:
                gaps = self.seq_gaps()
                await self.publish("commands", resync(gaps[0] if gaps else max(self.seq_to_id, default=0) + 1))
                asked += 1
        return asked

    @property
    def state(self) -> dict[str, Any] | None:
        """The latest state report."""
        return self.states[-1] if self.states else None

    def seq_gaps(self) -> list[int]:
        """seqs missing between 1 and the highest seen."""
        if not self.seq_to_id:
            return []
        return [s for s in range(1, max(self.seq_to_id) + 1) if s not in self.seq_to_id]
