"""The local story (README's main command until the sync daemon exists).

The cloud stub makes keys and signs documents; a device accepts them through the same path as MQTT
would use, and prints the decisions they yield and why. Everything lands in ``demo-data/`` so the
CLIs can be tried afterwards on the same device.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from agent import logs
from agent.clock import ClockSource
from agent.config import load_config, load_trust_roots
from agent.device import Device
from agent.entitlements import policy
from agent.entitlements.jws import key_thumbprint
from agent.entitlements.notices import expiry_notices
from agent.errors import DocumentRefused
from agent.timefmt import to_rfc3339
from cloud_stub.issuer import Issuer, service
from cloud_stub.keys import write_keypair

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


async def story(workdir: Path) -> None:
    """Tell the story in ``workdir`` (wiped first)."""
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

    cli = ".venv/bin/edge-agent"
    say("\nThe device is left in demo-data/; try:")
    say(f"   {cli} status --config {workdir}/agent.toml")
    say(f"   {cli} check issue_access door:door-3 --config {workdir}/agent.toml --json")


def main() -> None:
    """Run the story in ./demo-data."""
    logs.configure("error")
    say("SmartPlus edge agent: signed entitlements, verified and enforced on the device\n")
    asyncio.run(story(Path("demo-data")))
