"""Fixtures: fresh Ed25519 keys, a device on a real SQLite file in a temp dir, a settable clock; the cloud's
ledger on SQLite and on the session's own PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import Config, load_config
from agent.device import Device
from tests.support.brokers import Broker, make_broker
from tests.support.daemons import USERS
from tests.support.devices import DeviceFactory
from tests.support.documents import Claims, Keys, SettableClock, write_config, write_public_key
from tests.support.ledger import LedgerAt
from tests.support.postgres import Cluster
from tests.support.sync import Docs

if TYPE_CHECKING:
    from playwright.async_api import Browser


@pytest.fixture
def keys() -> Keys:
    """Fresh keys for each test."""
    return Keys(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())


@pytest.fixture
def clock() -> SettableClock:
    """A clock at T0 (the vectors' iat) that the test moves."""
    return SettableClock()


@pytest.fixture
def claims() -> Claims:
    """A claims builder with seq counters."""
    return Claims()


@pytest.fixture
def config_file(tmp_path: Path, keys: Keys) -> Path:
    """A valid config trusting ``keys.root``."""
    return write_config(tmp_path, [write_public_key(tmp_path / "root.pub.pem", keys.root)])


@pytest.fixture
def config(config_file: Path) -> Config:
    """The validated config."""
    return load_config(config_file, {})


@pytest.fixture
async def devices(config: Config, clock: SettableClock) -> AsyncIterator[DeviceFactory]:
    """A factory of devices; every device still open at the end is closed."""
    factory = DeviceFactory(config, clock, [])
    yield factory
    for device in factory.opened:
        await device.close()


@pytest.fixture
async def device(devices: DeviceFactory) -> Device:
    """A device with nothing accepted yet."""
    return await devices.open()


@pytest.fixture
def root_pem(tmp_path: Path, keys: Keys) -> Path:
    """The root public key the device trusts, as a PEM file."""
    return write_public_key(tmp_path / "root.pub.pem", keys.root)


@pytest.fixture
def docs(keys: Keys) -> Docs:
    """Signed documents for the device, issued now."""
    return Docs(keys)


@pytest.fixture(params=["amqtt", "mosquitto", "nats"])
async def process_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker in its own process, requiring user names (to stop, freeze or restart)."""
    handle = make_broker(request.param, tmp_path / "process-broker", process=True, users=USERS)
    await handle.start()
    yield handle
    await handle.stop()


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    """Mosquitto in its own process, requiring user names: for tests about the device, not the broker."""
    handle = make_broker("mosquitto", tmp_path / "mosquitto", process=True, users=USERS)
    await handle.start()
    yield handle
    await handle.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL cluster of the test session's own, on a free port (tests/support/postgres.py)."""
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerAt:
    """Where a ledger test's ledger is: a SQLite file, then a fresh PostgreSQL database (every ledger test
    runs against both)."""
    if request.param == "sqlite":
        return LedgerAt.sqlite(tmp_path / "cloud" / "ledger.db")
    cluster: Cluster = request.getfixturevalue("postgres")
    return LedgerAt(cluster.database(), tmp_path / "cloud")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, launched by Playwright (the portal's browser tests)."""
    from tests.support.browser import chromium

    async with chromium() as launched:
        yield launched
