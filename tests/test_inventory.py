"""The inventory in the state report: what the device says about itself, and what its scripts print,
bounded (agent/runtime/inventory.py)."""

from __future__ import annotations

import ipaddress
import platform
import shutil
from importlib import metadata
from pathlib import Path

from agent.runtime import inventory
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import ProcessDaemon, device_config
from tests.support.sync import Docs, mode_is, provision


def _script(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


async def test_the_state_report_carries_the_inventory_and_what_its_scripts_print(
    mosquitto: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """Version, kernel, free space, addresses, hardware revision; each script's key=value lines, the
    first script winning a key; a script that hangs is killed, one that fails or prints nonsense adds
    nothing, and what was left out is counted."""
    scripts = tmp_path / "inventory.d"
    scripts.mkdir()
    _script(scripts, "10-site", "echo site=lobby\necho 'cabinet = 4'\necho not a pair\necho 'bad key=x'")
    _script(scripts, "20-override", "echo site=elsewhere\necho modem_signal=-71")
    _script(scripts, "30-hangs", "sleep 60")
    _script(scripts, "40-fails", "echo half=done\nexit 3")
    (scripts / "50-not-executable").write_text("#!/bin/sh\necho never=run\n")
    config = device_config(
        tmp_path / "device", mosquitto, root_pem,
        inventory={"directory": str(scripts), "hardware_revision": "R29-B2", "script_timeout_seconds": 0.5},
    )  # fmt: skip
    daemon = ProcessDaemon(config)
    async with CloudPeer(mosquitto) as cloud:
        await provision(cloud, docs)
        await daemon.start()
        try:
            await cloud.wait_until(
                lambda: mode_is(cloud, "normal", 1) and cloud.state is not None and "inventory" in cloud.state,
                seconds=30, what="a state report with the inventory",
            )  # fmt: skip
            assert cloud.state is not None
            found = cloud.state["inventory"]
        finally:
            await daemon.stop()
    assert found["agent_version"] == metadata.version("smartplus-edge")
    assert found["kernel"] == platform.release()
    assert found["hardware_revision"] == "R29-B2"
    assert 0 < found["data_free_bytes"] <= shutil.disk_usage(tmp_path).total
    assert all(not ipaddress.ip_address(a).is_loopback for a in found["ip_addresses"])
    assert found["attributes"] == {"site": "lobby", "cabinet": "4", "modem_signal": "-71"}
    assert found["skipped"] == 4  # two bad lines, the hung script, the failing one


def test_what_scripts_print_is_bounded() -> None:
    into: dict[str, str] = {}
    lines = "\n".join(f"k{i}=v" for i in range(inventory.MAX_KEYS + 10))
    long_value = "x" * (inventory.MAX_VALUE + 1)
    skipped = inventory.parse(f"{lines}\nlong={long_value}\n\n=nokey\n".encode(), into)
    assert len(into) == inventory.MAX_KEYS
    assert skipped == 10 + 2
    assert inventory.parse(b"\xff\xfe=\x00", {}) == 1  # not text: skipped, no error
