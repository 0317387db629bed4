"""The MQTT session: connect, subscribe, receive, send; reconnect for ever.

Theory of operation. :meth:`Session.run` is an outer loop around one connection at a time, each with
a fresh client (aiomqtt's advice, docs/reconnection.md there). A connection lives as three tasks in
one TaskGroup: receiving (each message verified, then acknowledged only once what it caused is
durable), pumping what it is handed (agent/sync/pump.py, the outbox's rows: at most ``mqtt.in_flight``
publishes awaiting PUBACK, none of them longer than ``mqtt.timeout`` (agent/sync/inflight.py), a row
deleted only after its PUBACK), and publishing the retained state report
(on connect and on every change).
When the connection breaks, all three end together and the loop waits a backoff: capped
exponential with full jitter, slower when the broker *refused* the device (bad login, certificate,
subscription) than when it was merely unreachable, and logged with the real cause either way.
Cancelling :meth:`run` (a clean stop) publishes ``online: false`` and disconnects cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Final

import aiomqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import TrustedClock
from agent.config import MqttConfig
from agent.errors import EdgeAgentError
from agent.sync import client as mqtt
from agent.sync.inflight import IDLE, InFlight
from agent.sync.pump import Message, Pump
from agent.sync.state import StateReport, offline_payload
from protocol.backoff import Backoff
from protocol.cancelling import raise_if_cancelling
from protocol.topics import Topics

log = structlog.get_logger("agent.session")

_GOODBYE_SECONDS: Final = 1.5
_RETRY_MIN: Final = 0.1  # a message not taken (a full disk) is handed over again after this, doubling
_RETRY_MAX: Final = 2.0  # ... up to this: space that returns is seen within about two seconds


class Taken(Enum):
    """What the handler made of one message (the session acknowledges it, or hands it over again)."""

    YES = "yes"  # handled (accepted, refused, or failed and reported): acknowledge it
    LATER = "later"  # its outcome could not be made durable now: keep it unacknowledged, hand it over again


class SubscriptionRefused(EdgeAgentError, aiomqtt.MqttError):
    """The broker granted no QoS for a topic the device must hear (an ACL, most likely); an ``MqttError``
    too, so that the session treats it as a lost connection (agent/errors.py draws it)."""


def _first_leaf(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


class Session:
    """The device's link to the broker."""

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        topics: Topics,
        *,
        handle: Callable[[str, bytes], Awaitable[Taken]],
        pump: Pump,
        state: Callable[[], Awaitable[StateReport]],
        clock: TrustedClock,
        connected: asyncio.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config, self._device_id = config, device_id
        self._topics = topics
        self._handle = handle
        self._outgoing = pump
        self._state = state
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not security
        self._tls = mqtt.tls_context(config)
        self._backoff = Backoff(config.reconnect_min, config.reconnect_max)
        self._refused_backoff = Backoff(config.refused_min, config.refused_max)
        self._retry = Backoff(_RETRY_MIN, _RETRY_MAX)
        self.state_changed = asyncio.Event()
        self.force_state = False
        self.connected = connected or asyncio.Event()  # set while subscribed (shared with the firmware engine)
        self.connections = 0  # successful connections so far (for metrics and tests)
        self.failures = 0  # connections lost or refused so far
        self.failed = asyncio.Event()  # set after each one
        self._dropped_before = 0  # inbound messages dropped in floods, by connections that ended
        self._paho: mqtt.PahoErrors | None = None

    @property
    def dropped(self) -> int:
        """Inbound messages dropped in floods so far: beyond ``MAX_QUEUED_INCOMING`` waiting, a broker that
        does not bound what it has in flight (amqtt) gets them dropped rather than held in memory."""
        return self._dropped_before + (self._paho.dropped if self._paho is not None else 0)

    def republish_state(self, *, force: bool = False) -> None:
        """Publish the state report again (when it changed; always when ``force``)."""
        self.force_state = self.force_state or force
        self.state_changed.set()

    async def run(self) -> None:
        """Stay connected until cancelled."""
        attempt = 0
        while True:
            client, paho_errors = mqtt.make_client(self._config, self._device_id, self._topics, tls=self._tls)
            self._paho = paho_errors
            refused = False
            try:
                async with client:
                    attempt = 0
                    self.connections += 1
                    log.info("mqtt_connected", host=self._config.host, port=self._config.port)
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        await self._goodbye(client)
                        raise
            except aiomqtt.MqttError as exc:
                failure = mqtt.describe(exc, paho_errors.last)
                refused = failure.refused or isinstance(exc, SubscriptionRefused)
                log.warning("mqtt_disconnected", cause=failure.cause, refused=refused, attempt=attempt)
                self.failures += 1
                self.failed.set()
            finally:
                self.connected.clear()
                if paho_errors.dropped:
                    log.error("mqtt_inbound_dropped", count=paho_errors.dropped, queue=mqtt.MAX_QUEUED_INCOMING)
                self._dropped_before += paho_errors.dropped
                self._paho = None
            backoff = self._refused_backoff if refused else self._backoff
            delay = backoff.delay(attempt, self._rng)
            attempt += 1
            log.info("mqtt_reconnect_wait", seconds=round(delay, 2))
            await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                # Receive before subscribing: a broker may hold the SUBACK back until the retained
                # message it just delivered is acknowledged (amqtt does), and we acknowledge only
                # from the receive loop, once the message's outcome is durable.
                tasks.create_task(self._receive(client))
                await self._subscribe(client)
                self.connected.set()
                tasks.create_task(self._pump(client))
                tasks.create_task(self._publish_state(client))
                # Stay in the body: the children end only by failing. Python 3.11's TaskGroup leaks a
                # cancellation request on this task when a child fails after the body has finished
                # (it calls uncancel() before waiting; CPython reordered that for gh-116720 in 3.12),
                # and the next connection would take the leak for a real cancellation.
                await asyncio.Event().wait()
        except BaseExceptionGroup as group:
            # A broken connection ends all three with MqttErrors, nested (the pump's workers are a group
            # of their own): surface the first; anything else is a bug and must not be taken for one.
            mqtt_errors, others = group.split(aiomqtt.MqttError)
            if others is not None:
                raise others from None
            assert mqtt_errors is not None
            raise _first_leaf(mqtt_errors) from None

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """One SUBSCRIBE for every inbound topic at QoS 1; a refused one (code 0x80 and up) is an error."""
        topics = list(self._topics.inbound)
        granted = await client.subscribe([(topic, 1) for topic in topics])
        raise_if_cancelling()
        codes = [code.value if isinstance(code, ReasonCode) else int(code) for code in granted]
        refused = [topic for topic, code in zip(topics, codes, strict=False) if code >= 0x80]
        if refused or len(codes) != len(topics):
            log.error("mqtt_subscription_refused", topics=refused, codes=codes)
            raise SubscriptionRefused(f"subscriptions refused: {', '.join(refused) or codes}")

    async def _receive(self, client: aiomqtt.Client) -> None:
        inbound = self._topics.inbound
        async for message in client.messages:
            typ = inbound.get(str(message.topic))
            if typ is None:
                # Never subscribed to (amqtt crosses sessions after a stall): noted and dropped. Not a
                # reason to reconnect: a broken broker would turn that into a storm of connections.
                mqtt.acknowledge(client, message)
                log.warning("mqtt_stray_message", topic=str(message.topic))
                continue
            payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
            attempt = 0
            while await self._handle(typ, payload) is Taken.LATER:
                # Not durable now (a full disk): keep it, unacknowledged, and hand it over again soon, so
                # that it is taken as soon as space returns rather than at the next reconnect. Later
                # messages wait behind it: taking them out of order could put an older document last.
                delay = self._retry.delay(attempt, self._rng)
                attempt += 1
                if attempt == 1 or attempt % 100 == 0:  # a full disk may last: say so now and then
                    log.info("message_retry_wait", typ=typ, seconds=round(delay, 2), attempt=attempt)
                await asyncio.sleep(delay)
            mqtt.acknowledge(client, message)

    async def _pump(self, client: aiomqtt.Client) -> None:
        workers = self._config.in_flight
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=workers)
        cursor = self._outgoing.cursor()  # one per connection: what is not acknowledged goes again
        leaf_topics = {"events": self._topics.events, "replies": self._topics.replies}
        now = asyncio.get_running_loop().time
        in_flight = InFlight(workers, self._config.timeout, now)
        began = in_flight.began

        async def worker(slot: int) -> None:
            while True:
                message = await queue.get()
                began[slot] = now()
                # No timeout of aiomqtt's (a task and a timer per publish): in_flight.watch bounds them all.
                # Without wait_for's timeout no cancellation is swallowed here (protocol/cancelling.py).
                await client.publish(leaf_topics[message.leaf], message.payload, qos=1, timeout=math.inf)
                began[slot] = IDLE
                cursor.published(message.id)

        async with asyncio.TaskGroup() as tasks:
            for slot in range(workers):
                tasks.create_task(worker(slot))
            tasks.create_task(in_flight.watch())
            while True:
                for message in await cursor.next():
                    await queue.put(message)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        last: StateReport | None = None
        while True:
            self.state_changed.clear()
            report = await self._state()
            if report != last or self.force_state:
                self.force_state = False
                await client.publish(self._topics.state, report.payload(self._clock.now()), qos=1, retain=True)
                raise_if_cancelling()
                log.info("state_published", mode=report.mode, seq=report.seq, depth=report.depth, held=report.held)
                last = report
            await self.state_changed.wait()

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop: say we are offline (the will is only for an unclean one)."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(_GOODBYE_SECONDS):
                await client.publish(self._topics.state, offline_payload(self._device_id), qos=1, retain=True)
