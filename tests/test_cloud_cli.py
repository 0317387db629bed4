"""``smartplus-cloud``: the ledger's operations from the command line (--as, --json, exit codes), and
``serve`` as its own process with the embedded broker, driving a real agent."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import free_port
from tests.support.daemons import ProcessDaemon, device_config
from tests.support.documents import DEVICE_ID
from tests.support.ledger import CLOUD, DOOR2, cloud, setup_ledger
from tests.support.sync import status_until


def test_a_renewal_from_the_command_line(tmp_path: Path) -> None:
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    code, out = cloud(ledger, "quote", "--item", "office/door/door:door-2", "--renew-to", "2027-01-31", actor="i1")
    assert code == 0
    assert out["result"]["method"] == "credit"
    assert out["result"]["summary"]["doors"] == 1
    code, out = cloud(ledger, "renew", "--item", "office/door/door:door-2", "--renew-to", "2027-01-31",
                      "--source", "credit", actor="i1")  # fmt: skip
    paid = out["result"]["paid"]
    assert (code, paid) == (0, out["result"]["quote"]["amount"])
    assert paid > 0
    code, out = cloud(ledger, "credit-log", actor="i1")
    assert [(e["amount"], e["remaining"]) for e in out["result"]["log"]] == [(60, 60), (-paid, 60 - paid)]
    assert (out["result"]["available"], out["result"]["total"], out["result"]["used"]) == (60 - paid, 60, paid)
    code, out = cloud(ledger, "services", "office")
    assert [(s["service"], s["subject"]) for s in out["result"]] == [("door", "door:door-2")]


@pytest.mark.parametrize(
    ("args", "actor", "code", "rule"),
    [
        (("renew", "--item", DOOR2, "--months", "1", "--source", "stripe"), "i1", 1, "renew_to_needed"),
        (("renew", "--item", "office/door/door:door-1", "--renew-to", "2027-01-31", "--source", "credit"), "i1", 1,
         "free_door"),
        (("auto-nothing",), None, 2, None),
        (("renew", "--item", "office:door", "--months", "1", "--source", "stripe"), "i1", 2, None),
        (("quote", "--item", "office/door/door:door-2", "--months", "1"), None, 2, None),  # --as missing
        (("buy-credits", "5"), "i1", 1, "not_distributor"),
        (("grant", "i1", "regular"), "i1", 1, "not_yours"),
        (("add-project", "p2", "--type", "community", "--installer", "i1", "--created", "2025-02-30"), None, 2, None),
        (("add-project", "p2", "--type", "community", "--installer", "nobody", "--created", "2025-02-01"), None, 2,
         None),
        (("add-project", "p2", "--type", "community", "--installer", "d1", "--created", "2025-02-01"), None, 2, None),
        (("delete-upgrade", "no-such-upgrade"), "i1", 2, "not_found"),
    ],
)  # fmt: skip
def test_refusals_name_their_rule_and_bad_arguments_exit_2(
    tmp_path: Path, args: tuple[str, ...], actor: str | None, code: int, rule: str | None
) -> None:
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    got, out = cloud(ledger, *args, actor=actor)
    assert got == code, out
    if rule is not None:
        assert out["rule"] == rule
        assert out["seed"]
    if code == 2 and args[0] == "add-project":  # one line naming what is wrong, no traceback
        lines = [line for line in str(out).splitlines() if line.strip()]
        assert len(lines) == 1, out
        assert "Traceback" not in str(out)


def test_firmware_list_and_an_upgrade_from_the_command_line(tmp_path: Path) -> None:
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    image = tmp_path / "r29.bin"
    image.write_bytes(os.urandom(1000))
    assert cloud(ledger, "add-firmware", "R29", "29.30.10.1", str(image), "--log", "fixes")[0] == 0
    code, out = cloud(ledger, "firmware-list")
    assert [(f["model"], f["version"], f["size"]) for f in out["result"]] == [("R29", "29.30.10.1", 1000)]
    code, out = cloud(ledger, "upgrade", "u-1", "--project", "office", "--model", "R29", "--version", "29.30.10.1",
                      actor="i1")  # fmt: skip
    assert (code, out["result"]) == (0, [DEVICE_ID])
    assert cloud(ledger, "upgrade-status", "u-1")[1]["result"] == {DEVICE_ID: "Pending"}
    assert cloud(ledger, "upgrade", "u-2", "--project", "office", "--model", "X916", "--version", "1.0",
                 actor="i1")[1]["rule"] == "unknown_firmware"  # fmt: skip
    assert cloud(ledger, "delete-upgrade", "u-1", actor="i1")[0] == 0


def test_a_phased_rollout_from_the_command_line(tmp_path: Path) -> None:
    """upgrade --wave-size, rollout (per-wave statuses), rollout-resume refused while it runs,
    rollout-cancel; nonsense wave options exit 2; another installer may not touch it."""
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    image = tmp_path / "r29.bin"
    image.write_bytes(os.urandom(1000))
    assert cloud(ledger, "add-firmware", "R29", "29.30.10.1", str(image))[0] == 0
    base = ("upgrade", "u-p", "--project", "office", "--model", "R29", "--version", "29.30.10.1")
    assert cloud(ledger, *base, "--wave-size", "1", "--wave-percent", "10", actor="i1")[0] == 2
    assert cloud(ledger, *base, "--wave-size", "0", actor="i1")[0] == 2
    assert cloud(ledger, *base, "--wave-size", "1", "--max-failures", "1.5", actor="i1")[0] == 2
    code, out = cloud(ledger, *base, "--wave-size", "1", "--wave-wait", "60", "--max-failures", "0.5", actor="i1")
    assert (code, out["result"]) == (0, [DEVICE_ID])
    code, out = cloud(ledger, "rollout", "u-p", actor="i1")
    assert code == 0
    rollout = out["result"]
    assert (rollout["state"], rollout["released"], rollout["reason"]) == ("running", 1, None)
    assert rollout["waves"] == [
        {"wave": 1, "released": True, "devices": {DEVICE_ID: "Pending"}, "failed": 0, "failed_share": 0.0}
    ]
    assert rollout["plan"] == {"size": 1, "percent": None, "wait": 60.0, "max_failures": 0.5}
    assert cloud(ledger, "rollout-resume", "u-p", actor="i1")[1]["rule"] == "not_paused"
    assert cloud(ledger, "add-account", "i2", "--role", "installer", "--name", "J", "--parent", "d1")[0] == 0
    assert cloud(ledger, "rollout", "u-p", actor="i2")[1]["rule"] == "not_yours"
    code, out = cloud(ledger, "rollout-cancel", "u-p", actor="i1")
    assert (code, out["result"]["state"]) == (0, "cancelled")
    assert cloud(ledger, "rollout-cancel", "u-p", actor="i1")[1]["rule"] == "too_late"


async def test_serve_runs_the_cloud_for_a_real_agent(tmp_path: Path) -> None:
    """``smartplus-cloud serve`` (embedded broker, image server, issuer, ingest) as its own process: a
    device that has not paid for door-2 is limited; a renewal from the command line makes it normal."""
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    port, api_port = free_port(), free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(  # noqa: ASYNC220 -- started once, stopped below
        [CLOUD, "--ledger", str(ledger), "serve", "--port", str(port), "--images-port", "0", "--interval", "0.2",
         "--api-port", str(api_port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        root = ledger.parent / "keys" / "root.pub.pem"
        for _ in range(200):
            if root.exists():
                break
            await asyncio.sleep(0.05)
        daemon = ProcessDaemon(device_config(tmp_path / "device", f"mqtt://127.0.0.1:{port}", root))
        await daemon.start()
        try:
            await status_until(daemon.data_dir, lambda s: s["mode"] == "limited", seconds=30)
            code, out = cloud(ledger, "renew", "--item", "office/door/door:door-2", "--renew-to", "2027-01-31",
                              "--source", "credit", actor="i1")  # fmt: skip
            assert code == 0, out
            await status_until(daemon.data_dir, lambda s: s["mode"] == "normal", seconds=30)
            # remote operations from the cloud CLI: queued in the ledger, signed and sent by serve, answered
            for op in ("resync", "reboot"):
                code, out = await asyncio.to_thread(cloud, ledger, op, DEVICE_ID, "--wait", "30", actor="i1")
                assert code == 0, out
                assert out["result"]["reply"]["ok"] is True, out
                assert out["result"]["reply"]["id"] == out["result"]["id"]
            code, out = await asyncio.to_thread(cloud, ledger, "reboot", DEVICE_ID, "--wait", "0", actor="d2")
            assert code == 2  # no such account: not_found
            # the HTTP API beside it, on the same ledger: the renewal made above is in i1's payments
            token = cloud(ledger, "api-token", "create", "i1")[1]["result"]["token"]

            def payments() -> tuple[int, Any]:
                connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10)
                try:
                    connection.request("GET", "/v1/payments", headers={"Authorization": f"Bearer {token}"})
                    response = connection.getresponse()
                    return response.status, json.loads(response.read())
                finally:
                    connection.close()

            status, records = await asyncio.to_thread(payments)
            assert status == 200
            assert records[0]["status"] == "paid"
        finally:
            await daemon.stop()
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.to_thread(server.wait, 15)
        log.close()


def test_renew_chosen_sites_and_service_types(tmp_path: Path) -> None:
    """Seed 000 lines 147-149: select the target sites (or all), the service type (or all)."""
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    assert cloud(ledger, "renew", "--item", DOOR2, "--renew-to", "2027-01-31", "--source", "credit", actor="i1")[0] == 0
    code, out = cloud(ledger, "quote", "--site", "office", "--service", "door", "--renew-to", "2027-06-30", actor="i1")
    assert code == 0, out
    assert [(i["project"], i["service"], i["subject"]) for i in out["result"]["items"]] == [
        ("office", "door", "door:door-2")
    ]
    assert cloud(ledger, "quote", "--site", "office", "--service", "admin_app", "--renew-to", "2027-06-30",
                 actor="i1")[1]["rule"] == "nothing_selected"  # fmt: skip
    assert cloud(ledger, "quote", "--site", "office", "--item", DOOR2, "--months", "1", actor="i1")[0] == 2


def test_fleet_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    ledger = tmp_path / "cloud" / "ledger.db"
    setup_ledger(ledger)
    code, out = cloud(ledger, "fleet", "--devices", "10000000")
    assert code == 2
    assert "file descriptors" in out
    code, out = cloud(ledger, "fleet", "--devices", "5", "--register")
    assert code == 2
    assert "--register needs --project and --distributor" in out
    for broker in ("tcp://127.0.0.1:1883", "mqtt://", "mqtt://host:99999", "mqtt://host/path"):
        code, out = cloud(ledger, "fleet", "--devices", "5", "--broker", broker)
        assert code == 2, broker
        assert "mqtt://HOST[:PORT]" in out or "out of range" in out, out
    code, out = cloud(ledger, "fleet", "--devices", "5")  # nothing has made the ledger's keys yet
    assert code == 2
    assert "no root public key at" in out, out
    assert "Traceback" not in out
