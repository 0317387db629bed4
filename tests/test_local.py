"""The daemon's hardware side in process (agent/local/side.py): what the tables cannot show."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.intake.commands import Credential
from agent.local.credentials import CredentialIndex
from agent.local.stimuli import Stimulus
from agent.store.database import Transaction
from tests.support.daemons import InProcessDaemon, device_config


def _nobody() -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"mqtt://127.0.0.1:{closed.getsockname()[1]}"


async def test_a_stimulus_during_a_reload_is_judged_on_the_new_credentials(
    tmp_path: Path, root_pem: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by bench/bench_access.py: a card presented while the daemon reloads its credentials (after a
    command issued them) waits for the reload instead of being judged on the old index."""
    config_file = device_config(tmp_path / "device", _nobody(), root_pem)
    async with InProcessDaemon(config_file) as handle:
        daemon = handle.daemon
        assert daemon is not None
        loading, release = asyncio.Event(), asyncio.Event()
        real_load = CredentialIndex.load

        async def slow_load(tx: Transaction) -> CredentialIndex:
            loading.set()
            await release.wait()
            return await real_load(tx)

        await daemon.local.handle(Stimulus("heartbeat", "mr01-x", {}, 0.0))  # the first load is done
        card = Credential(id="c-1", kind="card", value="04A1B2")
        async with daemon.device.store.transaction() as tx:
            await tx.execute(
                "INSERT INTO credentials (door, id, kind, body, issued_at) VALUES ('door-1', ?, ?, ?, 0)",
                (card.id, card.kind, card.stored()),
            )
        monkeypatch.setattr(CredentialIndex, "load", slow_load)
        daemon.local.changed()
        async with asyncio.timeout(5):
            await loading.wait()  # the daemon's own loop is reloading
        presented = asyncio.create_task(
            daemon.local.handle(Stimulus("card", None, {"door": "door-1", "value": "04A1B2"}, 0.0))
        )
        done, _ = await asyncio.wait([presented], timeout=0.2)
        assert not done, "judged before the reload finished"
        release.set()
        async with asyncio.timeout(5):
            result: dict[str, Any] = await presented
        assert result["actions"] == [
            {"driver": "relay", "op": "open", "args": {"door": "door-1", "seconds": 5}},
            {"driver": "reader", "op": "signal", "args": {"door": "door-1", "pattern": "granted"}},
        ]
