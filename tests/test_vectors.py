"""The shared test vectors (../shared/vectors) are accepted and refused as their README says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.errors import DocumentRefused
from protocol import jws
from tests.support.devices import DeviceFactory
from tests.support.documents import SettableClock, write_config

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    """vectors.json."""
    return json.loads((VECTORS / "vectors.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def vector_devices(tmp_path: Path, clock: SettableClock) -> DeviceFactory:
    """Devices with root.pub.pem as their only trust root and the vectors' device_id."""
    shutil.copy(VECTORS / "root.pub.pem", tmp_path / "root.pub.pem")
    config = load_config(write_config(tmp_path, [Path("root.pub.pem")]), {})
    return DeviceFactory(config, clock, [])


def test_kids_are_rfc7638_thumbprints(vectors: dict[str, Any]) -> None:
    """Each key's published kid is the thumbprint of its published x."""
    for entry in vectors["keys"].values():
        assert jws.thumbprint(jws.b64url_decode(entry["x"])) == entry["kid"]


async def test_valid_documents_are_accepted_in_order(vectors: dict[str, Any], vector_devices: DeviceFactory) -> None:
    """trust_by_root, entitlements_by_root and entitlements_by_signing_key are accepted, in that order."""
    device = await vector_devices.open()
    try:
        for name in ("trust_by_root", "entitlements_by_root", "entitlements_by_signing_key"):
            outcome = await device.accept(vectors["valid"][name])
            assert outcome.typ in ("trust", "entitlements"), name
        assert device.entitlements is not None
        assert device.entitlements.seq == 2
        assert device.decide("issue_access", "door:door-1").allowed
    finally:
        await device.close()


@pytest.mark.parametrize("name", ["alg_none", "wrong_aud", "signing_key_without_trust"])
async def test_invalid_documents_are_refused(name: str, vectors: dict[str, Any], vector_devices: DeviceFactory) -> None:
    """Every invalid vector is refused by a fresh device (which has not accepted the trust document)."""
    device = await vector_devices.open()
    try:
        with pytest.raises(DocumentRefused):
            await device.accept(vectors["invalid"][name])
        assert device.documents == {}
    finally:
        await device.close()


@pytest.mark.parametrize("name", ["alg_none", "wrong_aud"])
async def test_invalid_documents_are_refused_after_trust(
    name: str, vectors: dict[str, Any], vector_devices: DeviceFactory
) -> None:
    """alg_none and wrong_aud stay refused on a device that holds the trust document."""
    device = await vector_devices.open()
    try:
        await device.accept(vectors["valid"]["trust_by_root"])
        with pytest.raises(DocumentRefused):
            await device.accept(vectors["invalid"][name])
        assert set(device.documents) == {"trust"}
    finally:
        await device.close()


@pytest.fixture(scope="module")
def scopes() -> dict[str, Any]:
    """scopes.json: key scopes and root rotation (PROTOCOL.md), a sequence of steps."""
    return json.loads((VECTORS / "scopes.json").read_text())  # type: ignore[no-any-return]


async def _take(device: Any, token: str) -> str:
    try:
        await device.accept(token)
    except DocumentRefused as refused:
        return refused.reason
    return "accepted"


async def test_key_scopes_and_root_rotation_follow_the_steps(
    scopes: dict[str, Any], vector_devices: DeviceFactory
) -> None:
    """Each step of scopes.json, in order, is accepted or refused with the reason it names."""
    device = await vector_devices.open()
    try:
        outcomes = [(step["what"], await _take(device, step["token"])) for step in scopes["steps"]]
    finally:
        await device.close()
    assert outcomes == [(step["what"], step["expect"]) for step in scopes["steps"]]


async def test_scopes_and_rotated_roots_survive_restarts(scopes: dict[str, Any], vector_devices: DeviceFactory) -> None:
    """Restarted after each step: a scoped key still signs only its types, and after the rotation the
    retired root is refused and root-2 accepted (the provisioned root file is only where it started)."""
    steps = {step["what"]: step for step in scopes["steps"]}
    device = await vector_devices.open()
    try:
        assert await _take(device, steps["trust with scoped keys, by root"]["token"]) == "accepted"
        device = await vector_devices.restart(device)
        assert await _take(device, steps["firmware-job by the billing key"]["token"]) == "key_not_allowed"
        assert await _take(device, steps["entitlements by the release key"]["token"]) == "key_not_allowed"
        assert await _take(device, steps["root rotation with root-2's proof"]["token"]) == "accepted"
        device = await vector_devices.restart(device)
        assert sorted(device.keyring.roots) == [scopes["keys"]["root-2"]["kid"]]
        assert await _take(device, steps["entitlements by the retired root"]["token"]) == "unknown_kid"
        assert await _take(device, steps["entitlements by root-2"]["token"]) == "accepted"
    finally:
        await device.close()


async def test_rotated_roots_survive_a_lost_database(scopes: dict[str, Any], vector_devices: DeviceFactory) -> None:
    """The database that held the rotation is gone: the sidecar still holds root-2, so the retired root
    signs nothing and root-2's documents are taken."""
    steps = {step["what"]: step for step in scopes["steps"]}
    device = await vector_devices.open()
    assert await _take(device, steps["trust with scoped keys, by root"]["token"]) == "accepted"
    assert await _take(device, steps["root rotation with root-2's proof"]["token"]) == "accepted"
    await device.close()
    vector_devices.opened.remove(device)
    for leftover in vector_devices.config.data_dir.glob("agent.db*"):
        leftover.unlink()
    device = await vector_devices.open()
    try:
        assert await _take(device, steps["entitlements by the retired root"]["token"]) == "unknown_kid"
        assert await _take(device, steps["entitlements by root-2"]["token"]) == "accepted"
    finally:
        await device.close()
