"""A data directory on a small tmpfs, filled up while the daemon runs (issue 12): the commands that only
read still answer, an alarm still gets in when the queue holds nothing it may evict (the reserve), and a
renewal that arrives while the disk is full is taken as soon as space returns, without a reconnect."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import Broker
from tests.support.daemons import EDGE_AGENT, ProcessDaemon, device_config, raise_event
from tests.support.documents import svc
from tests.support.sync import PAID, Docs, mode_is, provisioned, status_until
from tests.support.tmpfs import fill, free_bytes, mounted

LAPSED = [svc("door", "door:door-2", days=-1)]  # doors limited: alarms are held, so they stay queued


@pytest.fixture
def broker(mosquitto: Broker) -> Broker:
    """Mosquitto (the resource under test is the device, not the broker)."""
    return mosquitto


def _cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGE_AGENT, *args, "--config", str(config_file), "--json"], capture_output=True, text=True, timeout=60
    )


def _logged(daemon: ProcessDaemon, event: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == event]


async def test_a_full_disk_keeps_alarms_answers_reads_and_takes_a_renewal_as_space_returns(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """Filled to the last block: check and status answer; health events are refused; an alarm gets in by
    the reserve, evicting none of the held alarms; a renewal is not taken while full, and is taken within
    seconds of space returning, on the same connection; the reserve is put back."""
    device = tmp_path / "device"
    with mounted(device / "data", "8m") as data_dir:
        config_file = device_config(device, broker, root_pem, store={"reserve_bytes": 256 * 1024})
        async with provisioned(broker, config_file, docs, LAPSED, mode="limited") as (daemon, cloud):
            for i in range(20):
                assert (await raise_event(data_dir, "alarm", "tamper", data={"device": f"panel-{i}"}))["held"]
            await status_until(data_dir, lambda s: s["reserve"]["held"])
            fill(data_dir / "filler")
            refused = None
            for i in range(5000):  # sent and kept rows give way first; then the disk is full for them
                answer = await raise_event(data_dir, "health", "telemetry", data={"pad": "x" * 2000, "i": i})
                if not answer["ok"]:
                    refused = answer["error"]
                    break
            assert refused is not None, "the disk never filled"
            assert refused["code"] == "outbox_full"
            assert "disk is full" in refused["message"]

            answer = await raise_event(data_dir, "alarm", "tamper", data={"device": "panel-20"})
            assert answer["ok"], answer
            assert answer["held"]
            status = await status_until(data_dir, lambda s: s["reserve"]["released"] == 1)
            assert status["outbox"]["held"] == 21
            assert status["outbox"]["evicted"].get("alarm", 0) == 0

            checked = _cli(config_file, "check", "issue_access", "door:door-1")
            assert checked.returncode == 1, checked.stderr  # denied, answered: not 2
            assert json.loads(checked.stdout)["reason"] == "doors_limited"
            shown = _cli(config_file, "status")
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["mode"] == "limited"

            fill(data_dir / "filler-2")  # the space the reserve gave back is gone too
            connected = len(_logged(daemon, "mqtt_connected"))
            await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
            await daemon.logged("message_not_taken")
            assert (await status_until(data_dir, lambda s: True))["mode"] == "limited"

            (data_dir / "filler").unlink()
            (data_dir / "filler-2").unlink()
            assert free_bytes(data_dir) > 1 << 20
            await cloud.wait_until(lambda: mode_is(cloud, "normal", 2), seconds=10, what="the renewal taken")
            assert len(_logged(daemon, "mqtt_connected")) == connected, "it took a reconnect"
            await cloud.wait_until(lambda: sum(e["type"] == "alarm" for e in cloud.events.values()) == 21)
            await status_until(data_dir, lambda s: s["reserve"]["held"], seconds=10)
            assert daemon.process is not None
            assert daemon.process.poll() is None
