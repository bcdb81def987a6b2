"""The service's ops surface: Prometheus metrics and ``/healthz`` + ``/readyz`` over HTTP.

The endpoint binds to loopback by default (``[http] host``). ``/metrics`` serves the Prometheus
text format; ``/healthz`` answers 200 while the process runs; ``/readyz`` answers 200 once state
is restored and the configured feed and broker are connected, 503 with the reason otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.engine import Engine

log = structlog.get_logger("liqmon.http")

MAX_REQUEST_BYTES = 8_192


class _EngineCollector(Collector):
    """Book-level gauges read from the engine at scrape time (vectorised over the book)."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
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


class Metrics:
    """Every metric the service exports (names end in ``_total`` for counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ticks = Counter("liqmon_ticks", "Mark ticks applied", ["source"], registry=r)
        self.dropped = Counter(
            "liqmon_ticks_dropped", "Ticks dropped by rule", ["reason"], registry=r
        )
        self.rejected = Counter(
            "liqmon_records_rejected", "Input refused, by reason", ["source", "reason"], registry=r
        )
        self.records = Counter(
            "liqmon_records", "Account and contract records applied", ["type"], registry=r
        )
        self.events = Counter("liqmon_events", "Alert events emitted", ["kind"], registry=r)
        self.feed_events = Counter("liqmon_feed_events", "Feed health events", ["kind"], registry=r)
        self.apply_seconds = Histogram(
            "liqmon_apply_seconds",
            "Time to apply one input to the engine (evaluation included)",
            ["kind"],
            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 2e-2, 0.1),
            registry=r,
        )
        self.queue_depth = Gauge("liqmon_queue_depth", "Inputs waiting for the engine", registry=r)
        self.outbox_depth = Gauge(
            "liqmon_outbox_depth", "Messages not yet acknowledged", registry=r
        )
        self.outbox_spilled = Gauge(
            "liqmon_outbox_spilled", "Messages held on disk only", registry=r
        )
        self.mqtt_connected = Gauge(
            "liqmon_mqtt_connected", "1 when connected to the broker", registry=r
        )
        self.feed_connected = Gauge(
            "liqmon_feed_connected", "1 when the feed is connected", ["venue"], registry=r
        )
        self.feed_frames = Counter(
            "liqmon_feed_frames", "Frames received from the feed", ["venue"], registry=r
        )
        self.feed_rejects = Counter(
            "liqmon_feed_rejects", "Feed frames refused, by reason", ["venue", "reason"], registry=r
        )
        self.feed_reconnects = Gauge(
            "liqmon_feed_reconnects", "Reconnections of the feed since start", ["venue"], registry=r
        )
        self.feed_clock_skew = Gauge(
            "liqmon_feed_clock_skew_seconds",
            "Receive time minus exchange time of the latest mark (latency plus clock offset)",
            ["venue"],
            registry=r,
        )
        self.feed_stale_symbols = Gauge(
            "liqmon_feed_stale_symbols", "Symbols without a recent mark", ["venue"], registry=r
        )
        self.journaled = Counter(
            "liqmon_journaled_records", "Records written to the journal", registry=r
        )
        self.snapshots = Counter("liqmon_snapshots", "State snapshots written", registry=r)

    def watch(self, engine: Callable[[], Engine]) -> None:
        self.registry.register(_EngineCollector(engine))

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
