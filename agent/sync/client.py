"""Making an MQTT client for one connection attempt, and naming why an attempt failed.

A fresh :class:`aiomqtt.Client` per attempt (aiomqtt's reconnection advice): persistent session
(client id = device id, clean session off; with MQTT 5 a session expiry), the last will of
PROTOCOL.md, TLS with server verification and an optional client certificate.

Inbound messages are acknowledged by hand (:func:`acknowledge`), after what they caused has been
committed, so a crash in between makes the broker deliver them again (Mosquitto does; amqtt 0.12
does not: docs/sync.md). aiomqtt does not expose paho's manual acknowledgement, so this module (and
only this one) reaches the paho client under it; tests/test_sync_commands.py pins the behaviour.
"""

from __future__ import annotations

import logging
import ssl
from typing import Final, NamedTuple

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.sync.state import offline_payload
from protocol.topics import Topics

# CONNACK return codes (3.1.1) and reason codes (5) that mean "you may not": retried slowly.
_REFUSED_V3: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    4: "bad user name or password",
    5: "not authorized",
}
_REFUSED_V5: Final = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
# Messages waiting for the receive loop. A broker bounds the QoS 1 messages it has in flight to a
# client (Mosquitto: 20 per client; NATS: max_ack_pending per subscription, 256 in deploy/nats), so a
# flood waits in the broker; beyond this (amqtt bounds nothing; a NATS flood over several topics)
# the excess is dropped here, counted, and, never acknowledged, delivered again by brokers that keep
# sessions (NATS after its ack_wait). With documents of at most 256 KiB this bounds the memory.
MAX_QUEUED_INCOMING: Final = 256
MAX_PACKET_BYTES: Final = 320 * 1024  # a document is at most 256 KiB (PROTOCOL.md), plus topic and headers


def tls_context(mqtt: MqttConfig) -> ssl.SSLContext | None:
    """Server verification against ``ca_file`` (or the system store), plus the client certificate if set."""
    if not mqtt.tls:
        return None
    context = ssl.create_default_context(cafile=str(mqtt.ca_file) if mqtt.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mqtt.cert_file is not None and mqtt.key_file is not None:
        context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file))
    return context


class PahoErrors(logging.Handler):
    """The last warning or error paho logged for one client: the real cause behind aiomqtt's "timed out";
    and how many inbound messages aiomqtt dropped because the receive loop was behind (a flood).

    With TLS 1.3 a server that refuses the client's certificate says so *after* the handshake; paho
    logs the alert and drops the connection, and aiomqtt, still waiting for CONNACK, only times out.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None
        self.dropped = 0  # inbound messages aiomqtt discarded: its queue (MAX_QUEUED_INCOMING) was full

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message; count the inbound messages dropped in a flood."""
        message = record.getMessage()
        if message.startswith("Message queue is full"):
            self.dropped += 1
            return
        self.last = message


def make_client(
    mqtt: MqttConfig, device_id: str, topics: Topics, *, tls: ssl.SSLContext | None
) -> tuple[aiomqtt.Client, PahoErrors]:
    """A client for one connection attempt, and what its paho logs."""
    errors = PahoErrors()
    paho_log = logging.Logger("agent.mqtt.paho", logging.WARNING)  # one per client, unregistered; and paho
    paho_log.addHandler(errors)  # logs every packet at DEBUG: below WARNING no record is even made
    paho_log.propagate = False
    will = aiomqtt.Will(topics.state, offline_payload(device_id), qos=1, retain=True)
    common = {
        "username": mqtt.username,
        "password": mqtt.password.get_secret_value() if mqtt.password else None,
        "identifier": device_id,
        "will": will,
        "keepalive": mqtt.keepalive,
        "timeout": mqtt.timeout,
        "tls_context": tls,
        # paho's own window; our pump keeps at most mqtt.in_flight publishes pending
        "max_inflight_messages": max(20, mqtt.in_flight),
        "max_queued_incoming_messages": MAX_QUEUED_INCOMING,
        "logger": paho_log,
    }
    if mqtt.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = mqtt.session_expiry
        properties.MaximumPacketSize = MAX_PACKET_BYTES  # the broker drops larger messages for us
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            **common,  # type: ignore[arg-type]
        )
    else:
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            **common,  # type: ignore[arg-type]
        )
    client._client.manual_ack_set(True)
    return client, errors


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of ``message`` now that what it caused is durable."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


class Failure(NamedTuple):
    """Why a connection attempt failed, and whether to retry slowly (refused, not unreachable)."""

    cause: str
    refused: bool


def describe(exc: aiomqtt.MqttError, logged: str | None = None) -> Failure:
    """The real cause of a failed attempt: a refused login or certificate is not a timeout.

    ``logged`` is the last error paho logged for the attempt, preferred to a bare timeout.
    """
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        if isinstance(rc, ReasonCode):
            return Failure(f"broker refused the connection: {rc}", rc.value in _REFUSED_V5)
        if isinstance(rc, int) and rc in _REFUSED_V3:
            return Failure(f"broker refused the connection: {_REFUSED_V3[rc]}", True)
        return Failure(f"broker refused the connection: {exc}", False)
    text = str(exc)
    if logged and text == "Operation timed out":
        text = f"{logged} (then: {text})"
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return Failure(f"TLS handshake failed: {text}", True)
    if isinstance(exc, aiomqtt.MqttCodeError) and isinstance(exc.rc, ReasonCode) and exc.rc.value in _REFUSED_V5:
        return Failure(f"broker refused: {exc.rc}", True)
    return Failure(text or type(exc).__name__, False)
