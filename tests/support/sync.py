"""Helpers for the tests that drive the daemon over a broker: signed documents now, waiting on what
the device reports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from agent.control import server as control
from agent.errors import ControlError
from tests.support.brokers import Broker
from tests.support.cloud import CloudPeer
from tests.support.daemons import ProcessDaemon
from tests.support.documents import DAY, DEVICE_ID, Claims, Keys, commercial_project, forge, svc


class Docs:
    """Signed documents for the device, issued now."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.claims = Claims(iat=time.time())

    def trust(self) -> str:
        return forge(self.keys.root, self.claims.trust([self.keys.signing]), typ="trust")

    def entitlements(self, services: list[dict[str, Any]], doors: tuple[str, ...] = ("door-1", "door-2")) -> str:
        claims = self.claims.entitlements(
            project=commercial_project(doors), services=services, exp=int(self.claims.iat + 30 * DAY)
        )
        return forge(self.keys.signing, claims)

    def command(self, op: str, args: dict[str, Any] | None = None, command_id: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "aud": DEVICE_ID,
            "iat": now,
            "exp": now + 600,
            "seq": self.claims.next_seq("command"),
            "id": command_id or f"cmd-{op}-{now}-{self.claims.seq['command']}",
            "op": op,
            "args": args or {},
        }
        return forge(self.keys.signing, claims, typ="command")

    def firmware_job(self, job_id: str, **fields: Any) -> str:
        """A signed ``firmware-job`` (PROTOCOL.md), ``fields`` over a model R29 job."""
        now = int(time.time())
        claims = {
            "aud": DEVICE_ID,
            "iat": now,
            "exp": now + 3600,
            "seq": self.claims.next_seq("firmware-job"),
            "job_id": job_id,
            "model": "R29",
            "at": None,
            "reset_after_upgrade": False,
            "allow_downgrade": False,
            "cancel": False,
            **fields,
        }
        return forge(self.keys.signing, claims, typ="firmware-job")


PAID = [svc("door", "door:door-2", days=400)]


async def provision(cloud: CloudPeer, docs: Docs, services: list[dict[str, Any]] | None = None) -> None:
    """Publish the retained trust and entitlements documents."""
    await cloud.publish("trust", docs.trust(), retain=True)
    await cloud.publish("entitlements", docs.entitlements(PAID if services is None else services), retain=True)


def mode_is(cloud: CloudPeer, mode: str, seq: int | None = None) -> bool:
    state = cloud.state
    if state is None or not state.get("online"):
        return False
    return bool(state["entitlements"]["mode"] == mode and (seq is None or state["entitlements"]["seq"] == seq))


def replay(docs: Docs) -> Callable[[int], str]:
    """How the cloud asks for events again: resync from a seq."""
    return lambda from_seq: docs.command("resync", {"from_seq": from_seq})


def acknowledged(answers: list[dict[str, Any]]) -> set[str]:
    """The event ids the daemon acknowledged as durable."""
    return {a["event_id"] for a in answers if a.get("ok")}


async def status_until(
    data_dir: Path, condition: Callable[[dict[str, Any]], bool], seconds: float = 30
) -> dict[str, Any]:
    """Poll the daemon's status until ``condition`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            status: dict[str, Any] = (await control.request(data_dir, {"op": "status"}))["status"]
            if condition(status):
                return status
        except ControlError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting on the daemon's status")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def provisioned(
    broker: Broker, config_file: Path, docs: Docs, services: list[dict[str, Any]] | None = None, mode: str = "normal"
) -> AsyncIterator[tuple[ProcessDaemon, CloudPeer]]:
    """A daemon process holding ``services`` (PAID by default) in ``mode``, and the cloud watching it; the
    daemon is stopped on the way out."""
    daemon = ProcessDaemon(config_file)
    async with CloudPeer(broker) as cloud:
        await provision(cloud, docs, services)
        await daemon.start()
        try:
            await cloud.wait_until(lambda: mode_is(cloud, mode, 1))
            yield daemon, cloud
        finally:
            await daemon.stop()


async def delivered(cloud: CloudPeer, answers: list[dict[str, Any]], docs: Docs) -> set[str]:
    """Every event the device acknowledged, once they have all reached the cloud (gap repair included)."""
    acked = acknowledged(answers)
    await cloud.converge(acked, replay(docs))
    return acked
