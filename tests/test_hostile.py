"""Hostile input never ends the daemon (issue 12): a nesting bomb on every inbound topic, retained and
plain; a defect tripped by one message, by one control request, by one stimulus; nested JSON on the
command line and in the config. Each is refused with a reason, and the daemon keeps running and keeps
taking what is valid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.control import server as control
from agent.drivers.mr01 import encode
from agent.errors import DocumentRefused
from agent.runtime.faults import FAIL_ENV
from agent.store.database import DB_NAME
from protocol import boundedjson, jws, reasons
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import EDGE_AGENT, ProcessDaemon, device_config, raise_event
from tests.support.documents import b64, forge, svc
from tests.support.sync import PAID, Docs, mode_is, provision, provisioned, status_until

TOPICS = {"trust": "trust", "entitlements": "entitlements", "firmware": "firmware-job", "commands": "command"}
REFUSAL_TYPE = {"trust": "entitlement", "entitlements": "entitlement", "firmware-job": "firmware", "command": "command"}


def nesting_bomb(depth: int = 2000, opener: str = "[", closer: str = "]") -> str:
    """An unsigned compact JWS whose protected header nests ``depth`` deep (about 5 KB at 2,000)."""
    header = (opener * depth + closer * depth).encode()
    return f"{b64(header)}.{b64(b'{}')}.{b64(bytes(64))}"


OBJECT_BOMB = nesting_bomb(600, '{"a":', "}")


@contextlib.asynccontextmanager
async def planted(
    broker: Broker, config_file: Path, docs: Docs, fault: str
) -> AsyncIterator[tuple[ProcessDaemon, CloudPeer]]:
    """A provisioned daemon process with a defect planted at ``fault`` (agent/runtime/faults.py), and the cloud;
    on the way out, the daemon must still be running (the defect did not end it) and is stopped."""
    daemon = ProcessDaemon(config_file, env={FAIL_ENV: fault})
    async with CloudPeer(broker) as cloud:
        await provision(cloud, docs)
        await daemon.start()
        try:
            yield daemon, cloud
            assert daemon.process is not None
            assert daemon.process.poll() is None, "the defect ended the daemon"
        finally:
            await daemon.stop()


def refusals(cloud: CloudPeer, reason: str) -> list[dict[str, Any]]:
    """The refusal events with ``reason`` the cloud has, as ``data`` objects."""
    return [e["data"] for e in cloud.events.values() if e["kind"] == "rejected" and e["data"]["reason"] == reason]


@pytest.fixture
def broker(process_broker: Broker) -> Broker:
    return process_broker


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("[" * 2000 + "]" * 2000, "nested deeper"),
        ('{"a":' * 2000 + "1" + "}" * 2000, "larger than"),
        ('{"alg":"EdDSA","kid":' + "[" * 20 + "]" * 20 + ',"typ":"trust"}', "nested deeper"),
    ],
    ids=["arrays", "objects", "a nested kid"],
)
def test_a_nesting_bomb_in_the_header_is_refused_as_malformed(header: str, detail: str) -> None:
    """A deeply nested protected header is refused before any JSON parser recurses into it."""
    token = f"{b64(header.encode())}.{b64(b'{}')}.{b64(bytes(64))}"
    with pytest.raises(DocumentRefused) as refused:
        jws.parse(token)
    assert refused.value.reason == reasons.MALFORMED
    assert detail in refused.value.detail


_json: st.SearchStrategy[Any] = st.deferred(
    lambda: (
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(alphabet='[]{}"\\ab', max_size=5)
        | st.lists(_json, max_size=3)
        | st.dictionaries(st.text(max_size=3), _json, max_size=3)
    )
)


def _reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    return 0


@given(_json, st.integers(0, 6))
def test_the_nesting_measures_agree_with_the_structure(value: Any, limit: int) -> None:
    """The checks that never recurse agree with a recursive walk, brackets inside strings ignored."""
    raw = json.dumps(value).encode()
    assert boundedjson.depth(raw) == _reference_depth(value)
    assert boundedjson.exceeds(raw, limit) == (_reference_depth(value) > limit)


async def test_a_nesting_bomb_on_every_topic_is_refused_and_the_daemon_lives_on(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """The bomb as a retained and as a plain message on each inbound topic: each topic reports malformed,
    the daemon keeps running, starts again with the bombs retained, and takes a renewal after them."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    async with provisioned(broker, config_file, docs) as (daemon, cloud):
        for leaf in TOPICS:
            await cloud.publish(leaf, nesting_bomb(), retain=True)
            await cloud.publish(leaf, OBJECT_BOMB)
        expected = {(REFUSAL_TYPE[typ], typ) for typ in TOPICS.values()}

        def reported() -> set[tuple[str, str]]:
            return {
                (e["type"], e["data"]["typ"])
                for e in cloud.events.values()
                if e["kind"] == "rejected" and e["data"]["reason"] == reasons.MALFORMED
            }

        await cloud.wait_until(lambda: reported() >= expected, what="a malformed refusal on every topic")
        assert daemon.process is not None
        assert daemon.process.poll() is None
        before = len(refusals(cloud, reasons.MALFORMED))
        code, _ = await daemon.stop()
        assert code == 0
        await daemon.start()  # every bomb is retained: they arrive again at once
        await cloud.wait_until(lambda: len(refusals(cloud, reasons.MALFORMED)) >= before + 4, what="the bombs again")
        assert daemon.process.poll() is None
        await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 2), what="the renewal taken after the bombs")
    assert not [e for e in daemon.log_events() if e.get("event") in ("message_failed", "daemon_task_ended")]


async def test_a_message_that_trips_a_defect_is_reported_once_and_not_handled_again(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """A retained firmware job whose handling fails: reported as internal_error, dropped; after a restart
    it is skipped, not failed again (no crash loop, no retry for ever); a new job is judged afresh."""
    config_file = device_config(tmp_path / "device", mosquitto, root_pem)
    daemon = ProcessDaemon(config_file, env={FAIL_ENV: "inbound:firmware-job"})
    async with CloudPeer(mosquitto) as cloud:
        await provision(cloud, docs)
        await daemon.start()
        try:
            await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
            job = docs.firmware_job("j-1", version="29.30.9.1", url="http://127.0.0.1:9/x", size=1, sha256="0" * 64)
            await cloud.publish("firmware", job, retain=True)
            await cloud.wait_until(lambda: bool(refusals(cloud, reasons.INTERNAL_ERROR)), what="internal_error")
            [failure] = refusals(cloud, reasons.INTERNAL_ERROR)
            assert failure["typ"] == "firmware-job"
            assert "InjectedFault" in failure["detail"]
            await daemon.stop()
            await daemon.start()  # the fault is still planted: the retained job must not reach it again
            await status_until(daemon.data_dir, lambda s: s["connected"])
            await daemon.logged("message_skipped")
            daemon.env = None  # the defect is fixed: the same payload is still skipped, a new one is judged
            await daemon.stop()
            await daemon.start()
            await daemon.logged("message_skipped", count=2)
            later = docs.firmware_job("j-2", version="29.30.9.2", url="http://127.0.0.1:9/x", size=1, sha256="0" * 64,
                                      at="2099-01-01T00:00:00Z")  # fmt: skip
            await cloud.publish("firmware", later, retain=True)
            status = await status_until(daemon.data_dir, lambda s: (s["firmware"]["job"] or {}).get("job_id") == "j-2")
            assert status["firmware"]["job"]["state"] == "pending"
            assert len(refusals(cloud, reasons.INTERNAL_ERROR)) == 1
        finally:
            await daemon.stop()
    failed = [e for e in daemon.log_events() if e.get("event") == "message_failed"]
    assert len(failed) == 1
    assert "InjectedFault" in failed[0]["error"]


async def _exchange(data_dir: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send raw lines on one control connection; the answers, one per line."""
    reader, writer = await asyncio.open_unix_connection(str(control.socket_path(data_dir)), limit=control.MAX_LINE)
    try:
        writer.write(b"".join(lines))
        await writer.drain()
        async with asyncio.timeout(10):
            return [json.loads(await reader.readline()) for _ in lines]
    finally:
        writer.close()


async def test_the_control_socket_refuses_hostile_requests_and_survives_a_defect(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """Nested JSON, junk and a request whose handler trips a defect each get an answer naming why; the
    same connection goes on serving, and so does the daemon."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    async with planted(broker, config_file, docs, "control:check") as (daemon, _):
        answers = await _exchange(
            daemon.data_dir,
            [
                b"[" * 100_000 + b"]" * 100_000 + b"\n",
                b'{"op": "status", "id": ' + b"[" * 50 + b"]" * 50 + b"}\n",
                b"\xff\xfe not json\n",
                b'{"op": "check", "action": "issue_access", "id": 4}\n',
                b'{"op": "status", "id": 5}\n',
            ],
        )
        assert [a["ok"] for a in answers] == [False, False, False, False, True]
        assert [a["error"]["code"] for a in answers[:4]] == ["bad_request"] * 3 + ["internal_error"]
        assert "nested deeper" in answers[0]["error"]["message"]
        assert answers[4]["id"] == 5
    assert [e["op"] for e in daemon.log_events() if e.get("event") == "control_request_failed"] == ["check"]


async def test_a_stimulus_that_trips_a_defect_is_lost_alone(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """An MR01 frame whose handling fails is logged and counted; the next frame is handled as ever."""
    config_file = device_config(tmp_path / "device", broker, root_pem, drivers={"mr01_udp": "127.0.0.1:0"})
    async with planted(broker, config_file, docs, "stimulus:fall") as (daemon, cloud):
        status = await status_until(daemon.data_dir, lambda s: s["drivers"]["mr01"] is not None)
        mac = bytes.fromhex("0c1105a1b2c3")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for frame in (encode("fall", mac, 1, 90), encode("bed_exit", mac, 2)):
                sender.sendto(frame, ("127.0.0.1", status["drivers"]["mr01"]["port"]))
        await cloud.wait_until(lambda: any(e["kind"] == "bed_exit" for e in cloud.events.values()))
        status = await status_until(daemon.data_dir, lambda s: s["drivers"]["stimuli_failed"] == 1)
        assert not [e for e in cloud.events.values() if e["kind"] == "fall_detected"]
    assert "stimulus_failed" in [e.get("event") for e in daemon.log_events()]


def test_nested_json_on_the_command_line_and_in_the_config_is_refused_in_one_line(tmp_path: Path) -> None:
    """``simulate --data`` and a config file nested thousands deep: one line naming the problem, exit 2."""
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "0c110512ab34"\nmodel = ' + "[" * 5000 + "]" * 5000 + "\n")
    result = subprocess.run(
        [EDGE_AGENT, "status", "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "nested too deeply" in result.stderr
    result = subprocess.run(
        [EDGE_AGENT, "simulate", "fall", "--data", "[" * 5000, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--data is not JSON" in result.stderr


def _forgeries(docs: Docs, count: int) -> list[str]:
    """``count`` refused documents of four kinds: a bad signature, an unknown key, expired, garbage."""
    good = docs.entitlements(PAID)
    header, payload, _ = good.split(".")
    flipped = f"{header}.{payload}.{b64(bytes(64))}"
    unknown = forge(docs.keys.other, docs.claims.entitlements(seq=90))
    expired = forge(docs.keys.signing, docs.claims.entitlements(seq=91, exp=int(docs.claims.iat - 60)))
    kinds = [flipped, unknown, expired, "not a document"]
    return [kinds[i % 4] + ("" if i < 4 else " " * (i // 4 % 3)) for i in range(count)]


async def test_a_flood_of_refused_documents_keeps_the_bound_and_the_alarms(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """5,000 refused documents against a cap of 100 while 60 alarms are held (doors limited): the queue
    never passes its cap, its depth is what is stored, no alarm is evicted, the refusals arrive as a
    few counted events, and once renewed every alarm goes out."""
    config_file = device_config(tmp_path / "device", broker, root_pem, outbox={"max_events": 100})
    lapsed = [svc("door", "door:door-2", days=-1)]
    async with provisioned(broker, config_file, docs, lapsed, mode="limited") as (daemon, cloud):
        answers = [
            await raise_event(daemon.data_dir, "alarm", "tamper", data={"device": f"panel-{i}"}) for i in range(60)
        ]
        assert all(a["ok"] and a["held"] for a in answers)
        depths: list[int] = []
        forgeries = _forgeries(docs, 5000)
        for start in range(0, len(forgeries), 20):
            await asyncio.gather(*(cloud.publish("entitlements", f) for f in forgeries[start : start + 20]))
            if start % 500 == 0:
                depths.append(_queued(daemon.data_dir))

        # Every one is refused, or dropped in the flood (and counted as dropped): amqtt does not bound what
        # it has in flight to a client, so the device's receive queue fills; Mosquitto and NATS never do.
        def accounted(status: dict[str, Any]) -> bool:
            return int(status["inbound"]["refused"]) + int(status["inbound"]["dropped"]) >= 5000

        await status_until(daemon.data_dir, accounted, seconds=60)
        status = await status_until(daemon.data_dir, lambda s: s["outbox"]["depth"] == _queued(daemon.data_dir))
        if broker.kind != "amqtt":
            assert status["inbound"]["dropped"] == 0
        assert 60 <= status["outbox"]["depth"] <= 100
        assert max(depths) <= 100
        assert status["outbox"]["held"] == 60
        assert status["outbox"]["evicted"].get("alarm", 0) == 0
        assert len(_refused_to(cloud)) < 100, "the refusals were not coalesced"
        assert cloud.state is not None
        assert cloud.state["outbox"]["depth"] >= 0
        assert daemon.process is not None
        assert daemon.process.poll() is None
        await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
        await cloud.wait_until(lambda: len([e for e in cloud.events.values() if e["type"] == "alarm"]) == 60)
        await status_until(daemon.data_dir, lambda s: s["outbox"]["depth"] == 0 == _queued(daemon.data_dir))


def _queued(data_dir: Path) -> int:
    """The rows queued in the daemon's database, read beside it."""
    with sqlite3.connect(data_dir / DB_NAME, timeout=10) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])


def _refused_to(cloud: CloudPeer) -> list[dict[str, Any]]:
    return [e["data"] for e in cloud.events.values() if e["kind"] == "rejected" and e["data"]["typ"] == "entitlements"]


async def test_a_firmware_step_that_trips_a_defect_fails_the_job_not_the_daemon(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """A defect while downloading: the job is failed with reason internal_error (reported to the cloud),
    and the daemon goes on serving."""
    config_file = device_config(tmp_path / "device", broker, root_pem)
    async with planted(broker, config_file, docs, "firmware:downloading") as (daemon, cloud):
        job = docs.firmware_job("j-1", version="29.30.9.1", url="http://127.0.0.1:9/x", size=1, sha256="0" * 64)
        await cloud.publish("firmware", job, retain=True)
        status = await status_until(daemon.data_dir, lambda s: _job_state(s) == "failed")
        assert status["firmware"]["job"]["reason"] == "internal_error"
        await cloud.wait_until(
            lambda: any(e["type"] == "firmware" and e["kind"] == "failed" for e in cloud.events.values())
        )
    assert "firmware_step_failed" in [e.get("event") for e in daemon.log_events()]


def _job_state(status: dict[str, Any]) -> str | None:
    job = status["firmware"]["job"]
    return None if job is None else str(job["state"])
