"""Commands over real brokers: each op's reply and effect, one reply per command id, and the same
after the daemon is killed between acting and replying."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.store.database import DB_NAME
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import InProcessDaemon, ProcessDaemon, device_config
from tests.support.documents import Keys, write_public_key
from tests.support.sync import PAID, Docs, mode_is, provision


@pytest.fixture
def broker(process_broker: Broker) -> Broker:
    """The broker, in its own process."""
    return process_broker


@pytest.fixture
def config_file(tmp_path: Path, broker: Broker, keys: Keys) -> Path:
    """A device config for the broker."""
    return device_config(tmp_path / "device", broker, write_public_key(tmp_path / "root.pub.pem", keys.root))


@pytest.fixture
async def cloud(broker: Broker) -> AsyncIterator[CloudPeer]:
    """The cloud's MQTT client."""
    async with CloudPeer(broker) as peer:
        yield peer


def query(config_file: Path, sql: str) -> list[Any]:
    """Rows from the device's database, read by a second connection."""
    with sqlite3.connect(config_file.parent / "data" / DB_NAME) as db:
        return list(db.execute(sql))


CARD = {"id": "c-1", "kind": "card", "number": "0xA1B2"}
# (why, op, args, services in force, expected reply: ok, or the error code)
OPS: list[tuple[str, str, dict[str, Any], list[dict[str, Any]], str]] = [
    ("resync", "resync", {}, PAID, "ok"),
    ("settings", "set_settings", {"landline": True, "timezone": "Asia/Shanghai", "time_format": "24h"}, PAID, "ok"),
    ("settings: unknown zone", "set_settings", {"timezone": "Mars/Olympus_Mons"}, PAID, "invalid_args"),
    ("settings: unknown setting", "set_settings", {"colour": "red"}, PAID, "invalid_args"),
    ("settings: wrong type", "set_settings", {"landline": "yes"}, PAID, "invalid_args"),
    ("credentials issued", "issue_credentials", {"door": "door-1", "credentials": [CARD]}, PAID, "ok"),
    (
        "credentials while doors are limited",
        "issue_credentials",
        {"door": "door-1", "credentials": [CARD]},
        [],
        "service_limited",
    ),
    (
        "credentials of an unknown kind",
        "issue_credentials",
        {"door": "door-1", "credentials": [{"id": "x", "kind": "retina"}]},
        PAID,
        "invalid_args",
    ),
    ("revoke while doors are limited", "revoke_credentials", {"ids": ["c-1"]}, [], "ok"),
    ("open a door", "open_door", {"door": "door-2", "seconds": 3}, PAID, "ok"),
    ("an op the device does not know", "fly", {}, PAID, "unknown_op"),
    ("diagnostics: too many lines", "collect_diagnostics", {"lines": 100_000}, PAID, "invalid_args"),
    ("diagnostics: lines as text", "collect_diagnostics", {"lines": "10"}, PAID, "invalid_args"),
]


@pytest.mark.parametrize(("op", "args", "services", "expected"), [r[1:] for r in OPS], ids=[r[0] for r in OPS])
async def test_each_op_is_answered_once(
    op: str,
    args: dict[str, Any],
    services: list[dict[str, Any]],
    expected: str,
    cloud: CloudPeer,
    docs: Docs,
    config_file: Path,
) -> None:
    """The command gets one reply, ok or with the error code the table gives, and its effect when ok."""
    await provision(cloud, docs, services=services)
    async with InProcessDaemon(config_file):
        # online, with its inventory: the state that follows is the command's doing
        await cloud.wait_until(lambda: cloud.state is not None and "inventory" in cloud.state)
        states = len(cloud.states)
        await cloud.publish("commands", docs.command(op, args, command_id="the-command"))
        await cloud.wait_until(lambda: "the-command" in cloud.replies, what="the reply")
        if op == "resync":
            await cloud.wait_until(lambda: len(cloud.states) > states, what="the state again")
        if op == "open_door":  # carried out by the drivers, then logged (tests/test_drivers_e2e.py)
            await cloud.wait_until(lambda: any(e["type"] == "door_log" for e in cloud.events.values()))
    (reply,) = cloud.replies["the-command"]
    assert ("ok" if reply["ok"] else reply["error"]["code"]) == expected, reply
    if expected != "ok":
        assert reply["error"]["message"]
    if op == "set_settings" and expected == "ok":
        assert dict(query(config_file, "SELECT name, value FROM settings")) == {
            k: json.dumps(v) for k, v in args.items()
        }
    if op == "issue_credentials":
        assert query(config_file, "SELECT door, id, kind FROM credentials") == (
            [("door-1", "c-1", "card")] if expected == "ok" else []
        )
    if op == "open_door":
        assert query(config_file, "SELECT command_id, door, action FROM door_actions") == []  # done


async def test_a_retried_command_is_not_carried_out_twice(cloud: CloudPeer, docs: Docs, config_file: Path) -> None:
    """The same command id in a newer document (a retry) is neither carried out again nor answered again."""
    await provision(cloud, docs)
    async with InProcessDaemon(config_file) as device:
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        args = {"door": "door-1", "credentials": [CARD]}
        await cloud.publish("commands", docs.command("issue_credentials", args, command_id="once"))
        await cloud.wait_until(lambda: "once" in cloud.replies)
        await cloud.publish("commands", docs.command("issue_credentials", args, command_id="once"))
        await cloud.publish("commands", docs.command("resync", command_id="marker"))
        await cloud.wait_until(lambda: "marker" in cloud.replies, what="the marker after the retry")
        assert device.daemon is not None
    assert len(cloud.replies["once"]) == 1
    assert query(config_file, "SELECT COUNT(*) FROM commands WHERE id = 'once'") == [(1,)]


async def test_reboot_restarts_the_daemon_after_replying(cloud: CloudPeer, docs: Docs, config_file: Path) -> None:
    """reboot: one ok reply, then the same process restarts itself and comes back online."""
    await provision(cloud, docs)
    daemon = ProcessDaemon(config_file)
    await daemon.start()
    assert daemon.process is not None
    try:
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        await cloud.publish("commands", docs.command("reboot", command_id="reboot-1"))
        await cloud.wait_until(lambda: "reboot-1" in cloud.replies, what="the reply")
        await cloud.wait_until(
            lambda: [e.get("event") for e in daemon.log_events()].count("daemon_started") == 2, what="a second start"
        )
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1), what="online again")
        assert daemon.process.poll() is None  # the same process, replaced in place
        await cloud.publish("commands", docs.command("resync", command_id="after-reboot"))
        await cloud.wait_until(lambda: "after-reboot" in cloud.replies)
    finally:
        await daemon.stop()
    assert cloud.replies["reboot-1"] == [{"id": "reboot-1", "ok": True}]


async def test_diagnostics_on_request_carry_the_checks_and_the_last_log_lines_without_secrets(
    broker: Broker, cloud: CloudPeer, docs: Docs, tmp_path: Path, keys: Keys
) -> None:
    """collect_diagnostics: the reply holds the daemon's own checks (config, keys, clock, disk, the
    broker as it sees it) and its last N log lines, as written; the broker's password (in the config)
    is in none of it, and a log field named like a secret is redacted."""
    from tests.support.daemons import DEVICE_PASSWORD

    config_file = device_config(tmp_path / "device", broker, write_public_key(tmp_path / "root.pub.pem", keys.root))
    await provision(cloud, docs)
    daemon = ProcessDaemon(config_file)
    await daemon.start()
    try:
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        await cloud.publish("commands", docs.command("collect_diagnostics", {"lines": 5}, command_id="diag-1"))
        await cloud.wait_until(lambda: "diag-1" in cloud.replies, what="the reply")
        await cloud.publish("commands", docs.command("collect_diagnostics", {}, command_id="diag-2"))
        await cloud.wait_until(lambda: "diag-2" in cloud.replies, what="the reply")
    finally:
        await daemon.stop()
    [reply] = cloud.replies["diag-1"]
    assert reply["ok"] is True
    report = reply["diagnostics"]
    checks = {f["check"]: f["status"] for f in report["doctor"]}
    assert {"config", "trust roots", "clock", "disk", "broker"} <= set(checks)
    assert (checks["config"], checks["broker"], checks["clock"]) == ("ok", "ok", "ok")
    assert 1 <= len(report["log"]) <= 5
    logged = [json.loads(line) for line in report["log"]]
    assert all("event" in entry and "level" in entry for entry in logged)
    [everything] = cloud.replies["diag-2"]
    assert len(everything["diagnostics"]["log"]) > 5  # the default: up to 200 lines
    assert any(json.loads(line)["event"] == "daemon_started" for line in everything["diagnostics"]["log"])
    assert DEVICE_PASSWORD not in json.dumps(cloud.replies)
    assert len(json.dumps(everything)) < 64 * 1024


def test_a_log_field_named_like_a_secret_is_redacted_and_kept_for_diagnostics() -> None:
    import structlog

    from protocol import logs

    saved = structlog.get_config()
    logs.configure("info", json=True)
    try:
        structlog.get_logger("test").warning(
            "login_tried", password="hunter2", api_token="t0k", user="u", token_sha256="ab12", kid="k1"
        )
    finally:
        structlog.configure(**saved)  # the rest of the session logs as it did
    [line] = logs.recent(1)
    entry = json.loads(line)
    assert (entry["password"], entry["api_token"], entry["user"]) == ("[redacted]", "[redacted]", "u")
    assert (entry["token_sha256"], entry["kid"]) == ("ab12", "k1")  # what describes a secret is not one


async def test_every_command_is_answered_exactly_once_across_kills(
    broker: Broker, cloud: CloudPeer, docs: Docs, config_file: Path
) -> None:
    """Commands keep coming while the daemon is SIGKILLed at random instants and restarted: each command's
    effect happens once and it gets one reply (after dedupe by id); what the broker does not deliver again
    after a crash (amqtt), the cloud retries with the same id, as a real cloud does for unanswered commands."""
    rng = random.Random(20261122)
    await provision(cloud, docs)
    daemon = ProcessDaemon(config_file)
    sent: dict[str, dict[str, Any]] = {}
    for round_ in range(6):
        await daemon.start()
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1), what="online")
        for command_id, args in sent.items():  # the cloud's retry of what is still unanswered
            if command_id not in cloud.replies:
                await cloud.publish("commands", docs.command("issue_credentials", args, command_id=command_id))
        for i in range(8):
            command_id = f"r{round_}-{i}"
            sent[command_id] = {"door": "door-1", "credentials": [{"id": command_id, "kind": "pin", "code": "1234"}]}
            await cloud.publish("commands", docs.command("issue_credentials", sent[command_id], command_id=command_id))
        await asyncio.sleep(rng.uniform(0, 0.05))  # a random instant in the middle of the work
        await daemon.kill()
    await daemon.start()
    try:
        await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
        deadline = time.monotonic() + 60
        while set(sent) - set(cloud.replies) and time.monotonic() < deadline:
            for command_id in sorted(set(sent) - set(cloud.replies)):  # retry what is still unanswered
                await cloud.publish(
                    "commands", docs.command("issue_credentials", sent[command_id], command_id=command_id)
                )
            with contextlib.suppress(AssertionError):
                await cloud.wait_until(lambda: set(sent) <= set(cloud.replies), seconds=3, what="all replies")
    finally:
        await daemon.stop()
    assert set(sent) <= set(cloud.replies)
    for command_id, replies in cloud.replies.items():
        assert all(r == {"id": command_id, "ok": True, "issued": 1} for r in replies), replies
    assert query(config_file, "SELECT COUNT(*), COUNT(DISTINCT id) FROM commands") == [(len(sent), len(sent))]
    assert sorted(r[0] for r in query(config_file, "SELECT id FROM credentials")) == sorted(sent)


def test_a_credentials_further_members_are_kept_for_the_reader_and_its_value_never() -> None:
    """issue_credentials: the members the device does not name (a reader's own data) are stored with the
    credential; its value only as a SHA-256; an argument of the wrong type is refused naming it."""
    from agent.entitlements.policy import Decision
    from agent.intake.commands import plan
    from agent.local.credentials import value_digest
    from protocol.claims import CommandClaims

    def allowed(_action: str, _subject: str | None) -> Decision:
        return Decision(True, "ok", None, "")

    given = {"id": "c-1", "kind": "card", "value": "04A1B2", "reader_data": {"format": "wiegand26"}}
    claims = CommandClaims(aud="0c110512ab34", iat=1, exp=2, seq=1, id="x-1", op="issue_credentials",
                           args={"door": "door-1", "credentials": [given]})  # fmt: skip
    issued = plan(claims, allowed)
    assert issued.reply == {"id": "x-1", "ok": True, "issued": 1}
    assert issued.effect.issue is not None
    [(cid, kind, body)] = issued.effect.issue.rows
    stored = json.loads(body)
    assert (cid, kind, stored["reader_data"], stored["value_sha256"]) == (
        "c-1", "card", {"format": "wiegand26"}, value_digest("04A1B2"),
    )  # fmt: skip
    assert "04A1B2" not in body
    bad = CommandClaims(aud="0c110512ab34", iat=1, exp=2, seq=2, id="x-2", op="issue_credentials",
                        args={"door": "door-1", "credentials": [{**given, "dynamic": "yes"}]})  # fmt: skip
    refused = plan(bad, allowed).reply
    assert refused["error"]["code"] == "invalid_args"
    assert refused["error"]["message"].startswith("credentials[0].dynamic: "), refused
