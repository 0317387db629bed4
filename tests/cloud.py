"""The cloud's side of the wire in a test: signed documents in, events, replies and state out.

A plain MQTT client, as code outside the project would use (PROTOCOL.md is the contract): it keeps a
persistent session, reconnects on its own when the broker restarts, and counts what arrives:
events deduplicated by ``event_id``, gaps in ``seq``, replies by command id, the retained state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiomqtt

from tests.brokers import Broker
from tests.support import DEVICE_ID

PREFIX = "smartplus/v1"


class CloudPeer:
    """Publishes documents to a device and collects what it sends. Use ``async with``."""

    def __init__(
        self, broker: Broker, device_id: str = DEVICE_ID, *, user: str = "cloud", password: str = "cloud"
    ) -> None:
        self.broker = broker
        self.device_id = device_id
        self.identifier = f"cloud-{uuid.uuid4().hex[:8]}"
        self._user, self._password = user, password
        self.events: dict[str, dict[str, Any]] = {}  # by event_id, first copy
        self.deliveries = 0  # every event message, duplicates included
        self.seq_to_id: dict[int, str] = {}
        self.conflicts: list[tuple[int, str, str]] = []  # one seq, two event ids
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.states: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def topic(self, leaf: str) -> str:
        """``P/devices/D/<leaf>``, or ``P/trust``."""
        return f"{PREFIX}/trust" if leaf == "trust" else f"{PREFIX}/devices/{self.device_id}/{leaf}"

    async def __aenter__(self) -> CloudPeer:
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
                self.broker.host,
                self.broker.port,
                username=self._user,
                password=self._password,
                identifier=self.identifier,
                clean_session=False,
                keepalive=5,
            )
            try:
                async with client:
                    await client.subscribe([(self.topic(leaf), 1) for leaf in ("events", "replies", "state")])
                    self._client = client
                    self._connected.set()
                    async for message in client.messages:
                        self._take(str(message.topic).rsplit("/", 1)[-1], message.payload)
            except aiomqtt.MqttError:
                pass
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(0.1)

    def _take(self, leaf: str, payload: Any) -> None:
        body = json.loads(payload)
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
                await asyncio.wait_for(self.arrived.wait(), min(left, 0.5))

    @property
    def state(self) -> dict[str, Any] | None:
        """The latest state report."""
        return self.states[-1] if self.states else None

    def seq_gaps(self) -> list[int]:
        """seqs missing between 1 and the highest seen."""
        if not self.seq_to_id:
            return []
        return [s for s in range(1, max(self.seq_to_id) + 1) if s not in self.seq_to_id]

    def assert_exactly_once(self, acknowledged: set[str]) -> None:
        """Every event the device acknowledged is here once after dedupe; no seq gap; no seq reused."""
        missing = acknowledged - set(self.events)
        assert not missing, f"{len(missing)} acknowledged events never arrived"
        assert not self.conflicts, f"seqs carried two event ids: {self.conflicts[:3]}"
        assert not self.seq_gaps(), f"gaps in seq: {self.seq_gaps()[:10]}"
        assert len(self.seq_to_id) == len(self.events)
