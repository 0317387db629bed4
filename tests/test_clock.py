"""Trusted time never goes back: not by setting the wall clock back, not across restarts or reboots."""

from __future__ import annotations

from typing import Any

import pytest

from agent.clock import Anchor, TrustedClock, newest_anchor
from agent.device import Device
from agent.entitlements.intake import Duplicate
from agent.errors import DocumentRefused
from protocol import reasons
from tests.support.devices import DeviceFactory
from tests.support.documents import DAY, T0, Claims, Keys, SettableClock, forge, svc


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


# -- a wall clock that ran ahead (issue 12; docs/entitlements.md "Trusted time") ----------------------


def _renewal(claims: Claims, keys: Keys, iat: float, **overrides: Any) -> str:
    """Entitlements issued at ``iat`` (a door service for a year), in force 30 days."""
    fields: dict[str, Any] = {"exp": int(iat + 30 * DAY), "services": [svc("door", "door:door-2", days=365, base=iat)]}
    return forge(keys.root, claims.entitlements(iat=int(iat), **{**fields, **overrides}))


async def test_a_floor_a_forward_clock_raised_is_corrected_by_a_fresh_signed_document(
    devices: DeviceFactory, device: Device, clock: SettableClock, claims: Claims, keys: Keys
) -> None:
    """Two years ahead the device fails closed and persists that floor; once the wall clock is right again,
    the next renewal (fresher than anything accepted, issued when the wall clock says) brings trusted time
    back to the wall clock, and is accepted although the bogus time would have called it expired."""
    await device.accept(_renewal(claims, keys, T0))
    assert device.decide("issue_access", "door:door-2").allowed
    clock.wall += 730 * DAY  # a bad NTP server
    assert device.decide("issue_access", "door:door-2").reason == "document_expired"
    device = await devices.restart(device)  # the bogus floor is on disk
    clock.wall -= 730 * DAY  # NTP fixed
    clock.run(60)
    assert device.clock.now() > T0 + 700 * DAY, "the floor was not persisted: nothing to correct"
    assert device.clock.correctable() is not None
    await device.accept(_renewal(claims, keys, clock.wall - 30))
    assert abs(device.clock.now() - clock.wall) < 1
    assert device.decide("issue_access", "door:door-2").allowed
    device = await devices.restart(device)  # the correction is on disk too (a later generation)
    assert abs(device.clock.now() - clock.wall) < 1
    clock.reboot("boot-2")
    device = await devices.restart(device)
    assert device.clock.now() < T0 + DAY


async def test_a_clock_set_back_is_not_corrected_by_a_document_issued_after_it(
    devices: DeviceFactory, device: Device, clock: SettableClock, claims: Claims, keys: Keys, app_for_five_days: str
) -> None:
    """The wall clock set back to revive a lapsed app: a renewal issued now does not vouch for that wall
    clock (it was issued later than the wall clock says), so trusted time stays and the app stays expired."""
    await device.accept(app_for_five_days)
    clock.run(6 * DAY)
    assert device.decide("app_call", "account:a-1").reason == "expired"
    clock.wall = T0 + DAY
    assert device.clock.correctable() is not None  # the wall clock reads far below the floor
    await device.accept(forge(keys.root, claims.entitlements(iat=int(T0 + 6 * DAY), services=[
        svc("app", "account:a-1", days=5)
    ])))  # fmt: skip
    assert device.clock.now() >= T0 + 6 * DAY
    assert device.decide("app_call", "account:a-1").reason == "expired"


async def test_a_correction_never_goes_below_the_latest_accepted_iat(
    device: Device, clock: SettableClock, claims: Claims, keys: Keys
) -> None:
    """A withheld document (fresher, issued early) vouches for a wall clock set far back: trusted time comes
    down no further than the latest iat accepted plus the time since (PROTOCOL.md's promise)."""
    await device.accept(_renewal(claims, keys, T0))
    clock.run(DAY)
    clock.wall = T0 - 10 * DAY
    withheld = _renewal(claims, keys, T0 - 10 * DAY, exp=int(T0 + 20 * DAY))
    await device.accept(withheld)
    assert device.clock.now() >= T0 + DAY


async def test_a_duplicate_or_a_rollback_corrects_nothing(
    devices: DeviceFactory, device: Device, clock: SettableClock, claims: Claims, keys: Keys
) -> None:
    """Only a document fresher than any accepted of its type vouches: the one in force, delivered again,
    and an older one do not move the floor."""
    first = _renewal(claims, keys, T0)
    second = _renewal(claims, keys, T0 + 60)
    await device.accept(first)
    await device.accept(second)
    clock.wall += 730 * DAY
    device.clock.now()
    clock.wall -= 730 * DAY
    assert await device.accept(second) == Duplicate("entitlements", 2)
    with pytest.raises(DocumentRefused):
        await device.accept(first)
    assert device.clock.now() > T0 + 700 * DAY
    assert device.clock.generation == 0


def test_a_newer_generation_wins_over_a_higher_floor() -> None:
    """The sidecar may still hold the bogus floor after a correction: the corrected anchor counts."""
    bogus = Anchor(T0 + 730 * DAY, "boot-1", 10.0, T0, 0)
    corrected = Anchor(T0, "boot-1", 20.0, T0, 1)
    assert newest_anchor(bogus, corrected) == corrected
    assert newest_anchor(None, bogus) == bogus
    later = Anchor(T0 + 731 * DAY, "boot-1", 30.0, T0, 0)
    assert newest_anchor(bogus, later) == later
