"""Prometheus metrics (``[metrics]``; off by default), read at scrape time, named by Prometheus's conventions.

* Cumulative counts are counters ending in ``_total`` (connections and failures since start, evictions
  since the outbox was made, decisions taken for callers); levels are gauges; times are Unix
  timestamps in seconds ending in ``_timestamp_seconds`` (when each held service lapses and when the
  document in force expires: an alert can say "door-2's service lapses in 3 days");
  ``edge_build_info`` carries the versions as labels; ``process_*`` is prometheus_client's process
  collector (CPU, resident memory, open files, start time).
* Everything but the decisions is sampled from the daemon's state when Prometheus scrapes (nothing is
  counted on the hot paths but the decisions the daemon takes for a caller: ``check`` and the
  hardware's reactions, never the in-process fast path).
* Served by a few lines of asyncio on ``[metrics] address`` (127.0.0.1 unless configured, so nobody off
  the device reads it unproxied), over TLS when ``tls_cert``/``tls_key`` are set, requiring a client
  certificate signed by ``tls_client_ca`` when that is set too (a fleet's scraper with mutual TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog

log = structlog.get_logger("agent.metrics")

Sample = dict[str, Any]


class _Sampled:
    """A prometheus_client collector of the families sampled from the daemon's state at scrape time."""

    def __init__(self) -> None:
        self.last: Sample | None = None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.last
        if s is None:
            return
        yield GaugeMetricFamily("edge_outbox_depth", "Events and replies queued, not yet acknowledged", s["depth"])
        yield GaugeMetricFamily("edge_outbox_held", "Queued events held back by a denied decision", s["held"])
        evicted = CounterMetricFamily(
            "edge_outbox_evicted", "Events evicted since the outbox was made", labels=["type"]
        )
        for typ, count in sorted(s["evicted"].items()):
            evicted.add_metric([typ], count)
        yield evicted
        yield CounterMetricFamily("edge_mqtt_connections", "MQTT connections made since start", s["connections"])
        yield CounterMetricFamily("edge_mqtt_failures", "MQTT connection failures since start", s["failures"])
        yield GaugeMetricFamily("edge_mqtt_connected", "1 while connected to the broker", 1 if s["connected"] else 0)
        seq = GaugeMetricFamily("edge_document_seq", "seq of the signed document in force", labels=["typ"])
        for typ, value in sorted(s["seq"].items()):
            seq.add_metric([typ], value)
        yield seq
        expiry = s["expiry"]
        document = GaugeMetricFamily(
            "edge_document_expiry_timestamp_seconds", "When the signed document in force expires", labels=["typ"]
        )
        for typ, at in sorted(expiry["document"].items()):
            document.add_metric([typ], at)
        yield document
        services = GaugeMetricFamily(
            "edge_service_expiry_timestamp_seconds",
            "When each held service lapses (the document's own expiry may come first)",
            labels=["service", "subject"],
        )
        for service, subject, at in expiry["services"]:
            services.add_metric([service, subject], at)
        yield services
        firmware = GaugeMetricFamily("edge_firmware_state", "1 for the latest job's state", labels=["state"])
        if s["firmware_state"]:
            firmware.add_metric([s["firmware_state"]], 1)
        yield firmware


class Metrics:
    """The daemon's metrics; ``sample`` returns the current values when scraped."""

    def __init__(self, sample: Callable[[], Awaitable[Sample]], build: dict[str, str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

        self._sample = sample
        self.registry = CollectorRegistry()
        r = self.registry
        self._sampled = _Sampled()
        r.register(self._sampled)
        ProcessCollector(registry=r)
        info = Gauge("edge_build_info", "The agent's build: its versions as labels", sorted(build), registry=r)
        info.labels(**build).set(1)
        self.decisions = Counter(
            "edge_decisions", "Decisions taken for callers, by reason", ["action", "reason"], registry=r
        )  # exposed as edge_decisions_total

    def decided(self, action: str, reason: str) -> None:
        self.decisions.labels(action=action, reason=reason).inc()

    async def render(self) -> bytes:
        from prometheus_client import generate_latest

        self._sampled.last = await self._sample()
        return bytes(generate_latest(self.registry))

    async def serve(self, address: str, port: int, tls: Callable[[], ssl.SSLContext] | None = None) -> None:
        """Serve ``GET /metrics`` on ``address``:``port`` until cancelled (over TLS when ``tls`` makes a
        context). A taken port or unreadable certificates are logged, not fatal: the metrics are then not
        served (never in clear when TLS was asked for)."""
        try:
            context = tls() if tls is not None else None
            server = await asyncio.start_server(self._connection, address, port, ssl=context)
        except (OSError, ssl.SSLError) as exc:
            log.error("metrics_not_served", address=address, port=port, error=str(exc))
            await asyncio.Event().wait()
            return
        log.info("metrics_serving", address=address, port=server.sockets[0].getsockname()[1], tls=context is not None)
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
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


def tls_context(cert: Any, key: Any, client_ca: Any | None) -> ssl.SSLContext:
    """The scrape endpoint's TLS: its certificate; client certificates required when ``client_ca`` is set."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
