"""The README's main command: the product's story in three acts, with no system services.

Act one: the cloud stub makes keys and signs documents; a device accepts them through the path MQTT
uses and prints what it decides and why. Act two: the same device as a daemon over the embedded
amqtt broker. Act three: a second door phone run entirely from the cloud's ledger (credits, a
quote, a renewal, an MR01 call alert, a failed and then a good staged upgrade). Everything lands in
``demo-data/`` so the CLIs can be tried afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

from agent.clock import ClockSource
from agent.config import load_config, load_trust_roots
from agent.control import server as control
from agent.daemon import Daemon
from agent.device import Device
from agent.entitlements import policy
from agent.entitlements.notices import expiry_notices
from agent.errors import ControlError, DocumentRefused
from agent.local.stimuli import Stimulus
from cloud_stub import broker as embedded_broker
from cloud_stub import signing
from cloud_stub.documents import Issuer
from cloud_stub.documents import service_entry as service
from cloud_stub.keys import write_keypair
from cloud_stub.link import DeviceLink
from cloud_stub.signing import key_thumbprint
from protocol import logs
from protocol.timefmt import to_rfc3339

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
            await cloud.publish("commands", signing.sign(issuer.signing, "command", command))
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


async def both_acts(workdir: Path, interactive: bool = False) -> None:
    """The whole story."""
    cast = await story(workdir)
    await over_mqtt(workdir, cast)
    await the_cloud(workdir, interactive)
    cli = ".venv/bin/edge-agent"
    say("\nThe devices and the ledger are left in demo-data/; try:")
    say(f"   {cli} status --config {workdir}/agent.toml")
    say(f"   {cli} check issue_access door:door-3 --config {workdir}/agent.toml --json")
    say(f"   {cli} events --config {workdir}/agent.toml")
    say(f"   {cli} status --config {workdir}/door-phone-2/agent.toml")
    say(f"   .venv/bin/smartplus-cloud --ledger {workdir}/cloud/ledger.db --as inst-1 credit-log")
    say(f"   .venv/bin/smartplus-cloud --ledger {workdir}/cloud/ledger.db upgrade-status up-1")


def main() -> None:
    """Run the story in ./demo-data; ``--interactive`` leaves act three's cloud and device running."""
    import sys

    logs.configure("error")
    say("SmartPlus edge agent: signed entitlements, verified and enforced on the device\n")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(both_acts(Path("demo-data"), interactive="--interactive" in sys.argv[1:]))


async def the_cloud(workdir: Path, interactive: bool = False) -> None:
    """Act three: a second door phone run entirely from the cloud's ledger, by `smartplus-cloud serve`
    (its own process, with its embedded amqtt broker and image server) while the story writes the
    ledger as the CLI would."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import date

    from agent.daemon import Outcome
    from cloud_stub.ledger import Ledger
    from cloud_stub.operations import accounts, authority, credits, ingest, paying, sites, upgrades

    home = workdir / "cloud"
    home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.open(home / "ledger.db")
    operator = authority.OPERATOR
    mac = "0c110512ab35"
    now = time.time()
    port, images_port = _free_port(), _free_port()
    say("\n15. The cloud's ledger: a distributor buys 1000 credits and gives 600 to an installer allowed to pay")
    say("    with credits; the installer creates office p-200 (created 2025-07-01: credits only) with three doors.")
    ledger.call(
        accounts.add_account, operator, accounts.AddAccount(id="dist-1", role="distributor", name="Distributor")
    )
    ledger.call(accounts.add_account, operator, accounts.AddAccount(id="inst-1", role="installer", name="Installer",
                                                                    parent="dist-1", permission="credit"))  # fmt: skip
    distributor = ledger.read(lambda uow: authority.resolve(uow, "dist-1"))
    installer = ledger.read(lambda uow: authority.resolve(uow, "inst-1"))
    ledger.call(credits.buy, distributor, credits.BuyCredits(amount=1000))
    ledger.call(credits.allocate, distributor, credits.Allocate(account="inst-1", amount=600))
    office = sites.AddSite(
        id="p-200",
        type="commercial",
        installer="inst-1",
        created=date(2025, 7, 1),
        doors=["door-1", "door-2", "door-3"],
    )
    ledger.call(sites.add_site, installer, office)
    ledger.call(sites.add_device, installer, sites.AddDevice(mac=mac, distributor="dist-1", model="R29",
                                                             project="p-200"))  # fmt: skip
    web: list[str] = []
    environment = dict(os.environ)
    mailbox = None
    if interactive:  # the portal on serve's web port, a login per role, mail to files
        web_port = _free_port()
        web = ["--api-port", str(web_port)]
        logins_made = _portal_logins(ledger)
        mailbox = _mailbox(home / "mail")
        if mailbox is not None:
            environment["SMARTPLUS_SERVE_MAIL__RELAY"] = f"127.0.0.1:{mailbox.port}"
    serve_log = (home / "serve.log").open("ab")
    serve = subprocess.Popen(  # noqa: ASYNC220, S603 -- our own command, started once, stopped in finally
        [sys.executable, "-m", "cloud_stub.cli", "--ledger", str(home / "ledger.db"), "serve", "--port", str(port),
         "--images-port", str(images_port), "--interval", "1", *web],
        stdout=serve_log, stderr=subprocess.STDOUT, env=environment,
    )  # fmt: skip
    say(f"    `smartplus-cloud serve` runs (pid {serve.pid}, log {home / 'serve.log'}): embedded broker on port"
        f" {port}, images on port {images_port}; it notices every ledger commit within 50 ms.")  # fmt: skip

    flag = home / "new-build-is-broken"
    device_dir = workdir / "door-phone-2"
    device_dir.mkdir(exist_ok=True)
    root_pem = (home / "keys" / "root.pub.pem").resolve()
    (device_dir / "agent.toml").write_text(
        CONFIG.format(device_id=mac)
        .replace('trust_roots = ["cloud-keys/root.pub.pem"]', f'trust_roots = ["{root_pem}"]')
        .replace('url = "mqtt://127.0.0.1:1883"', f'url = "mqtt://127.0.0.1:{port}"\nusername = "{mac}"')
        + f'\n[firmware]\nhealth_command = ["sh", "-c", "test ! -e {flag.resolve()}"]\nhealth_deadline_seconds = 10\n'
    )  # fmt: skip
    config = load_config(device_dir / "agent.toml", {})
    current: list[Daemon] = []
    stopping = asyncio.Event()

    async def supervise() -> None:  # what systemd does: start it again when it exits to reboot (75)
        while not stopping.is_set():
            daemon = await Daemon.open(config, load_trust_roots(config), ClockSource.system())
            current[:] = [daemon]
            if await daemon.serve() is not Outcome.REBOOT:
                return
            say("    ... the device reboots (exit 75; its supervisor starts it again; the bootloader picks the slot)")

    async def status() -> dict[str, Any]:
        answer = await control.request(config.data_dir, {"op": "status"})
        result: dict[str, Any] = answer["status"]
        return result

    async def until(condition: Any, seconds: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(seconds), _progress():
            while True:
                with contextlib.suppress(ControlError, KeyError):
                    found = await status()
                    if condition(found):
                        return found
                await asyncio.sleep(0.1)

    supervisor: asyncio.Task[None] | None = None
    try:
        await _poll(lambda: root_pem.exists() or serve.poll() is not None)  # serve makes the cloud's keys
        if serve.poll() is not None:
            raise SystemExit(f"smartplus-cloud serve exited ({serve.returncode}): see {home / 'serve.log'}")
        supervisor = asyncio.create_task(supervise())
        found = await until(lambda s: s["mode"] == "limited")
        say(f"    door phone {mac} takes what `smartplus-cloud serve` publishes: mode {found['mode']}"
            " (no door is paid yet)")  # fmt: skip

        say("\n16. The installer asks for a quote, renewing door-2, door-3 and sensor call alerts to a year")
        say("    from now, and pays with credits.")
        items = ["p-200/door/door:door-2", "p-200/door/door:door-3", "p-200/sensor_call_alert/project"]
        renew_to = date.fromtimestamp(now + 365 * DAY)
        quote = ledger.call(paying.quote, installer, paying.Selection(items=items, renew_to=renew_to))
        say(f"    quote: {quote.amount} credits; renewal summary {quote.summary.model_dump_json()}")
        placed = ledger.call(paying.place, installer, paying.PlaceOrder(items=items, renew_to=renew_to,
                                                                        source="credit"))  # fmt: skip
        ledger.call(paying.pay, installer, paying.Pay(txn=placed.txn))
        found = await until(lambda s: s["mode"] == "normal")
        left = ledger.call(credits.credit_log, installer, credits.CreditLogQuery()).available
        say(f"    paid (order {placed.txn}); {left} credits left. The device: mode {found['mode']},"
            f" entitlements seq {found['document']['seq']}")  # fmt: skip

        say("\n17. The MR01 at a bedside detects a fall.")
        daemon = current[0]
        done = await daemon.local.handle(Stimulus("fall", "mr01-bed-4", {}, daemon.device.clock.now()))
        say(f"    the device: {'; '.join(done['notes'])}")

        def alerts() -> list[dict[str, Any]]:
            return ledger.read(lambda uow: ingest.alarms(uow, installer, "p-200"))

        await _poll(lambda: bool(alerts()))
        alert = alerts()[0]
        say(f"    the cloud lists for p-200: {alert['type']} {alert['kind']} from {alert['source']}")

        say("\n18. Firmware 29.30.10.1 goes to the firmware list and is staged for p-200's R29s, now.")
        say("    (This build is broken: the device's local health check will say so.)")
        flag.touch()
        for version in ("29.30.10.1", "29.30.10.2"):
            image = home / f"build-{version}.bin"
            image.write_bytes(os.urandom(512 * 1024))
            name, size, digest = upgrades.store_image(home / "images", "R29", version, image)
            entry = upgrades.AddFirmware(
                model="R29", version=version, log=f"release {version}", file=name, size=size, sha256=digest
            )
            ledger.call(upgrades.add_firmware, operator, entry)

        def stage(ident: str, version: str) -> None:
            asked = upgrades.StageUpgrade(id=ident, project="p-200", model="R29", version=version)
            ledger.call(upgrades.stage, installer, asked)

        def upgrade_status(ident: str) -> dict[str, str]:
            return ledger.read(lambda uow: upgrades.statuses(uow, installer, ident))

        stage("up-1", "29.30.10.1")
        # rolled_back is recorded before the reboot into the old slot: wait until that slot runs again
        found = await until(
            lambda s: (s["firmware"]["job"] or {}).get("state") == "rolled_back" and s["firmware"]["slot"] == "a",
            UPGRADE_SECONDS,
        )
        await _poll(lambda: upgrade_status("up-1") == {mac: "Failed"})  # serve takes the event
        say(f"    the device: job up-1 {found['firmware']['job']['state']} ({found['firmware']['job']['reason']});"
            f" still running {found['firmware']['version']} on slot {found['firmware']['slot']}")  # fmt: skip
        say(f"    the cloud's upgrade status: {upgrade_status('up-1')}")

        say("\n19. A fixed build, 29.30.10.2, is staged.")
        flag.unlink()
        stage("up-2", "29.30.10.2")
        found = await until(lambda s: s["firmware"]["version"] == "29.30.10.2", UPGRADE_SECONDS)
        await _poll(lambda: upgrade_status("up-2") == {mac: "Executed"})
        say(f"    the device runs {found['firmware']['version']} on slot {found['firmware']['slot']};"
            f" the cloud's upgrade status: {upgrade_status('up-2')}")  # fmt: skip
        if interactive:
            await until(lambda s: s["firmware"]["version"] == "29.30.10.2")  # its control socket answers now
            conf, book = device_dir / "agent.toml", home / "ledger.db"
            say("\nEverything stays up (Ctrl-C ends it). In another terminal, try:")
            say(f"   .venv/bin/edge-agent simulate fall --source mr01-bed-4 --config {conf}")
            say(f'   .venv/bin/edge-agent simulate tamper --data \'{{"door": "door-1"}}\' --config {conf}')
            say(f"   .venv/bin/edge-agent status --config {conf}")
            say(f"   .venv/bin/smartplus-cloud --ledger {book} alarms p-200")
            say(f"   .venv/bin/smartplus-cloud --ledger {book} --as inst-1 quote --site p-200 --renew-to 2028-12-31")
            say(f"   mosquitto_sub -p {port} -u cloud -t 'smartplus/v1/devices/+/events' -v   (if installed)")
            say(f"\nThe portal: http://127.0.0.1:{web_port}/ (docs/portal.md). Log in as any of these, password"
                f" {DEMO_PASSWORD!r}:")  # fmt: skip
            for account, role in logins_made:
                say(f"   {account:<12} {role}")
            if mailbox is not None:
                say(f"Its mail (two-factor codes, links, notices) is written to {home / 'mail'}/")
            await asyncio.Event().wait()
    finally:
        stopping.set()
        if current:
            current[0].stop.set()
        if supervisor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(supervisor, 15)
        serve.send_signal(signal.SIGINT)  # as Ctrl-C: it stops its image server and broker
        try:
            await asyncio.to_thread(serve.wait, 15)
        except subprocess.TimeoutExpired:
            serve.kill()
            await asyncio.to_thread(serve.wait, 15)
        serve_log.close()
        ledger.close()
        if mailbox is not None:
            mailbox.stop()


# An upgrade's download, install, reboot and health check: seconds here, but a loaded CI machine (two test
# workers and the demo on two CPUs) once took over 90; the wait ends as soon as the device is there.
UPGRADE_SECONDS = 240.0
DEMO_PASSWORD = "smartplus-demo"  # noqa: S105 -- printed for the demo's people, on this machine only


def _portal_logins(ledger: Any) -> list[tuple[str, str]]:
    """A portal login for each role: the distributor and installer above, a sub-distributor, a property
    manager of the installer's (assigned to p-200), a sub-installer (docs/portal.md)."""
    from cloud_stub.operations import accounts, authority, logins, sites

    operator = authority.OPERATOR
    for ident, role, parent in (("sub-dist-1", "sub_distributor", "dist-1"), ("pm-1", "pm", "inst-1"),
                                ("sub-inst-1", "sub_installer", "inst-1")):  # fmt: skip
        ledger.call(accounts.add_account, operator, accounts.AddAccount(id=ident, role=role, name=ident.title(),
                                                                        parent=parent))  # fmt: skip
    installer = ledger.read(lambda uow: authority.resolve(uow, "inst-1"))
    ledger.call(sites.edit_site, installer, sites.EditSite(project="p-200", changes={"pm": "pm-1", "name": "Office"}))
    made = [("dist-1", "distributor"), ("sub-dist-1", "sub-distributor"), ("inst-1", "installer"),
            ("sub-inst-1", "sub-installer"), ("pm-1", "property manager")]  # fmt: skip
    for ident, _ in made:
        ledger.call(logins.set_login, operator, logins.SetLogin(account=ident, email=f"{ident}@example.com",
                                                                password=DEMO_PASSWORD))  # fmt: skip
    return made


def _mailbox(directory: Path) -> Any:
    """An SMTP server on this machine writing each message to ``directory`` (aiosmtpd, a development
    dependency; without it, mail waits in the ledger)."""
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Mailbox
    except ImportError:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(directory), hostname="127.0.0.1", port=_free_port())
    controller.start()
    return controller


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _poll(condition: Any, seconds: float = 20) -> None:
    """Wait for something in the ledger (it has no event to wait on)."""
    async with asyncio.timeout(seconds), _progress():
        while not condition():  # noqa: ASYNC110 -- polled: the ledger is a file another task writes
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _progress() -> AsyncIterator[None]:
    """Anything that takes more than a second shows it is under way (a dot a second, on stderr)."""
    import sys

    started = False

    async def dots() -> None:
        nonlocal started
        await asyncio.sleep(1)
        started = True
        sys.stderr.write("    waiting")
        while True:
            sys.stderr.write(".")
            sys.stderr.flush()
            await asyncio.sleep(1)

    ticker = asyncio.create_task(dots())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        if started:
            sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "\n")
            sys.stderr.flush()
