"""``smartplus-cloud fleet``: many lightweight simulated devices in one process, against a broker.

Each simulated device is one MQTT session (aiomqtt) with the device's client id; it subscribes to
the fleet's ``trust`` and its own ``entitlements``, verifies every document with the agent's own JWS
code against the root key and the signing keys the trust document lists (EdDSA only, pinned keys,
``seq`` never going back), and reports what it holds as a retained ``state`` (PROTOCOL.md) whenever
that changes. No database, no drivers: about 18 KiB and one socket per device (bench/bench_fleet.py),
so 10,000 fit in one process. What it checks is what convergence needs: the right document, verified,
reached every device. It also takes its ``firmware`` job (verified with a ``firmware-job`` signer)
and reports it with the agent's event kinds, ending ``executed`` (its version then reported), or
``rolled_back`` for a device made to fail upgrades (``fails_upgrades``): what a phased rollout
(``cloud_stub/waves.py``) is judged on. Given the nodes of a clustered broker, the devices are spread over them and a
device whose node goes away reconnects to the next one (and counts it: ``moves``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from protocol import jws
from protocol.backoff import Backoff
from protocol.cancelling import raise_if_cancelling
from protocol.ed25519 import PublicKey
from protocol.errors import DocumentRefused
from protocol.ids import uuid7
from protocol.timefmt import to_rfc3339_ms
from protocol.topics import DEFAULT_PREFIX, Topics

PREFIX = DEFAULT_PREFIX


@dataclass
class SimulatedDevice:
    """What one simulated device holds."""

    device_id: str
    trust_seq: int = 0
    keys: dict[str, PublicKey] = field(default_factory=dict)  # signing keys that may sign entitlements
    roots: dict[str, PublicKey] | None = None  # set by a trust document's roots (else the one given)
    seq: int = 0
    mode: str = "unprovisioned"
    refused: int = 0
    node: int | None = None  # which of the brokers holds (or last held) its session
    moves: int = 0  # sessions taken up again on another broker after one was lost
    awaiting_key: bytes | None = None  # an entitlements document that came before the trust listing its key
    firmware_keys: dict[str, PublicKey] = field(default_factory=dict)  # signers of firmware-job documents
    firmware_version: str = "29.30.2.805"
    fails_upgrades: bool = False  # its upgrades roll back (a health check that fails)
    job_seq: int = 0
    event_seq: int = 0
    jobs: list[str] = field(default_factory=list)  # the job ids it was given, in order

    def _verified(self, token: bytes, typ: str, keys: dict[str, PublicKey]) -> dict[str, Any] | None:
        """The claims of ``token`` if it is a ``typ`` signed by one of ``keys``; refusals are counted."""
        try:
            parsed = jws.parse(token)
            key = keys.get(parsed.kid)
            if parsed.typ != typ or key is None:
                raise DocumentRefused("unknown_kid", parsed.kid)
            jws.verify_signature(parsed, key)
            claims = json.loads(parsed.payload)
        except (DocumentRefused, ValueError):
            self.refused += 1
            return None
        return claims if isinstance(claims, dict) else None

    def take_trust(self, token: bytes, root: PublicKey) -> bool:
        claims = self._verified(token, "trust", self.roots or {jws.thumbprint(root.raw): root})
        if claims is None:
            return False
        if claims.get("seq", 0) <= self.trust_seq:
            return False
        self.trust_seq = int(claims["seq"])
        self.keys, self.firmware_keys = {}, {}
        for entry in claims.get("keys", []):
            key = PublicKey(jws.b64url_decode(entry["jwk"]["x"]))
            typs = entry.get("typs", ["entitlements", "firmware-job"])  # key scopes: each signer for its own
            if "entitlements" in typs:
                self.keys[entry["kid"]] = key
            if "firmware-job" in typs:
                self.firmware_keys[entry["kid"]] = key
        if claims.get("roots"):  # a root rotation (its proofs are the real agent's to check, not the simulator's)
            self.roots = {e["kid"]: PublicKey(jws.b64url_decode(e["jwk"]["x"])) for e in claims["roots"]}
        return True

    def take_entitlements(self, token: bytes) -> bool:
        claims = self._verified(token, "entitlements", self.keys)
        if claims is None:
            self.awaiting_key = token  # judged again when a trust document comes (NATS orders per topic)
            return False
        self.awaiting_key = None
        if claims.get("seq", 0) == self.seq:
            return False  # the one it holds, delivered again (a new session gets the retained copy)
        if claims.get("aud") != self.device_id or claims.get("seq", 0) < self.seq:
            self.refused += 1
            return False
        self.seq = int(claims["seq"])
        paid = {s["subject"] for s in claims.get("services", []) if s.get("service") == "door"}
        doors = claims.get("project", {}).get("doors", [])
        self.mode = "normal" if all(f"door:{d}" in paid for d in doors[1:]) else "limited"
        return True

    def take_job(self, token: bytes, now: float) -> list[bytes]:
        """A firmware job: the events it reports, as the agent would (none for one it holds already)."""
        claims = self._verified(token, "firmware-job", self.firmware_keys)
        if claims is None or claims.get("aud") != self.device_id or claims.get("seq", 0) <= self.job_seq:
            return []
        self.job_seq = int(claims["seq"])
        job_id = str(claims.get("job_id"))
        if claims.get("cancel"):
            kinds = ["cancelled"]
        else:
            self.jobs.append(job_id)
            ending = "rolled_back" if self.fails_upgrades else "executed"
            kinds = ["pending", "downloading", "verifying", "installing", "rebooting", "committing", ending]
            if ending == "executed":
                self.firmware_version = str(claims.get("version"))
        return [
            self._event("firmware", kind, {"job_id": job_id, "version": claims.get("version")}, now) for kind in kinds
        ]

    def _event(self, typ: str, kind: str, data: dict[str, Any], now: float) -> bytes:
        """An event as PROTOCOL.md has it (the wire contract only: the cloud imports no agent code)."""
        self.event_seq += 1
        event = {
            "event_id": uuid7(now), "device_id": self.device_id, "seq": self.event_seq, "type": typ, "kind": kind,
            "occurred_at": to_rfc3339_ms(now), "source": typ, "data": data, "held_since": None,
        }  # fmt: skip
        return json.dumps(event, separators=(",", ":")).encode()

    def state(self) -> bytes:
        report: dict[str, Any] = {
            "device_id": self.device_id,
            "online": True,
            "model": "R29",
            "firmware": {"version": self.firmware_version, "slot": "a"},
            "entitlements": {"seq": self.seq or None, "mode": self.mode},
        }
        return json.dumps(report).encode()


Broker = tuple[str, int]
RECONNECT: Final = Backoff(0.5, 30.0)  # the first retry within a second, none more than 30 s apart


async def run_device(
    device: SimulatedDevice,
    brokers: Sequence[Broker],
    root: PublicKey,
    *,
    username: str | None,
    password: str | None,
    first: int = 0,
    rng: random.Random | None = None,
) -> None:
    """One device's session, reconnecting for ever: to ``brokers[first]``, and to the next one each
    time a connection fails or is lost."""
    rng = rng or random.Random()  # noqa: S311 -- spreading retries, not secrets
    topics = Topics(PREFIX, device.device_id)
    trust, entitlements, state = topics.trust, topics.entitlements, topics.state
    firmware, events = topics.firmware, topics.events
    failures = 0
    for attempt in itertools.count(first):
        node = attempt % len(brokers)
        host, port = brokers[node]
        session = aiomqtt.Client(
            host, port, identifier=device.device_id, username=username, password=password, clean_session=False,
            keepalive=60,
        )  # fmt: skip
        # As the agent (agent/sync/client.py): a document is acknowledged once taken, so one that reached a
        # connection being torn down (a SUBACK late past the subscribe's timeout) comes again on the next (the
        # session is kept) rather than be lost with it: a bench once waited 15 minutes for 3 devices of 1,000.
        session._client.manual_ack_set(True)
        try:
            async with session as client:
                granted = await client.subscribe([(trust, 1), (entitlements, 1), (firmware, 1)])
                raise_if_cancelling()
                codes = [code.value if isinstance(code, ReasonCode) else int(code) for code in granted]
                if len(codes) != 3 or max(codes) >= 0x80:  # NATS refuses when JetStream is slow to add a consumer
                    raise aiomqtt.MqttError(f"subscriptions refused: {codes}")
                if device.node is not None and device.node != node:
                    device.moves += 1
                device.node, failures = node, 0
                if device.seq:  # as the agent: state on every connection (one lost with a node is repeated)
                    await client.publish(state, device.state(), qos=1, retain=True)
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    if str(message.topic) == trust:
                        changed = device.take_trust(payload, root)
                        if changed and device.awaiting_key is not None:
                            device.take_entitlements(device.awaiting_key)
                    elif str(message.topic) == firmware:
                        reported = device.take_job(payload, time.time())
                        for event in reported:
                            await client.publish(events, event, qos=1)
                        changed = bool(reported)
                    else:
                        changed = device.take_entitlements(payload)
                    if changed:
                        await client.publish(state, device.state(), qos=1, retain=True)
                        raise_if_cancelling()
                    if message.qos > 0:
                        client._client.ack(message.mid, message.qos)
        except aiomqtt.MqttError:
            # The agent's backoff, so a node's devices do not all come back at once and a broker
            # struggling to take sessions is not buried under retries.
            failures += 1
            await asyncio.sleep(RECONNECT.delay(failures, rng))


def raise_file_limit() -> int:
    """As many sockets as the hard limit allows (one per device)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def summary(fleet: Sequence[SimulatedDevice]) -> str:
    """One line for the operator: how many devices hold which ``seq``, moved to another broker, refusals."""
    held = collections.Counter(device.seq for device in fleet)
    holding = ", ".join(f"{count} at seq {seq}" for seq, count in sorted(held.items()))
    moved = sum(1 for device in fleet if device.moves)
    refused = sum(device.refused for device in fleet)
    return f"fleet: {len(fleet)} devices ({holding}); {moved} moved to another broker; {refused} documents refused"


async def run_fleet(
    fleet: Sequence[SimulatedDevice],
    brokers: Sequence[Broker],
    root: PublicKey,
    *,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Run ``fleet`` until cancelled (connecting them a hundred at a time, spread over ``brokers``)."""
    async with asyncio.TaskGroup() as tasks:
        for i, device in enumerate(fleet):
            session = run_device(device, brokers, root, username=username, password=password, first=i % len(brokers))
            tasks.create_task(session)
            if i % 100 == 99:
                await asyncio.sleep(0.05)
