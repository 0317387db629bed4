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
* Served by prometheus_client's own server (``start_http_server``, a thread) on ``[metrics] address``
  (127.0.0.1 unless configured, so nobody off the device reads it unproxied), over TLS when
  ``tls_cert``/``tls_key`` are set, requiring a client certificate signed by ``tls_client_ca`` when that is
  set too (a fleet's scraper with mutual TLS). A scrape samples the daemon's state on its event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import structlog

log = structlog.get_logger("agent.metrics")

Sample = dict[str, Any]
_SAMPLE_SECONDS: Final = 10.0  # a scrape waits this long for the daemon's state


class _Sampled:
    """A prometheus_client collector of the families sampled from the daemon's state at scrape time."""

    def __init__(self) -> None:
        self.fetch: Callable[[], Sample] | None = None  # set by serve(): runs in the server's thread

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.fetch is None:
            return
        try:
            s = self.fetch()
        except Exception as exc:  # the daemon is stopping, or too slow: this scrape has the rest
            log.warning("metrics_not_sampled", error=repr(exc)[:200])
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

    def __init__(self, sample: Callable[[], Coroutine[Any, Any, Sample]], build: dict[str, str]) -> None:
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

    async def serve(self, address: str, port: int, tls: Tls | None = None) -> None:
        """Serve ``GET /metrics`` on ``address``:``port`` until cancelled, with prometheus_client's own server
        (a thread; each scrape samples the daemon's state on the event loop), over TLS when ``tls`` names the
        files. A taken port or unreadable certificates are logged, not fatal: the metrics are then not
        served (never in clear when TLS was asked for)."""
        from prometheus_client import start_http_server

        loop = asyncio.get_running_loop()
        self._sampled.fetch = lambda: asyncio.run_coroutine_threadsafe(self._sample(), loop).result(_SAMPLE_SECONDS)
        files: dict[str, Any] = {}
        if tls is not None:
            files = {"certfile": str(tls.cert), "keyfile": str(tls.key), "tls_min_version": ssl.TLSVersion.TLSv1_2}
            if tls.client_ca is not None:
                files |= {"client_cafile": str(tls.client_ca), "client_auth_required": True}
        try:
            server, thread = await asyncio.to_thread(
                start_http_server, port, addr=address, registry=self.registry, **files
            )
        except (OSError, ssl.SSLError) as exc:
            log.error("metrics_not_served", address=address, port=port, error=str(exc))
            await asyncio.Event().wait()
            return
        log.info("metrics_serving", address=address, port=server.server_port, tls=tls is not None)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(server.shutdown)  # the scrape under way ends first
            server.server_close()
            thread.join()


class Tls(NamedTuple):
    """The scrape endpoint's TLS: its certificate and key; client certificates signed by ``client_ca``
    required when it is set (a fleet's scraper with mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None
