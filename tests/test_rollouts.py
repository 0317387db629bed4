"""Phased rollouts (cloud_stub/waves.py): the waves, the table of what a pass does, and end to end with
the fleet simulator and with a real agent whose health check fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cloud_stub import waves
from cloud_stub.errors import Refused
from cloud_stub.images import ImageServer
from cloud_stub.ledger import Ledger
from cloud_stub.operations import upgrades
from cloud_stub.service import CloudService
from tests.support.brokers import Broker
from tests.support.daemons import SupervisedDaemon, device_config
from tests.support.documents import DEVICE_ID
from tests.support.ledger import add_firmware, call, office_ledger, place, stage, statuses

PLAN = waves.Plan(size=2, percent=None, wait=10.0, max_failures=0.4)
SPLIT = [["a", "b"], ["c", "d"], ["e"]]
RUN = waves.Progress(waves.RUNNING, released=1, excused=0, finished_at=None)

# (why, progress before, statuses, now, progress after)
PASSES: list[tuple[str, waves.Progress, dict[str, str], float, waves.Progress]] = [
    ("wave 1 under way", RUN, {"a": "Processing", "b": "Executed"}, 100.0, RUN),
    ("wave 1 done: the wait starts", RUN, {"a": "Executed", "b": "Executed"}, 100.0, RUN._replace(finished_at=100.0)),
    ("the wait not over", RUN._replace(finished_at=100.0), {"a": "Executed", "b": "Executed"}, 105.0,
     RUN._replace(finished_at=100.0)),
    ("the wait over: wave 2 released", RUN._replace(finished_at=100.0), {"a": "Executed", "b": "Executed"}, 110.0,
     RUN._replace(released=2)),
    ("one of two failed (50 % > 40 %): paused at once", RUN, {"a": "Failed", "b": "Processing"}, 100.0,
     RUN._replace(state=waves.PAUSED, reason="wave 1: 1 of 2 devices failed (50%, more than 40%)")),
    ("a failure within the threshold goes on", waves.Progress(waves.RUNNING, 3, 0, None),
     {"a": "Executed", "b": "Executed", "c": "Executed", "d": "Executed", "e": "Processing"}, 100.0,
     waves.Progress(waves.RUNNING, 3, 0, None)),
    ("the last wave done: completed", waves.Progress(waves.RUNNING, 3, 0, None),
     {"a": "Executed", "b": "Executed", "c": "Failed", "d": "Executed", "e": "Executed"}, 100.0,
     waves.Progress(waves.RUNNING, 3, 0, None)._replace(state=waves.PAUSED,
                                                         reason="wave 2: 1 of 2 devices failed (50%, more than 40%)")),
    ("an excused wave's failures do not pause it again", waves.Progress(waves.RUNNING, 2, 2, None),
     {"a": "Failed", "b": "Failed", "c": "Executed", "d": "Executed"}, 100.0,
     waves.Progress(waves.RUNNING, 2, 2, 100.0)),
    ("completed", waves.Progress(waves.RUNNING, 3, 3, None), dict.fromkeys("abcde", "Executed"), 100.0,
     waves.Progress(waves.COMPLETED, 3, 3, 100.0)),
    ("paused stays paused", RUN._replace(state=waves.PAUSED), dict.fromkeys("abcde", "Executed"), 100.0,
     RUN._replace(state=waves.PAUSED)),
    ("cancelled releases nothing", RUN._replace(state=waves.CANCELLED, finished_at=0.0),
     {"a": "Executed", "b": "Executed"}, 100.0, RUN._replace(state=waves.CANCELLED, finished_at=0.0)),
]  # fmt: skip


@pytest.mark.parametrize(("before", "statuses", "now", "after"), [p[1:] for p in PASSES], ids=[p[0] for p in PASSES])
def test_one_pass_of_a_rollout(
    before: waves.Progress, statuses: dict[str, str], now: float, after: waves.Progress
) -> None:
    assert waves.advance(before, SPLIT, statuses, PLAN, now) == after


def test_waves_by_size_and_by_share() -> None:
    devices = [f"d{i}" for i in range(10)]
    assert waves.waves(devices, PLAN) == [devices[0:2], devices[2:4], devices[4:6], devices[6:8], devices[8:10]]
    by_share = waves.waves(devices, waves.Plan(None, 25.0, 0, 0.2))
    assert [len(w) for w in by_share] == [3, 3, 3, 1]  # a quarter of 10, rounded up
    assert waves.waves(devices[:1], waves.Plan(None, 1.0, 0, 0.2)) == [["d0"]]  # at least one device
    assert waves.resume(RUN._replace(state=waves.PAUSED, released=2, reason="x")) == waves.Progress(
        waves.RUNNING, 2, 2, None, None
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """The office and its door phone (DEVICE_ID); each test places the other devices it needs."""
    book = office_ledger(tmp_path / "cloud" / "ledger.db")
    yield book
    book.close()


def _firmware(ledger: Ledger, tmp_path: Path) -> None:
    image = tmp_path / "r29.bin"
    image.write_bytes(os.urandom(128 * 1024))
    add_firmware(ledger, tmp_path / "cloud" / "images", image)


def rollout(ledger: Ledger, ident: str) -> upgrades.RolloutView:
    return call(ledger, lambda uow, who, _: upgrades.rollout(uow, who, ident), "i1", None)


@pytest.mark.parametrize(
    "plan",
    [{"wave_size": 2, "wave_percent": 50.0}, {"wave_size": 0}, {"wave_size": 1, "wave_wait": -1},
     {"wave_size": 1, "max_failures": 1.0}, {"wave_percent": 0}],
)  # fmt: skip
def test_a_rollout_plan_that_makes_no_sense_is_refused(plan: dict[str, Any]) -> None:
    """Both a size and a share, a wave of none, a negative wait, a threshold of all: refused before asking."""
    with pytest.raises(ValidationError, match=r"wave|max_failures"):
        upgrades.StageUpgrade(id="u", project="office", model="R29", version="29.30.10.1", **plan)


def test_an_upgrade_that_is_not_phased_cannot_be_resumed(ledger: Ledger, tmp_path: Path) -> None:
    _firmware(ledger, tmp_path)
    stage(ledger, "u-all")
    with pytest.raises(Refused, match="not a phased"):
        call(ledger, lambda uow, who, _: upgrades.resume(uow, who, "u-all"), "i1", None)


@contextlib.asynccontextmanager
async def serving(ledger: Ledger, broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[CloudService, str]]:
    (tmp_path / "cloud" / "images").mkdir(parents=True, exist_ok=True)
    async with ImageServer(tmp_path / "cloud" / "images") as images:
        service = CloudService(
            ledger, tmp_path / "cloud" / "keys", host=broker.host, port=broker.port, username="cloud",
            password="cloud", interval=0.1, image_base=images.url(""),
        )  # fmt: skip
        task = asyncio.create_task(service.run())
        try:
            yield service, images.url("")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
                await task


async def until(what: str, condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # the ledger has no event to wait on
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_rollout_on_the_fleet_pauses_when_a_wave_fails_and_goes_on_when_resumed(
    mosquitto: Broker, ledger: Ledger, tmp_path: Path
) -> None:
    """Ten simulated R29s in waves of two, at most 40 % of a wave failing: waves 1 and 2 go out one after
    the other; wave 3 has one device that rolls back (50 %): the rollout pauses, and no device of waves
    4 and 5 is given the job. Resumed, they get it, and it completes."""
    from cloud_stub.fleet import SimulatedDevice, run_fleet
    from protocol.ed25519 import from_pem

    macs = [f"0c1105{i:06x}" for i in range(10)]
    for mac in macs:
        place(ledger, mac)
    _firmware(ledger, tmp_path)
    fleet = [SimulatedDevice(mac, fails_upgrades=(i == 4)) for i, mac in enumerate(macs)]
    async with serving(ledger, mosquitto, tmp_path) as (service, _):
        keys = tmp_path / "cloud" / "keys"
        await until("the keys", lambda: (keys / "root.pub.pem").exists())
        root = from_pem((keys / "root.pub.pem").read_bytes())
        fleet_task = asyncio.create_task(
            run_fleet(fleet, [(mosquitto.host, mosquitto.port)], root, username="cloud", password="cloud")
        )
        try:
            chosen = stage(ledger, "u-w", devices=macs, wave_size=2, wave_wait=0.0, max_failures=0.4)
            assert chosen == macs
            service.poke()
            await until("the pause", lambda: rollout(ledger, "u-w").state == waves.PAUSED)
            status = rollout(ledger, "u-w")
            assert status.released == 3
            assert status.reason == "wave 3: 1 of 2 devices failed (50%, more than 40%)"
            assert [w.failed for w in status.waves] == [0, 0, 1, 0, 0]
            await until(
                "wave 3 to end",
                lambda: all(s in waves.FINISHED for s in rollout(ledger, "u-w").waves[2].devices.values()),
            )
            passes = service.passes
            await until("three more passes", lambda: service.passes >= passes + 3)  # none releases a wave
            assert [d.jobs for d in fleet[6:]] == [[]] * 4
            assert rollout(ledger, "u-w").released == 3
            call(ledger, lambda uow, who, _: upgrades.resume(uow, who, "u-w"), "i1", None)
            service.poke()
            await until("completion", lambda: rollout(ledger, "u-w").state == waves.COMPLETED)
            assert [d.jobs for d in fleet] == [["u-w"]] * 10
            assert statuses(ledger, "u-w") == {m: "Failed" if i == 4 else "Executed" for i, m in enumerate(macs)}
        finally:
            fleet_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
                await fleet_task


async def test_a_real_agent_whose_health_check_fails_pauses_the_rollout(
    mosquitto: Broker, ledger: Ledger, tmp_path: Path
) -> None:
    """The first wave is one real agent whose health check fails: it installs, reboots, rolls back to
    its old slot, and the rollout pauses; the simulated devices of the next waves never get the job.
    Cancelled, the rollout stays where it is and the devices it never reached stay untouched."""
    from cloud_stub.fleet import SimulatedDevice, run_fleet
    from protocol.ed25519 import from_pem

    others = [f"0c1199{i:06x}" for i in range(1, 5)]  # after the agent's MAC: it is wave 1
    for mac in others:
        place(ledger, mac)
    _firmware(ledger, tmp_path)
    fleet = [SimulatedDevice(mac) for mac in others]
    async with serving(ledger, mosquitto, tmp_path) as (service, _):
        keys = tmp_path / "cloud" / "keys"
        await until("the keys", lambda: (keys / "root.pub.pem").exists())
        root = from_pem((keys / "root.pub.pem").read_bytes())
        config = device_config(tmp_path / "device", mosquitto, keys / "root.pub.pem",
                               firmware={"health_command": ["false"], "health_deadline_seconds": 10.0})  # fmt: skip
        daemon = SupervisedDaemon(config)
        await daemon.start()
        fleet_task = asyncio.create_task(
            run_fleet(fleet, [(mosquitto.host, mosquitto.port)], root, username="cloud", password="cloud")
        )
        try:
            chosen = stage(ledger, "u-r", wave_size=1, wave_wait=0.0, max_failures=0.0)
            assert chosen[0] == DEVICE_ID  # the agent first (sorted MACs), alone in wave 1
            service.poke()
            await until("the pause", lambda: rollout(ledger, "u-r").state == waves.PAUSED, 90)
            assert statuses(ledger, "u-r")[DEVICE_ID] == "Failed"
            assert 75 in daemon.exits  # it did install and reboot before its check failed
            call(ledger, lambda uow, who, _: upgrades.cancel(uow, who, "u-r"), "i1", None)
            passes = service.passes
            service.poke()
            await until("three more passes", lambda: service.passes >= passes + 3)  # none releases a wave
            status = rollout(ledger, "u-r")
            assert (status.state, status.released) == (waves.CANCELLED, 1)
            assert [d.jobs for d in fleet] == [[]] * 4
        finally:
            fleet_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
                await fleet_task
            await daemon.stop()
