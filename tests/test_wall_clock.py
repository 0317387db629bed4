"""The daemon's wall clock moved under it with libfaketime (issue 12), both ways: two years ahead and
back (a bad NTP server: the device fails closed, then a renewal brings it back without a site visit),
and set back to revive a lapsed door (trusted time does not follow, and a renewal does not undo that)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import ProcessDaemon, device_config
from tests.support.documents import DAY, svc
from tests.support.sync import PAID, Docs, mode_is, provision, status_until

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # .ci/run installs faketime


@pytest.fixture
def broker(mosquitto: Broker) -> Broker:
    """Mosquitto (the resource under test is the device, not the broker)."""
    return mosquitto


class FakeTime:
    """A libfaketime offset for one process, changed while it runs (read again at every clock call)."""

    def __init__(self, directory: Path) -> None:
        self.spec = directory / "faketime.spec"
        self.set(0)

    def set(self, days: float) -> None:
        self.spec.write_text(f"{days:+.0f}d\n")

    def env(self) -> dict[str, str]:
        assert LIBFAKETIME.exists(), "libfaketime is missing (.ci/run installs the faketime package)"
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.spec),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # CLOCK_BOOTTIME carries the floor: it must stay real
        }


def _trusted(status: dict[str, object]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(status["trusted_time"]).replace("Z", "+00:00")).timestamp()


async def test_a_clock_two_years_ahead_fails_closed_and_a_renewal_corrects_it(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """+730 days: documents past their exp, the device fails closed and keeps that floor across a restart.
    The wall clock put right: still failed (nothing vouches for it yet); the next renewal does, and the
    device is back to normal with trusted time on the wall clock, on the same daemon."""
    fake = FakeTime(tmp_path)
    config_file = device_config(tmp_path / "device", broker, root_pem)
    daemon = ProcessDaemon(config_file, env=fake.env())
    async with CloudPeer(broker) as cloud:
        await provision(cloud, docs)
        await daemon.start()
        try:
            await cloud.wait_until(lambda: mode_is(cloud, "normal", 1))
            fake.set(730)  # housekeeping notices within a minute; a status asked now decides at once
            await status_until(daemon.data_dir, lambda s: s["mode"] == "document_expired")
            await daemon.stop()
            await daemon.start()  # the bogus floor was persisted
            fake.set(0)
            status = await status_until(daemon.data_dir, lambda s: s["connected"])
            assert status["mode"] == "document_expired"
            assert _trusted(status) > time.time() + 700 * DAY
            await cloud.publish("entitlements", docs.entitlements(PAID), retain=True)
            await cloud.wait_until(lambda: mode_is(cloud, "normal", 2), what="the renewal taken")
            status = await status_until(daemon.data_dir, lambda s: True)
            assert abs(_trusted(status) - time.time()) < 60
            assert status["mode"] == "normal"
        finally:
            await daemon.stop()
    corrected = [e for e in daemon.log_events() if e.get("event") == "clock_corrected"]
    assert len(corrected) == 1


async def test_a_clock_set_back_does_not_revive_a_lapsed_door_even_with_a_renewal(
    broker: Broker, tmp_path: Path, root_pem: Path, docs: Docs
) -> None:
    """A door lapsed ten days ago; the wall clock set back thirty days and the daemon restarted: trusted
    time stays where it was, the doors stay limited, and a renewal issued now (which does not vouch for
    a wall clock thirty days behind it) corrects nothing."""
    fake = FakeTime(tmp_path)
    config_file = device_config(tmp_path / "device", broker, root_pem)
    daemon = ProcessDaemon(config_file, env=fake.env())
    lapsed = [svc("door", "door:door-2", days=-10, base=time.time())]
    async with CloudPeer(broker) as cloud:
        await provision(cloud, docs, lapsed)
        await daemon.start()
        try:
            await cloud.wait_until(lambda: mode_is(cloud, "limited", 1))
            await daemon.stop()
            fake.set(-30)
            await daemon.start()
            status = await status_until(daemon.data_dir, lambda s: s["connected"])
            assert status["mode"] == "limited"
            assert abs(_trusted(status) - time.time()) < 60
            await cloud.publish("entitlements", docs.entitlements(lapsed), retain=True)
            await cloud.wait_until(lambda: mode_is(cloud, "limited", 2), what="the renewal taken")
            status = await status_until(daemon.data_dir, lambda s: True)
            assert abs(_trusted(status) - time.time()) < 60
        finally:
            await daemon.stop()
    assert not [e for e in daemon.log_events() if e.get("event") == "clock_corrected"]
