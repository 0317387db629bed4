"""The daemon against real brokers (amqtt and Mosquitto, each on a free port), driven as code outside the
project would: signed documents published with a plain MQTT client, events read back (PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.control import server as control
from agent.sync.inflight import InFlight
from tests.support.brokers import Broker, Mosquitto, make_broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import USERS, InProcessDaemon, ProcessDaemon, device_config, raise_event
from tests.support.documents import DEVICE_ID, Keys, forge, svc
from tests.support.sync import PAID, Docs, mode_is, provision


@pytest.fixture(params=["amqtt", "mosquitto", "nats"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker that requires user names and checks passwords."""
    handle = make_broker(request.param, tmp_path / "broker", users=USERS)
    await handle.start()
    yield handle
    await handle.stop()


@pytest.fixture
def config_file(tmp_path: Path, broker: Broker, root_pem: Path) -> Path:
    """A device config for the broker."""
    return device_config(tmp_path / "device", broker, root_pem)


@pytest.fixture
async def cloud(broker: Broker) -> AsyncIterator[CloudPeer]:
    """The cloud's MQTT client."""
    async with CloudPeer(broker) as peer:
        yield peer


async def test_retained_documents_are_taken_and_state_is_reported(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """Documents retained before the device starts are verified and put in force; the state says so, fully."""
    await provision(cloud, docs)
    async with InProcessDaemon(config_file):
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1), what="state: normal, seq 1")
    state = next(s for s in reversed(cloud.states) if s.get("online"))
    assert state["device_id"] == DEVICE_ID
    assert state["model"] == "R29"
    assert state["firmware"] == {"version": "29.30.2.805", "slot": "a"}
    assert state["entitlements"]["exp"].endswith("Z")
    assert state["outbox"]["depth"] == 0
    assert state["outbox"]["held"] == 0
    assert state["at"].endswith("Z")
    assert cloud.state == {"device_id": DEVICE_ID, "online": False}  # and a clean stop says so


async def test_events_reach_the_cloud_in_order_with_seq_and_event_id(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """Raised events arrive with PROTOCOL.md's fields, seq 1, 2, 3 in the order raised."""
    await provision(cloud, docs)
    async with InProcessDaemon(config_file) as device:
        answers = [
            await raise_event(device.data_dir, "sensor", kind, "mr01-bedroom", {"sensor": "mr01-bedroom", **extra})
            for kind, extra in (("fall_detected", {}), ("bed_exit", {}), ("presence", {"present": True}))
        ]
        await cloud.wait_until(lambda: len(cloud.events) == 3, what="3 events")
    assert [a["seq"] for a in answers] == [1, 2, 3]
    by_seq = sorted(cloud.events.values(), key=lambda e: e["seq"])
    assert [e["kind"] for e in by_seq] == ["fall_detected", "bed_exit", "presence"]
    first = by_seq[0]
    assert set(first) >= {"event_id", "device_id", "seq", "type", "kind", "occurred_at", "source", "data", "held_since"}
    assert (first["device_id"], first["type"], first["source"], first["held_since"]) == (
        DEVICE_ID,
        "sensor",
        "mr01-bedroom",
        None,
    )
    assert first["event_id"] == answers[0]["event_id"]


async def test_an_alarm_is_held_while_doors_are_limited_and_sent_on_renewal(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """While door-2 lacks its service the alarm waits (counted); the renewal releases it with held_since."""
    await provision(cloud, docs, services=[])
    async with InProcessDaemon(config_file) as device:
        await cloud.wait_until(lambda: mode_is(cloud, "limited", 1), what="limited")
        answer = await raise_event(device.data_dir, "alarm", "tamper", "door-1")
        assert answer["held"] is True
        status = (await control.request(device.data_dir, {"op": "status"}))["status"]
        assert status["outbox"]["held"] == 1
        await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
        await cloud.wait_until(lambda: len(cloud.events) == 1, what="the held alarm")
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 2), what="normal after renewal")
    alarm = next(iter(cloud.events.values()))
    assert (alarm["type"], alarm["kind"], alarm["seq"]) == ("alarm", "tamper", answer["seq"])
    assert alarm["held_since"] is not None


async def test_refused_documents_become_events_with_their_reason(
    cloud: CloudPeer, docs: Docs, keys: Keys, config_file: Path
) -> None:
    """Garbage, a document on the wrong topic and a forged command are refused, reported, and change nothing."""
    await provision(cloud, docs)
    async with InProcessDaemon(config_file):
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        await cloud.publish("entitlements", "garbage")
        await cloud.publish("firmware", docs.entitlements(PAID))
        forged = forge(
            keys.other,
            {
                "aud": DEVICE_ID,
                "iat": int(time.time()),
                "exp": int(time.time()) + 60,
                "seq": 1,
                "id": "x",
                "op": "reboot",
            },
            typ="command",
        )
        await cloud.publish("commands", forged)
        await cloud.wait_until(lambda: len(cloud.events) == 3, what="3 refusal events")
        assert mode_is(cloud, "normal", 1)
    got = {(e["type"], e["kind"], e["data"]["reason"]) for e in cloud.events.values()}
    assert got == {
        ("entitlement", "rejected", "malformed"),
        ("firmware", "rejected", "wrong_typ"),
        ("command", "rejected", "unknown_kid"),
    }
    assert cloud.replies == {}


async def test_expiry_notices_are_sent_once(cloud: CloudPeer, docs: Docs, config_file: Path) -> None:
    """A door service four days from expiry raises one expiring_5d notice, not again after a restart."""
    await provision(cloud, docs, services=[svc("door", "door:door-2", days=4, base=time.time())])
    async with InProcessDaemon(config_file):
        await cloud.wait_until(lambda: len(cloud.events) == 1, what="the notice")
    async with InProcessDaemon(config_file) as device:
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        await raise_event(device.data_dir, "health", "marker")
        await cloud.wait_until(lambda: len(cloud.events) == 2, what="the marker")
    kinds = sorted(e["kind"] for e in cloud.events.values())
    assert kinds == ["expiring_5d", "marker"]
    notice = next(e for e in cloud.events.values() if e["kind"] == "expiring_5d")
    assert (notice["type"], notice["data"]["service"], notice["data"]["subject"]) == (
        "entitlement",
        "door",
        "door:door-2",
    )


async def test_commands_queued_while_offline_are_answered_on_reconnect(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """The persistent session keeps a command sent while the device was down; it is answered once it is back."""
    await provision(cloud, docs)
    async with InProcessDaemon(config_file):
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
    await cloud.publish("commands", docs.command("resync", command_id="while-offline"))
    async with InProcessDaemon(config_file):
        await cloud.wait_until(lambda: "while-offline" in cloud.replies, what="the reply")
    assert cloud.replies["while-offline"] == [{"id": "while-offline", "ok": True}]


async def test_the_device_resubscribes_after_the_broker_restarts(
    process_broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """After the broker comes back the device reconnects, subscribes again, and answers new commands."""
    broker = process_broker
    config_file = device_config(tmp_path / "restarting", broker, root_pem)
    async with CloudPeer(broker) as cloud, InProcessDaemon(config_file) as device:
        await provision(cloud, docs)
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        assert device.daemon is not None
        connections = device.daemon.session.connections
        await broker.stop()
        await broker.start()
        await cloud.wait_until(
            lambda: (
                device.daemon is not None
                and device.daemon.session.connections > connections
                and device.daemon.session.connected.is_set()
            ),
            what="a new connection",
        )
        await cloud.publish("commands", docs.command("resync", command_id="after-restart"))
        await cloud.wait_until(lambda: "after-restart" in cloud.replies, what="the reply after the restart")


async def test_a_broker_that_stops_acknowledging_is_left_after_the_timeout_and_nothing_is_lost(
    mosquitto: Broker, tmp_path: Path, root_pem: Path
) -> None:
    """A broker that keeps the connection but answers nothing (frozen): a publish that has waited
    ``mqtt.timeout`` for its PUBACK ends the connection (agent/sync/inflight.py, the pump's one deadline);
    once the broker answers again the device reconnects and the event arrives."""
    assert isinstance(mosquitto, Mosquitto)  # a process of its own, to freeze
    config_file = device_config(tmp_path / "device", mosquitto, root_pem, mqtt={"timeout": 1.0, "keepalive": 60})
    with structlog.testing.capture_logs() as logs:
        async with CloudPeer(mosquitto) as cloud, InProcessDaemon(config_file) as device:
            assert device.daemon is not None
            session = device.daemon.session
            await cloud.wait_until(  # logged once its PUBACK came: nothing of the session's awaits the broker now
                lambda: any(e["event"] == "state_published" for e in logs), what="the state report"
            )
            failures = session.failures
            mosquitto.pause()
            try:
                frozen_at = time.monotonic()
                raised = await raise_event(device.data_dir, "health", "while_frozen")  # durable; its publish waits
                await cloud.wait_until(lambda: session.failures > failures, 10, what="the connection left")
                left_after = time.monotonic() - frozen_at
            finally:
                mosquitto.resume()
            await cloud.wait_until(lambda: raised["event_id"] in cloud.events, what="the event, after the broker woke")
    cause = next(e["cause"] for e in logs if e["event"] == "mqtt_disconnected")
    assert cause == "no PUBACK within 1 s"
    assert 1.0 <= left_after < 10.0  # the deadline (then the client's own goodbye), not keepalive's 90 s


def test_the_puback_deadline_is_the_oldest_publish_in_flights() -> None:
    now = 100.0
    in_flight = InFlight(3, 2.0, lambda: now)
    assert in_flight.left() == 2.0  # nothing in flight: look again in one timeout
    in_flight.began[1], in_flight.began[2] = 99.0, 100.5
    assert in_flight.left() == 1.0  # slot 1's, begun first
    now = 101.5
    assert in_flight.left() == -0.5  # overdue
    in_flight.began[1] = math.inf  # its PUBACK came
    assert in_flight.left() == 1.0  # slot 2's now


async def test_a_refused_login_is_logged_with_its_cause_and_retried_slowly(
    broker: Broker, tmp_path: Path, root_pem: Path
) -> None:
    """A wrong password is not reported as a timeout: the cause is named and the retry uses the slow backoff."""
    config_file = device_config(
        tmp_path / "device", broker, root_pem, mqtt={"password": "wrong", "refused_min": 0.4, "refused_max": 0.4}
    )
    with structlog.testing.capture_logs() as logs:
        async with InProcessDaemon(config_file) as device:
            assert device.daemon is not None
            await asyncio.wait_for(device.daemon.session.failed.wait(), 20)
            assert not device.daemon.session.connected.is_set()
    refusal = next(e for e in logs if e["event"] == "mqtt_disconnected")
    assert refusal["refused"] is True
    assert "refused" in refusal["cause"]
    assert any(
        word in refusal["cause"] for word in ("user name or password", "not authorized", "Not authorized", "Bad user")
    )
    wait = next(e for e in logs if e["event"] == "mqtt_reconnect_wait")
    assert wait["seconds"] >= 0.4
    assert "wrong" not in str(logs)  # no secret in the logs


async def test_a_clean_stop_says_offline_and_exits_0_within_5_seconds(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """SIGTERM: the state turns offline, the process exits 0, well within 5 s."""
    await provision(cloud, docs)
    daemon = ProcessDaemon(config_file)
    await daemon.start()
    await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGUSR1)  # the task dump an operator asks for: the daemon goes on

    def dumped() -> dict[str, list[str]]:
        return {e["task"]: e["frames"] for e in daemon.log_events() if e.get("event") == "task_dump"}

    await cloud.wait_until(lambda: "session" in dumped(), what="the task dump")
    assert any("session.py" in frame for frame in dumped()["session"]), dumped()["session"]
    code, seconds = await daemon.stop()
    assert code == 0
    assert seconds < 5
    await cloud.wait_until(lambda: cloud.state == {"device_id": DEVICE_ID, "online": False}, what="online: false")
    assert "daemon_stopped" in [e.get("event") for e in daemon.log_events()]


async def test_a_killed_device_leaves_its_last_will(cloud: CloudPeer, docs: Docs, config_file: Path) -> None:
    """SIGKILL: the broker publishes the will, {"device_id": D, "online": false}, retained."""
    await provision(cloud, docs)
    daemon = ProcessDaemon(config_file)
    await daemon.start()
    await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
    await daemon.kill()
    await cloud.wait_until(lambda: cloud.state == {"device_id": DEVICE_ID, "online": False}, what="the last will")


async def test_mqtt_5_on_mosquitto(tmp_path: Path, root_pem: Path, docs: Docs) -> None:
    """With protocol = "5" the device keeps a session (expiry set), takes documents and sends events.

    Mosquitto only: amqtt 0.12 speaks MQTT 3.1.1 alone (docs/sync.md)."""
    broker = make_broker("mosquitto", tmp_path / "v5-broker", users=USERS)
    await broker.start()
    try:
        config_file = device_config(tmp_path / "v5-device", broker, root_pem, mqtt={"protocol": "5"})
        async with CloudPeer(broker) as cloud:
            await provision(cloud, docs)
            async with InProcessDaemon(config_file) as device:
                await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
                await raise_event(device.data_dir, "health", "over_v5")
                await cloud.wait_until(lambda: len(cloud.events) == 1)
            await cloud.publish("commands", docs.command("resync", command_id="queued-for-v5"))
            async with InProcessDaemon(config_file):
                await cloud.wait_until(lambda: "queued-for-v5" in cloud.replies, what="a reply from the kept session")
    finally:
        await broker.stop()


async def test_a_cancellation_swallowed_by_wait_for_is_raised_again() -> None:
    """Python 3.11's wait_for returns instead of raising when cancelled as its future completes; the
    session's loops raise the cancellation anyway, so a stopping daemon never waits on them for ever."""
    from protocol.cancelling import raise_if_cancelling

    done = asyncio.get_running_loop().create_future()

    async def loop_like_a_worker() -> None:
        while True:
            await asyncio.wait_for(done, 5)  # as aiomqtt's publish does
            raise_if_cancelling()
            await asyncio.Event().wait()  # the next queue.get(): would wait for ever

    task = asyncio.create_task(loop_like_a_worker())
    await asyncio.sleep(0)
    done.set_result(None)  # completes...
    task.cancel()  # ...as the cancellation arrives
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_a_task_that_ends_on_its_own_stops_the_daemon_as_failed(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """Only a stop request may end the daemon's tasks; if one ends anyway (a bug), the daemon stops
    cleanly, says which, and reports FAILED (exit 2) so its supervisor starts it again; never hangs."""
    from agent.daemon import Outcome

    await provision(cloud, docs)
    device = InProcessDaemon(config_file)
    await device.start()
    await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
    assert device._task is not None
    with structlog.testing.capture_logs() as logged:
        [session] = [t for t in asyncio.all_tasks() if t.get_name() == "session"]
        session.cancel()  # nobody asked the daemon to stop
        async with asyncio.timeout(10):
            outcome = await device._task
    assert outcome is Outcome.FAILED
    assert {"event": "daemon_task_ended", "task": "session", "error": "None", "log_level": "error"} in logged


async def test_a_document_that_arrives_before_the_trust_bringing_its_key_is_taken_once_trust_comes(
    cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """A broker that orders per topic only (NATS) may deliver a retained entitlements document before
    the trust document that lists its signing key: it is refused (and reported), kept, and judged
    again once that trust document is accepted, not lost until the cloud re-issues it."""
    async with InProcessDaemon(config_file) as device:
        await cloud.wait_until(lambda: mode_is_unprovisioned(cloud))
        await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
        await cloud.wait_until(
            lambda: any(e["kind"] == "rejected" and e["data"]["reason"] == "unknown_kid" for e in cloud.events.values())
        )
        await cloud.publish("trust", docs.trust(), retain=True)
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1), what="the document judged again")
        assert device.daemon is not None


def mode_is_unprovisioned(cloud: CloudPeer) -> bool:
    state = cloud.state
    return bool(state and state.get("online") and state["entitlements"]["mode"] == "unprovisioned")


async def test_aiomqtts_cancelled_connect_callback_is_logged_quietly() -> None:
    """aiomqtt's _on_disconnect raises CancelledError in paho's callback when the connect it waited for was
    cancelled (a stop while connecting): the loop's handler (protocol/logs.py) leaves it out of the log's
    tracebacks; any other callback error still reaches the default handler."""
    import aiomqtt

    from protocol import logs

    loop = asyncio.get_running_loop()
    defaulted: list[dict[str, Any]] = []
    logs.quiet_library_defects(loop)
    loop.default_exception_handler = defaulted.append  # type: ignore[method-assign, assignment]
    try:
        client = aiomqtt.Client("127.0.0.1", 1)
        client._connected.cancel()
        loop.call_soon(client._on_disconnect, None, None, None, 0)  # type: ignore[arg-type]  # as paho calls it

        def defect() -> None:
            raise ValueError("a real defect")

        loop.call_soon(defect)
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        del loop.default_exception_handler
    assert [type(c["exception"]).__name__ for c in defaulted] == ["ValueError"]
