"""The local story (README's main command until the sync daemon exists).

The cloud stub makes keys and signs documents; a device accepts them through the same path as MQTT
would use, and prints the decisions they yield and why. Everything lands in ``demo-data/`` so the
CLIs can be tried afterwards on the same device.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

from agent import control, logs
from agent.clock import ClockSource
from agent.config import load_config, load_trust_roots
from agent.daemon import Daemon
from agent.device import Device
from agent.entitlements import jws, policy
from agent.entitlements.jws import key_thumbprint
from agent.entitlements.notices import expiry_notices
from agent.errors import DocumentRefused
from agent.stimuli import Stimulus
from agent.timefmt import to_rfc3339
from cloud_stub import broker as embedded_broker
from cloud_stub.issuer import Issuer, service
from cloud_stub.keys import write_keypair
from cloud_stub.link import DeviceLink

DAY = 86_400.0
DEVICE_ID = "0c110512ab34"

CONFIG = """\
device_id = "{device_id}"
model = "R29"
firmware_version = "29.30.2.805"
data_dir = "device"
trust_roots = ["cloud-keys/root.pub.pem"]

[mqtt]
url = "mqtt://127.0.0.1:1883"
topic_prefix = "smartplus/v1"

[drivers]
kind = "simulated"
"""


def say(text: str = "") -> None:
    """Print one line of the story."""
    print(text, flush=True)


def show(label: str, decision: policy.Decision) -> None:
    """Print a decision the way ``edge-agent check`` does."""
    verdict = "allowed" if decision.allowed else "DENIED "
    say(f"   {label:<32} {verdict} {decision.reason:<16} {decision.detail}")


class Cast(NamedTuple):
    """What the first act leaves to the second: the cloud's issuer and the project as sold."""

    issuer: Issuer
    project: dict[str, Any]
    services: list[dict[str, Any]]


async def story(workdir: Path) -> Cast:
    """Act one, in ``workdir`` (wiped first): documents verified and decided on, no network."""
    shutil.rmtree(workdir, ignore_errors=True)
    keys = workdir / "cloud-keys"
    now = float(int(time.time()))

    say("1. The cloud makes its keys: a root key, pinned on every device, and a signing key.")
    root, signing = write_keypair(keys, "root"), write_keypair(keys, "signing")
    say(f"   root kid {key_thumbprint(root.public_key())}, signing kid {key_thumbprint(signing.public_key())}")
    (workdir / "agent.toml").write_text(CONFIG.format(device_id=DEVICE_ID))

    config = load_config(workdir / "agent.toml", {})
    device = await Device.open(config, load_trust_roots(config), ClockSource.system())
    try:
        say(f"\n2. Door phone {config.device_id} ({config.model}) starts with nothing but the root key.")
        say(f"   mode: {device.status()['mode']}")
        show("issue_access door:door-2", device.decide("issue_access", "door:door-2"))

        issuer = Issuer(root=root, signing=signing)
        say("\n3. The cloud publishes a trust document, signed by the root, listing the signing key.")
        accepted = await device.accept(issuer.trust([(signing, now + 365 * DAY)], iat=now, exp=now + 365 * DAY))
        say(f"   accepted: {accepted.typ} seq {accepted.seq}")

        say("\n4. Commercial project p-100 has three doors; door-1 is free, door-2 is paid for a year,")
        say("   door-3 only for ten more days. One personnel app, attendance for up to 200, MR01 call alerts.")
        project = {
            "id": "p-100",
            "type": "commercial",
            "created": "2025-07-01",
            "timezone": "Asia/Shanghai",
            "doors": ["door-1", "door-2", "door-3"],
            "free_apps": 0,
        }
        services = [
            service("door", "door:door-2", now + 365 * DAY),
            service("door", "door:door-3", now + 10 * DAY),
            service("personnel_app", "account:a-42", now + 365 * DAY),
            service("attendance", "project", now + 365 * DAY, plan="0-200"),
            service("sensor_call_alert", "project", now + 365 * DAY),
        ]
        token = issuer.entitlements(DEVICE_ID, project, services, iat=now, exp=now + 30 * DAY)
        accepted = await device.accept(token, expected_typ="entitlements")
        say(f"   accepted: {accepted.typ} seq {accepted.seq}; mode: {device.status()['mode']}")

        say("\n5. What the device decides now, and why:")
        for action, subject in [
            ("issue_access", "door:door-2"),
            ("report_alarm", None),
            ("app_call", "account:a-42"),
            ("app_call", "account:a-99"),
            ("attendance", 150),
            ("attendance", 250),
            ("sensor_call_alert", None),
            ("elevator_control", None),
        ]:
            show(f"{action} {subject or ''}".strip(), device.decide(action, subject))
        for notice in expiry_notices(device.entitlements, device.clock.now()):
            say(f"   notice: {notice.kind} for {notice.service} {notice.subject} ({to_rfc3339(notice.expires)})")

        later = device.clock.now() + 11 * DAY
        say("\n6. Eleven days on, with no renewal, door-3 has lapsed: every door is limited, the free one too.")
        say("   (The policy is a pure function of document, time and request: asked here at that instant.)")
        for action, subject in [("issue_access", "door:door-1"), ("report_alarm", None), ("app_call", "account:a-42")]:
            show(f"{action} {subject or ''}".strip(), policy.decide(device.entitlements, later, action, subject))
        say("   Exit buttons, fire release and recording alarms locally are never gated (docs/entitlements.md).")

        say("\n7. The installer renews door-3 for a year; the cloud issues the next document.")
        services[1] = service("door", "door:door-3", now + 365 * DAY)
        renewal = issuer.entitlements(DEVICE_ID, project, services, iat=now, exp=now + 30 * DAY)
        accepted = await device.accept(renewal, expected_typ="entitlements")
        say(f"   accepted: {accepted.typ} seq {accepted.seq}; eleven days on, the doors stay open:")
        show("issue_access door:door-1", policy.decide(device.entitlements, later, "issue_access", "door:door-1"))

        say("\n8. Forgeries and replays change nothing the device holds:")
        forger = write_keypair(workdir / "attacker", "key")
        forged = Issuer(root=forger, signing=forger).entitlements(DEVICE_ID, project, services, iat=now, exp=now + DAY)
        for label, bad in [("signed by an unknown key", forged), ("the seq 1 document replayed", token)]:
            try:
                await device.accept(bad, expected_typ="entitlements")
            except DocumentRefused as refused:
                say(f"   {label:<32} refused {refused.reason}: {refused.detail}")
        say(f"   still in force: entitlements seq {device.entitlements.seq if device.entitlements else '-'}")
    finally:
        await device.close()
    return Cast(issuer, project, services)


async def over_mqtt(workdir: Path, cast: Cast) -> None:
    """Act two: the same device as a daemon, the cloud on the other side of an embedded broker."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = await embedded_broker.start("127.0.0.1", port)
    config_file = workdir / "agent.toml"
    text = config_file.read_text().replace('url = "mqtt://127.0.0.1:1883"', f'url = "mqtt://127.0.0.1:{port}"')
    config_file.write_text(text.replace("[mqtt]\n", f'[mqtt]\nusername = "{DEVICE_ID}"\n', 1))
    config = load_config(config_file, {})
    issuer, project, services = cast
    now = float(int(time.time()))
    try:
        daemon = await Daemon.open(config, load_trust_roots(config), ClockSource.system())
        serving = asyncio.create_task(daemon.serve())
        async with DeviceLink("127.0.0.1", port, DEVICE_ID, user="cloud") as cloud:
            say(f"\n9. The same door phone now runs as a daemon; the embedded MQTT broker (amqtt) listens on {port}.")
            await cloud.wait_until(lambda: _mode(cloud) == "normal", what="the device online")
            say(f"   state published by the device: {_state(cloud)}")

            say("\n10. A month on, door-3 was not renewed: the cloud publishes the document that says so.")
            lapsed = [*services[:1], service("door", "door:door-3", now - DAY), *services[2:]]
            token = issuer.entitlements(DEVICE_ID, project, lapsed, iat=now, exp=now + 30 * DAY)
            await cloud.publish("entitlements", token, retain=True)
            await cloud.wait_until(
                lambda: _mode(cloud) == "limited" and bool(_events(cloud, "expired")), what="the lapse"
            )
            notice = _events(cloud, "expired")[0]
            say(f"   state: {_state(cloud)}")
            say(f"   the device reports: {notice['type']} {notice['kind']} for {notice['data']['subject']}")

            say("\n11. Someone tampers with door-1. The alarm is recorded at once, and held: doors are limited.")
            tamper = {"type": "alarm", "kind": "tamper", "source": "door-1", "data": {}}
            raised = await control.request(config.data_dir, {"op": "raise", "event": tamper})
            say(
                f"   alarm tamper: seq {raised['seq']}, held: {raised['held']}; "
                f"alarms at the cloud: {len(_events(cloud, 'tamper'))}"
            )

            say("\n12. The installer renews door-3; the renewal reaches the device, the held alarm goes out.")
            renewed = [*services[:1], service("door", "door:door-3", now + 365 * DAY), *services[2:]]
            token = issuer.entitlements(DEVICE_ID, project, renewed, iat=now, exp=now + 30 * DAY)
            await cloud.publish("entitlements", token, retain=True)
            await cloud.wait_until(
                lambda: bool(_events(cloud, "tamper")) and _mode(cloud) == "normal", what="the alarm"
            )
            alarm = _events(cloud, "tamper")[0]
            say(
                f"   the cloud got: {alarm['type']} {alarm['kind']} seq {alarm['seq']}, "
                f"held since {alarm['held_since']}"
            )
            say(f"   state, as published when the renewal took effect (before the alarm left): {_state(cloud)}")

            say("\n13. The cloud issues a card for door-2, as a signed command; the device stores it and answers.")
            command = {
                "aud": DEVICE_ID,
                "iat": int(now),
                "exp": int(now) + 600,
                "seq": 1,
                "id": "cmd-1",
                "op": "issue_credentials",
                "args": {"door": "door-2", "credentials": [{"id": "card-7", "kind": "card", "value": "A1B2C3"}]},
            }
            await cloud.publish("commands", jws.sign(issuer.signing, "command", command))
            await cloud.wait_until(lambda: "cmd-1" in cloud.replies, what="the reply")
            say(f"   reply: {json.dumps(cloud.replies['cmd-1'][0])}")

            say("\n14. A resident holds card-7 to door-2's reader; then someone tries a card the device does not hold.")
            for value in ("A1B2C3", "FFFF00"):
                stimulus = Stimulus("card", None, {"door": "door-2", "value": value}, daemon.device.clock.now())
                done = await daemon.local.handle(stimulus)
                actions = ", ".join(f"{a['driver']}.{a['op']}({a['args']['door']})" for a in done["actions"])
                say(f"   {'; '.join(done['notes'])}{f' -> {actions}' if actions else ''}")
            await cloud.wait_until(lambda: len(_events(cloud, "granted")) + len(_events(cloud, "denied")) >= 2)
            for log_entry in _events(cloud, "granted") + _events(cloud, "denied"):
                say(f"   the cloud got: door_log {log_entry['kind']} {json.dumps(log_entry['data'])}")
        daemon.stop.set()
        await serving
    finally:
        await broker.shutdown()


def _state(cloud: DeviceLink) -> str:
    state = cloud.state or {}
    ents, outbox = state.get("entitlements", {}), state.get("outbox", {})
    queued = f"outbox {outbox.get('depth')} queued / {outbox.get('held')} held"
    return f"mode {ents.get('mode')}, entitlements seq {ents.get('seq')}, {queued}"


def _events(cloud: DeviceLink, kind: str) -> list[dict[str, Any]]:
    return [e for e in cloud.events.values() if e["kind"] == kind]


def _mode(cloud: DeviceLink) -> str | None:
    state = cloud.state or {}
    return state.get("entitlements", {}).get("mode") if state.get("online") else None


async def both_acts(workdir: Path) -> None:
    """The whole story."""
    cast = await story(workdir)
    await over_mqtt(workdir, cast)
    cli = ".venv/bin/edge-agent"
    say("\nThe device is left in demo-data/; try:")
    say(f"   {cli} status --config {workdir}/agent.toml")
    say(f"   {cli} check issue_access door:door-3 --config {workdir}/agent.toml --json")
    say(f"   {cli} events --config {workdir}/agent.toml")


def main() -> None:
    """Run the story in ./demo-data."""
    logs.configure("error")
    say("SmartPlus edge agent: signed entitlements, verified and enforced on the device\n")
    asyncio.run(both_acts(Path("demo-data")))
