"""The cloud's side of the wire in a test: cloud_stub's link to the device, pointed at a test broker,
plus the assertion every fault test ends with."""

from __future__ import annotations

import ssl

from cloud_stub.link import DeviceLink
from tests.support.brokers import Broker
from tests.support.documents import DEVICE_ID
from tests.support.eventshapes import problem


class CloudPeer(DeviceLink):
    """The cloud's link to the device under test, on ``broker`` (with its TLS, if any)."""

    def __init__(self, broker: Broker, device_id: str = DEVICE_ID) -> None:
        tls = None
        if broker.pki is not None:
            tls = ssl.create_default_context(cafile=str(broker.pki.ca))
            if broker.mutual:
                tls.load_cert_chain(str(broker.pki.cloud.cert), str(broker.pki.cloud.key))
        super().__init__(broker.host, broker.port, device_id, user="cloud", password="cloud", tls=tls)
        self.broker = broker

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if exc[0] is None:  # a test that passed: every event it received is as docs/sync.md says
            wrong = [p for p in (problem(e) for e in self.events.values()) if p is not None]
            assert not wrong, f'events unlike docs/sync.md "Event shapes": {wrong[:5]}'

    def assert_exactly_once(self, acknowledged: set[str]) -> None:
        """Every event the device acknowledged is here once after dedupe; no seq gap; no seq reused."""
        missing = acknowledged - set(self.events)
        assert not missing, f"{len(missing)} acknowledged events never arrived"
        assert not self.conflicts, f"seqs carried two event ids: {self.conflicts[:3]}"
        assert not self.seq_gaps(), f"gaps in seq: {self.seq_gaps()[:10]}"
        assert len(self.seq_to_id) == len(self.events)
