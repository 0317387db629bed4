"""Trusted time never goes back: not by setting the wall clock back, not across restarts or reboots."""

from __future__ import annotations

import pytest

from agent.clock import Anchor, TrustedClock
from agent.device import Device
from agent.entitlements import reasons
from agent.errors import DocumentRefused
from tests.conftest import DeviceFactory
from tests.support import DAY, T0, Claims, Keys, SettableClock, forge, svc


def test_setting_the_wall_clock_back_does_not_turn_time_back(clock: SettableClock) -> None:
    """After reading T0 + 10, a wall clock set back a day still reads later than T0 + 10."""
    trusted = TrustedClock(clock.source())
    clock.run(10)
    seen = trusted.now()
    clock.wall -= DAY
    clock.monotonic += 1
    assert trusted.now() == seen + 1


def test_an_accepted_iat_raises_the_floor_and_time_runs_on_from_it(clock: SettableClock) -> None:
    """A device whose wall clock says 1970 reads the iat it accepted, plus monotonic time since."""
    clock.wall = 0.0
    trusted = TrustedClock(clock.source())
    trusted.advance_to(T0)
    clock.run(30)
    assert trusted.now() == T0 + 30


def test_a_later_process_of_the_same_boot_counts_the_time_between(clock: SettableClock) -> None:
    """Restored from an anchor taken in this boot, the clock adds the boot time elapsed since."""
    anchor = Anchor(trusted_at=T0, boot_id="boot-1", at_monotonic=clock.monotonic)
    clock.wall = 0.0
    clock.monotonic += 120
    assert TrustedClock(clock.source(), anchor).now() == T0 + 120


def test_after_a_reboot_the_floor_is_the_anchor_itself(clock: SettableClock) -> None:
    """Downtime is unknown after a reboot: trusted time restarts from the anchor, not earlier."""
    anchor = Anchor(trusted_at=T0, boot_id="boot-1", at_monotonic=clock.monotonic + 5_000)
    clock.reboot("boot-2")
    clock.wall = 0.0
    assert TrustedClock(clock.source(), anchor).now() == T0


def test_a_good_wall_clock_is_believed(clock: SettableClock) -> None:
    """When the wall clock is ahead of the floor, trusted time is the wall clock."""
    trusted = TrustedClock(clock.source(), Anchor(T0 - DAY, None, 0.0))
    assert trusted.now() == T0


@pytest.fixture
def app_for_five_days(claims: Claims, keys: Keys) -> str:
    """Entitlements issued at T0 with an app service that expires five days later."""
    return forge(keys.root, claims.entitlements(services=[svc("app", "account:a-1", days=5)]))


async def test_a_clock_set_back_does_not_revive_an_expired_service(
    devices: DeviceFactory, device: Device, clock: SettableClock, app_for_five_days: str
) -> None:
    """Expired at T0+6d; the wall clock set back to T0+1d, in the same run, after a restart and after a reboot."""
    await device.accept(app_for_five_days)
    assert device.decide("app_call", "account:a-1").allowed
    clock.run(6 * DAY)
    assert device.decide("app_call", "account:a-1").reason == "expired"

    clock.wall = T0 + DAY
    assert device.decide("app_call", "account:a-1").reason == "expired"
    device = await devices.restart(device)
    assert device.decide("app_call", "account:a-1").reason == "expired"
    clock.reboot("boot-2")
    device = await devices.restart(device)
    assert device.decide("app_call", "account:a-1").reason == "expired"


async def test_the_accepted_iat_is_on_disk_before_accept_returns(
    devices: DeviceFactory, device: Device, clock: SettableClock, app_for_five_days: str
) -> None:
    """A second process, opened while the first still runs (or after it crashed), already reads the iat."""
    clock.wall = 0.0
    await device.accept(app_for_five_days)
    clock.reboot("boot-2")
    other = await devices.open()
    assert other.clock.now() >= T0


async def test_a_refused_document_does_not_move_trusted_time(device: Device, claims: Claims, keys: Keys) -> None:
    """A document with a far-future iat that is refused (wrong aud) leaves trusted time where it was."""
    before = device.clock.now()
    with pytest.raises(DocumentRefused) as refused:
        await device.accept(forge(keys.root, claims.entitlements(iat=int(T0 + 400 * DAY), aud="ffffffffffff")))
    assert refused.value.reason == reasons.WRONG_AUD
    assert device.clock.now() == before
