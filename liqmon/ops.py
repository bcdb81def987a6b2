"""The service's ops surface: Prometheus metrics and ``/healthz`` + ``/readyz`` over HTTP.

The endpoint binds to loopback by default (``[http] host``). ``/metrics`` serves the Prometheus
text format; ``/healthz`` answers 200 while the process runs; ``/readyz`` answers 200 once state
is restored and the configured feed and broker are connected, 503 with the reason otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alerts.topics import ALERT_KINDS, FEED_KINDS
from monitor.engine import Engine

if TYPE_CHECKING:
    from alerts.publisher import MqttSink
    from feeds.live import FeedStats
    from liqmon.inbox import Inbox
    from liqmon.runtime import Runtime

log = structlog.get_logger("liqmon.http")

MAX_REQUEST_BYTES = 8_192


class _EngineCollector(Collector):
    """Book-level gauges read from the engine at scrape time (vectorised over the book)."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        yield GaugeMetricFamily("liqmon_entities", "Open entities", value=engine.entity_count)
        yield GaugeMetricFamily("liqmon_positions", "Open positions", value=engine.position_count)
        yield GaugeMetricFamily(
            "liqmon_accounts", "Accounts with open positions", value=engine.account_count
        )
        by_level = GaugeMetricFamily(
            "liqmon_entities_by_level", "Entities at each alert level", labels=["level"]
        )
        for level, count in engine.level_counts().items():
            by_level.add_metric([level], count)
        yield by_level


class _RuntimeCollector(Collector):
    """The runtime's counters, the inbox's statistics and the sinks' and feed's state, read at
    scrape time (nothing is counted twice: the runtime counts, this only reads)."""

    def __init__(self, service: ServiceView) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        stats = service.runtime.stats

        def counter(name: str, doc: str, labels: list[str], values: dict[Any, int]) -> Metric:
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in sorted(values.items()):
                family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
            return family

        yield counter("liqmon_ticks", "Mark ticks applied", ["source"], stats.ticks_by_source)
        yield counter("liqmon_ticks_dropped", "Ticks dropped by rule", ["reason"], stats.dropped)
        yield counter(
            "liqmon_records_rejected",
            "Input refused, by reason",
            ["source", "reason"],
            stats.rejected_by_source,
        )
        records = {k: v for k, v in stats.records.items() if k != "tick"}
        yield counter("liqmon_records", "Account and contract records applied", ["type"], records)
        alerts = {k: v for k, v in stats.events.items() if k in ALERT_KINDS}
        yield counter("liqmon_events", "Alert events emitted", ["kind"], alerts)
        feed = {k: v for k, v in stats.events.items() if k in FEED_KINDS}
        yield counter("liqmon_feed_events", "Feed health events", ["kind"], feed)
        yield CounterMetricFamily(
            "liqmon_journaled_records", "Records written to the journal", value=stats.journaled
        )
        yield CounterMetricFamily(
            "liqmon_snapshots", "State snapshots written", value=stats.snapshots
        )
        yield CounterMetricFamily(
            "liqmon_duplicates_skipped",
            "Redelivered margin records applied once",
            value=stats.duplicates,
        )
        inbox = service.inbox.stats()
        yield GaugeMetricFamily(
            "liqmon_queue_depth", "Inputs waiting for the engine", value=inbox.depth
        )
        yield GaugeMetricFamily(
            "liqmon_queue_high_water", "Most inputs ever waiting at once", value=inbox.high_water
        )
        yield CounterMetricFamily(
            "liqmon_queue_full_waits", "Producers that waited for room", value=inbox.full_waits
        )
        mqtt = service.mqtt
        backlog = mqtt.outbox.stats() if mqtt is not None else None
        yield GaugeMetricFamily(
            "liqmon_outbox_depth",
            "Messages not yet acknowledged",
            value=backlog.depth if backlog is not None else 0,
        )
        yield GaugeMetricFamily(
            "liqmon_outbox_spilled",
            "Messages held on disk only",
            value=backlog.spilled if backlog is not None else 0,
        )
        yield GaugeMetricFamily(
            "liqmon_mqtt_connected",
            "1 when connected to the broker",
            value=int(mqtt is not None and mqtt.connected),
        )
        yield from self._feed(service)

    @staticmethod
    def _feed(service: ServiceView) -> Iterator[Metric]:
        """The feed's families, with a sample for the venue when there is a feed."""
        feed_stats = service.feed_stats
        health = service.runtime.health
        venue = [feed_stats.venue] if feed_stats is not None else []
        connected = GaugeMetricFamily(
            "liqmon_feed_connected", "1 when the feed is connected", labels=["venue"]
        )
        reconnects = GaugeMetricFamily(
            "liqmon_feed_reconnects", "Reconnections of the feed since start", labels=["venue"]
        )
        skew = GaugeMetricFamily(
            "liqmon_feed_clock_skew_seconds",
            "Receive time minus exchange time of the latest mark (latency plus clock offset)",
            labels=["venue"],
        )
        stale = GaugeMetricFamily(
            "liqmon_feed_stale_symbols", "Symbols without a recent mark", labels=["venue"]
        )
        if feed_stats is not None:
            connected.add_metric(venue, int(feed_stats.state == "connected"))
            reconnects.add_metric(venue, feed_stats.reconnects)
            if feed_stats.clock_skew_ms is not None:
                skew.add_metric(venue, feed_stats.clock_skew_ms / 1000)
            if health is not None:
                stale.add_metric(venue, len(health.stale_symbols()))
        yield from (connected, reconnects, skew, stale)


class ServiceView(Protocol):
    """What the metrics read from the service."""

    @property
    def runtime(self) -> Runtime: ...

    @property
    def inbox(self) -> Inbox[Any]: ...

    @property
    def mqtt(self) -> MqttSink | None: ...

    @property
    def feed_stats(self) -> FeedStats | None: ...


class Metrics:
    """Every metric the service exports (names end in ``_total`` for counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.apply_seconds = Histogram(
            "liqmon_apply_seconds",
            "Time the runtime took for one input (engine evaluation included)",
            ["kind"],
            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 2e-2, 0.1),
            registry=r,
        )
        self.alert_path = Histogram(
            "liqmon_alert_path_seconds",
            "Where the time of an input that raised alerts went, step by step: venue (the "
            "frame's exchange time to its receipt, on two clocks), parse (frame "
            "received to parsed), wait (in the inbox), engine (the runtime), journal, sinks "
            "(encoding and the outbox), mqtt (outbox to the broker's acknowledgement)",
            ["step"],
            buckets=(
                5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3,
                1e-2, 2e-2, 5e-2, 0.1, 0.25, 1.0,
            ),
            registry=r,
        )  # fmt: skip
        self.gc_pause = Histogram(
            "liqmon_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation",
            ["generation"],
            buckets=(1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.feed_frames = Counter(
            "liqmon_feed_frames", "Frames received from the feed", ["venue"], registry=r
        )
        self.feed_rejects = Counter(
            "liqmon_feed_rejects", "Feed frames refused, by reason", ["venue", "reason"], registry=r
        )

    def watch(self, service: ServiceView) -> None:
        self.registry.register(_EngineCollector(lambda: service.runtime.engine))
        self.registry.register(_RuntimeCollector(service))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve(
    host: str,
    port: int,
    metrics: Metrics,
    readiness: Callable[[], str | None],
    *,
    started: asyncio.Event | None = None,
    bound: list[int] | None = None,
) -> None:
    """Serve until cancelled. ``readiness`` returns ``None`` when ready, else the reason."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        request = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method, path = [*request, "", ""][:2]
        path = path.split("?", 1)[0]
        if method != "GET":
            status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
        elif path == "/metrics":
            status, body = "200 OK", metrics.exposition()
            kind = "text/plain; version=0.0.4; charset=utf-8"
        elif path == "/healthz":
            status, body, kind = "200 OK", b"ok\n", "text/plain"
        elif path == "/readyz":
            reason = readiness()
            if reason is None:
                status, body, kind = "200 OK", b"ready\n", "text/plain"
            else:
                status, body = "503 Service Unavailable", f"not ready: {reason}\n".encode()
                kind = "text/plain"
        else:
            status, body, kind = "404 Not Found", b"not found\n", "text/plain"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_BYTES)
    sockets = server.sockets or ()
    if bound is not None and sockets:
        bound.append(int(sockets[0].getsockname()[1]))
    log.info("http_listening", host=host, port=bound[-1] if bound else port)
    if started is not None:
        started.set()
    async with server:
        await server.serve_forever()
