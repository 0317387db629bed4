"""The daemon's hardware side in process (agent/local/side.py): what the tables cannot show."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.intake.commands import Credential
from agent.local.credentials import CredentialIndex
from agent.local.stimuli import Stimulus
from agent.store.database import Transaction
from protocol.claims import decode
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


async def test_the_packed_credential_index_round_trips_and_survives_an_older_agents_writes(tmp_path: Path) -> None:
    """The reader's index entry is packed beside each credential (migration 6): what is found is what was
    issued; a row an older agent wrote (no entry) or changed (its entry left stale: the trigger clears it)
    is packed from its body at load, so a rollback and a return never leave a stale window."""
    from agent.local import credentials
    from agent.store.database import Store

    store = await Store.open(tmp_path)
    try:
        issued = decode(Credential,
            json.dumps({"id": "c-1", "kind": "card", "value": "04A1B2", "valid_from": "2026-01-01T00:00:00Z",
             "valid_until": "2027-01-01T00:00:00Z", "dynamic": True, "floors": ["3", "4"]})
        )  # fmt: skip
        async with store.transaction() as tx:
            await credentials.issue(tx, "door-1", [(issued.id, issued.kind, issued.stored())], 1.0)
        async with store.transaction("DEFERRED") as tx:
            index = await CredentialIndex.load(tx)
        held = index.find("door-1", "card", "04A1B2")
        assert held == credentials.Held("c-1", "card", 1767225600.0, 1798761600.0, True, ("3", "4"))
        assert index.find("door-2", "card", "04A1B2") is None  # the door is part of the key
        assert index.find("door-1", "pin", "04A1B2") is None  # and the kind
        # an older agent (no lookup/held columns) narrows the window and adds a PIN
        narrowed = msgspec.structs.replace(issued, valid_until=None, floors=())
        async with store.transaction() as tx:
            await tx.execute(
                "UPDATE credentials SET body = ?, issued_at = 2 WHERE door = 'door-1' AND id = 'c-1'",
                (narrowed.stored(),),
            )
            pin = Credential(id="p-1", kind="pin", value="2468")
            await tx.execute(
                "INSERT INTO credentials (door, id, kind, body, issued_at) VALUES ('door-1', ?, ?, ?, 2)",
                (pin.id, pin.kind, pin.stored()),
            )
        async with store.transaction("DEFERRED") as tx:
            index = await CredentialIndex.load(tx)
        assert index.find("door-1", "card", "04A1B2") == credentials.Held("c-1", "card", 1767225600.0, None, True, ())
        assert index.find("door-1", "pin", "2468") == credentials.Held("p-1", "pin", None, None, False, ())
        assert len(index) == 2
        assert len(index.repaired) == 2
        # what was packed at load is kept: the next load reads both packed, and finds the same
        async with store.transaction() as tx:
            assert await credentials.save_repaired(tx, index) == 2
        async with store.transaction("DEFERRED") as tx:
            assert await tx.fetchall("SELECT id FROM credentials WHERE lookup IS NULL OR held IS NULL") == []
            again = await CredentialIndex.load(tx)
        assert again.repaired == []
        assert again.find("door-1", "card", "04A1B2") == index.find("door-1", "card", "04A1B2")
        assert again.find("door-1", "pin", "2468") == index.find("door-1", "pin", "2468")
    finally:
        await store.close()
