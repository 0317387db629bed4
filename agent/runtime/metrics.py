"""Prometheus metrics on a loopback port (``[metrics] port``; off by default), read at scrape time.

Gauges are filled from the daemon's state when Prometheus scrapes (nothing is counted on the hot
paths but the decisions the daemon takes for a caller: ``check`` and the hardware's reactions, never
the in-process fast path). Served by a few lines of asyncio on 127.0.0.1 only: the metrics say
nothing secret, but nobody off the device needs them unproxied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("agent.metrics")

Sample = dict[str, Any]


class Metrics:
    """The daemon's metrics; ``sample`` returns the current values when scraped."""

    def __init__(self, sample: Callable[[], Awaitable[Sample]]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self._sample = sample
        self.registry = CollectorRegistry()
        r = self.registry
        self.depth = Gauge("edge_outbox_depth", "Events and replies queued, not yet acknowledged", registry=r)
        self.held = Gauge("edge_outbox_held", "Queued events held back by a denied decision", registry=r)
        self.evicted = Gauge("edge_outbox_evicted", "Events evicted since the outbox was made", ["type"], registry=r)
        self.connections = Gauge("edge_mqtt_connections", "MQTT connections made since start", registry=r)
        self.failures = Gauge("edge_mqtt_failures", "MQTT connection failures since start", registry=r)
        self.connected = Gauge("edge_mqtt_connected", "1 while connected to the broker", registry=r)
        self.seq = Gauge("edge_document_seq", "seq of the signed document in force", ["typ"], registry=r)
        self.firmware = Gauge("edge_firmware_state", "1 for the latest job's state", ["state"], registry=r)
        self.decisions = Counter(
            "edge_decisions", "Decisions taken for callers, by reason", ["action", "reason"], registry=r
        )

    def decided(self, action: str, reason: str) -> None:
        self.decisions.labels(action=action, reason=reason).inc()

    async def render(self) -> bytes:
        from prometheus_client import generate_latest

        s = await self._sample()
        self.depth.set(s["depth"])
        self.held.set(s["held"])
        for typ, count in s["evicted"].items():
            self.evicted.labels(type=typ).set(count)
        self.connections.set(s["connections"])
        self.failures.set(s["failures"])
        self.connected.set(1 if s["connected"] else 0)
        for typ, seq in s["seq"].items():
            self.seq.labels(typ=typ).set(seq)
        self.firmware.clear()
        if s["firmware_state"]:
            self.firmware.labels(state=s["firmware_state"]).set(1)
        return bytes(generate_latest(self.registry))

    async def serve(self, port: int) -> None:
        """Serve ``GET /metrics`` on 127.0.0.1:``port`` until cancelled; a taken port is logged, not fatal."""
        try:
            server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        except OSError as exc:
            log.error("metrics_not_served", port=port, error=str(exc))
            await asyncio.Event().wait()
            return
        log.info("metrics_serving", port=server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path.split(b"?")[0] != b"/metrics":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                body = await self.render()
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
